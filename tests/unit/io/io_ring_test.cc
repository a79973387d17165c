// IoRing: operations queued together complete with their byte counts or -errno, the depth
// bounds what is in flight, a Finish may queue more, calls run together on helper threads and
// finish on the owner's, and the pread stand-in behaves alike.

#include "strata/io_ring.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "strata/env.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::Pattern;
using ::strata::testing::StatusIs;

class RecordingOp final : public IoRing::Op {
 public:
  void Finish(int result) override {
    results.push_back(result);
    if (then != nullptr) {
      auto next = std::move(then);
      next();
    }
  }
  std::vector<int> results;
  std::function<void()> then;
};

class IoRingTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (!GetParam()) setenv("STRATA_NO_IO_URING", "1", 1);
    auto ring = IoRing::Create(8);
    ASSERT_THAT(ring, IsOk());
    ring_ = std::move(*ring);
    EXPECT_EQ(ring_->uses_io_uring(), GetParam());
    auto file = Env::Default()->OpenFile(dir_.path() + "/f", true);
    ASSERT_THAT(file, IsOk());
    file_ = std::move(*file);
    fd_ = file_->native_handle();
    ASSERT_GE(fd_, 0);
  }
  void TearDown() override { unsetenv("STRATA_NO_IO_URING"); }

  ::strata::testing::TempDir dir_;
  std::unique_ptr<IoRing> ring_;
  std::unique_ptr<File> file_;
  int fd_ = -1;
};

TEST_P(IoRingTest, QueuedWritesAndReadsCompleteInOneWait) {
  std::vector<std::vector<std::byte>> data;
  std::vector<RecordingOp> ops(8);
  for (int i = 0; i < 4; ++i) {
    data.push_back(Pattern(4096, i + 1));
    ASSERT_TRUE(ring_->QueueWrite(fd_, data.back(), i * 4096, &ops[i]));
  }
  EXPECT_EQ(ring_->in_flight(), 4u);
  for (const RecordingOp& op : ops) EXPECT_TRUE(op.results.empty());  // Not before a wait.
  ASSERT_THAT(ring_->Wait(), IsOk());
  EXPECT_EQ(ring_->in_flight(), 0u);
  std::vector<std::vector<std::byte>> back(4, std::vector<std::byte>(4096));
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(ops[i].results, std::vector<int>{4096});
    ASSERT_TRUE(ring_->QueueRead(fd_, back[i], i * 4096, &ops[4 + i]));
  }
  ASSERT_THAT(ring_->Wait(), IsOk());
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(ops[4 + i].results, std::vector<int>{4096});
    EXPECT_EQ(back[i], data[i]) << i;
  }
  // The file holds them too (read without the ring).
  std::vector<std::byte> direct(4096);
  ASSERT_THAT(file_->Read(3 * 4096, direct), IsOk());
  EXPECT_EQ(direct, data[3]);
}

TEST_P(IoRingTest, ErrorsAndShortReadsAreReportedAsTheyCame) {
  std::vector<std::byte> buffer(4096);
  RecordingOp bad, past_end, short_read;
  ASSERT_TRUE(ring_->QueueRead(-1, buffer, 0, &bad));
  ASSERT_TRUE(ring_->QueueRead(fd_, buffer, 1 << 20, &past_end));
  ASSERT_THAT(file_->Write(0, std::vector<std::byte>(1000, std::byte{7})), IsOk());
  ASSERT_TRUE(ring_->QueueRead(fd_, buffer, 0, &short_read));
  ASSERT_THAT(ring_->Wait(), IsOk());
  EXPECT_EQ(bad.results, std::vector<int>{-EBADF});
  EXPECT_EQ(past_end.results, std::vector<int>{0});
  EXPECT_EQ(short_read.results, std::vector<int>{1000});
}

TEST_P(IoRingTest, DepthBoundsWhatIsInFlightAndFinishMayQueueMore) {
  std::vector<std::byte> buffer(512);
  std::vector<RecordingOp> ops(9);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(ring_->QueueWrite(fd_, buffer, i * 512, &ops[i]));
  EXPECT_FALSE(ring_->QueueWrite(fd_, buffer, 0, &ops[8]));  // Full: nothing queued.
  ops[0].then = [&] { EXPECT_TRUE(ring_->QueueRead(fd_, buffer, 0, &ops[8])); };
  ASSERT_THAT(ring_->Wait(), IsOk());
  EXPECT_EQ(ring_->in_flight(), 0u);  // Wait also ran what Finish queued.
  for (const RecordingOp& op : ops) EXPECT_EQ(op.results, std::vector<int>{512});
}

TEST_P(IoRingTest, CallsRunTogetherOnHelpersAndFinishOnTheOwnerAmongFileOperations) {
  // Four calls that each wait for all four to have started: they finish only if they run at
  // once (bounded: a call that waits in vain gives up and reports it).
  absl::Mutex mu;
  int started = 0;
  const std::thread::id owner = std::this_thread::get_id();
  std::vector<absl::Status> outcomes;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(ring_->QueueCall(
        [&, i]() -> absl::Status {
          absl::MutexLock lock(&mu);
          ++started;
          const bool all = mu.AwaitWithTimeout(absl::Condition(
                                                   +[](int* n) { return *n == 4; }, &started),
                                               absl::Seconds(10));
          if (std::this_thread::get_id() == owner) return absl::InternalError("ran on the owner");
          if (!all) return absl::DeadlineExceededError("calls did not run together");
          return i == 3 ? absl::DataLossError("the fourth fails") : absl::OkStatus();
        },
        [&](absl::Status s) {
          EXPECT_EQ(std::this_thread::get_id(), owner);
          outcomes.push_back(std::move(s));
        }));
  }
  std::vector<std::byte> buffer(512, std::byte{7});
  RecordingOp write;
  ASSERT_TRUE(ring_->QueueWrite(fd_, buffer, 0, &write));
  EXPECT_EQ(ring_->in_flight(), 5u);
  EXPECT_TRUE(outcomes.empty());  // Nothing finishes before the owner waits.
  ASSERT_THAT(ring_->Wait(), IsOk());
  EXPECT_EQ(ring_->in_flight(), 0u);
  EXPECT_EQ(write.results, std::vector<int>{512});
  ASSERT_EQ(outcomes.size(), 4u);
  int ok = 0;
  for (const absl::Status& s : outcomes) {
    ok += s.ok();
    if (!s.ok()) {
      EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
    }
  }
  EXPECT_EQ(ok, 3);
}

TEST_P(IoRingTest, ReapCompletedRunsWhatHasFinishedWithoutStartingOrWaiting) {
  absl::Mutex mu;
  bool release = false;
  bool call_done = false;
  ASSERT_TRUE(ring_->QueueCall(
      [&] {
        absl::MutexLock lock(&mu);
        mu.Await(absl::Condition(&release));
        return absl::OkStatus();
      },
      [&](absl::Status s) {
        EXPECT_THAT(s, IsOk());
        call_done = true;
      }));
  std::vector<std::byte> buffer(1 << 20, std::byte{9});  // Large: queued, not run at once.
  RecordingOp write;
  ASSERT_TRUE(ring_->QueueWrite(fd_, buffer, 0, &write));
  // The call runs on a helper; the queued write has not started and does not count.
  EXPECT_EQ(ring_->ReapCompleted(), 1u);
  EXPECT_FALSE(call_done);
  {
    absl::MutexLock lock(&mu);
    release = true;
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (ring_->ReapCompleted() > 0 && absl::Now() < deadline)
    absl::SleepFor(absl::Milliseconds(1));
  EXPECT_TRUE(call_done);
  EXPECT_TRUE(write.results.empty());  // Still queued: only Wait starts it.
  EXPECT_EQ(ring_->in_flight(), 1u);
  ASSERT_THAT(ring_->Wait(), IsOk());
  EXPECT_EQ(write.results, std::vector<int>{1 << 20});

  // Two writes started by a Wait that returns with one still running: it is reaped without
  // another Wait (with io_uring; the stand-in has finished both by then).
  std::vector<RecordingOp> writes(2);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(ring_->QueueWrite(fd_, buffer, uint64_t{1} << 20 << i, &writes[i]));
  }
  ASSERT_THAT(ring_->Wait(1), IsOk());
  const absl::Time until = absl::Now() + absl::Seconds(10);
  while (ring_->ReapCompleted() > 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(ring_->in_flight(), 0u);
  for (const RecordingOp& op : writes) EXPECT_EQ(op.results, std::vector<int>{1 << 20});
}

TEST_P(IoRingTest, SpareCallsRunOnlyWhileFewerRingsThanProcessorsHaveWork) {
  const int processors = ::strata::testing::Processors();
  std::vector<std::byte> byte(1, std::byte{1});  // A small write runs at once: work queued.
  auto spare_call_runs = [&] {
    std::atomic<bool> ran{false};
    const bool queued = ring_->QueueSpareCall(
        [&] {
          ran = true;
          return absl::OkStatus();
        },
        [](absl::Status s) { EXPECT_THAT(s, IsOk()); });
    EXPECT_THAT(ring_->Wait(), IsOk());
    EXPECT_EQ(ran.load(), queued);  // Refused: nothing ran.
    return queued;
  };
  // This ring alone has work: a processor is idle wherever the process has two.
  EXPECT_EQ(spare_call_runs(), processors > 1);

  // As many rings with work as processors (this one and the others): none is idle. A ring counts
  // as busy for kBusyWindowNs after its last work, so the others queue again right before each
  // try (a try that was preempted past the window may run; not all ten).
  std::vector<std::unique_ptr<IoRing>> others;
  for (int i = 1; i < processors; ++i) others.push_back(*IoRing::Create(8));
  std::vector<RecordingOp> ops(others.size());
  bool refused = false;
  for (int attempt = 0; attempt < 10 && !refused; ++attempt) {
    for (size_t i = 0; i < others.size(); ++i) {
      ASSERT_TRUE(others[i]->QueueWrite(fd_, byte, 4096 * i, &ops[i]));
      ASSERT_THAT(others[i]->Wait(), IsOk());
    }
    refused = !spare_call_runs();
  }
  EXPECT_TRUE(refused);

  // Once the others have had no work for longer than the window, a processor is idle again...
  absl::SleepFor(absl::Nanoseconds(3 * IoRing::kBusyWindowNs));
  EXPECT_EQ(spare_call_runs(), processors > 1);
  // ...and when they are gone.
  for (size_t i = 0; i < others.size(); ++i) {
    ASSERT_TRUE(others[i]->QueueWrite(fd_, byte, 4096 * i, &ops[i]));
    ASSERT_THAT(others[i]->Wait(), IsOk());
  }
  others.clear();
  EXPECT_EQ(spare_call_runs(), processors > 1);
}

TEST_P(IoRingTest, CallsCountTowardTheDepth) {
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(ring_->QueueCall([] { return absl::OkStatus(); }, [](absl::Status) {}));
  }
  bool ran = false;
  EXPECT_FALSE(ring_->QueueCall(  // Full: nothing queued.
      [&] {
        ran = true;
        return absl::OkStatus();
      },
      [](absl::Status) {}));
  ASSERT_THAT(ring_->Wait(), IsOk());
  EXPECT_FALSE(ran);
  EXPECT_EQ(ring_->in_flight(), 0u);
}

TEST_P(IoRingTest, AsyncWorkCompletesFromAnotherThreadAndFinishesOnTheOwner) {
  // As a librados aio read does: the work starts at once, completes on a thread of its own,
  // and its Finish runs when the owner waits, among file operations; it counts toward the depth.
  const std::thread::id owner = std::this_thread::get_id();
  std::vector<std::thread> workers;
  std::vector<RecordingOp> ops(3);
  std::vector<std::thread::id> finished_on;
  for (int i = 0; i < 3; ++i) {
    ops[i].then = [&] { finished_on.push_back(std::this_thread::get_id()); };
    ASSERT_TRUE(ring_->QueueAsync(
        [&, i](IoRing::Complete complete) {
          workers.emplace_back([i, complete = std::move(complete)]() mutable {
            absl::SleepFor(absl::Milliseconds(20 * (3 - i)));  // Completes out of order.
            std::move(complete)(i == 1 ? -EIO : 4096 * (i + 1));
          });
        },
        &ops[i]));
  }
  std::vector<std::byte> buffer(512, std::byte{7});
  RecordingOp write;
  ASSERT_TRUE(ring_->QueueWrite(fd_, buffer, 0, &write));
  EXPECT_EQ(ring_->in_flight(), 4u);
  for (int i = 0; i < 4; ++i) {  // Depth 8: four more fit, then the ring is full.
    EXPECT_TRUE(ring_->QueueAsync([](IoRing::Complete c) { std::move(c)(0); }, &write));
  }
  bool started = false;
  EXPECT_FALSE(ring_->QueueAsync(
      [&](IoRing::Complete c) {
        started = true;
        std::move(c)(0);
      },
      &write));
  EXPECT_FALSE(started);
  ASSERT_THAT(ring_->Wait(), IsOk());
  for (std::thread& t : workers) t.join();
  EXPECT_EQ(ring_->in_flight(), 0u);
  EXPECT_EQ(ops[0].results, std::vector<int>{4096});
  EXPECT_EQ(ops[1].results, std::vector<int>{-EIO});
  EXPECT_EQ(ops[2].results, std::vector<int>{12288});
  EXPECT_EQ(write.results.size(), 5u);  // The file write and the four quick ones.
  ASSERT_EQ(finished_on.size(), 3u);
  for (const std::thread::id& id : finished_on) EXPECT_EQ(id, owner);
}

TEST(IoRingCreateTest, DepthOutOfRangeIsRefused) {
  EXPECT_THAT(IoRing::Create(0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(IoRing::Create(1 << 20), StatusIs(absl::StatusCode::kInvalidArgument));
}

INSTANTIATE_TEST_SUITE_P(Rings, IoRingTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "IoUring" : "PreadStandIn"; });

}  // namespace
}  // namespace strata
