// IoRing: liburing, with a pread/pwrite stand-in where the kernel offers no io_uring.
//
// Operations wait in the ring's own list until the loop submits or waits; then a burst goes to
// the kernel in one io_uring_enter. Two kinds run as plain system calls instead, because
// io_uring costs more for them on these machines (docs/benchmarks.md):
// - a lone operation (nothing else queued or in the kernel): one pread beats one enter plus a
//   completion;
// - a small write: buffered writes that the file system cannot do without blocking (ext4) go to
//   io_uring's worker threads, one hand-off each, serialized per file.
// Calls (QueueCall) run on a few helper threads of the ring's own; their completions join the
// others when the owner waits. Spare calls (QueueSpareCall) run there too, but only while the
// process has an idle processor by the count of busy rings below.

#include "strata/io_ring.h"

#include <liburing.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "io/errno.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata {
namespace {

// Writes up to this size run at once with pwrite.
constexpr size_t kInlineWriteBytes = 64 * 1024;

struct Pending {
  bool write = false;
  int fd = -1;
  std::byte* data = nullptr;
  size_t length = 0;
  uint64_t offset = 0;
  IoRing::Op* op = nullptr;
};

// pread/pwrite until done, the end of the file or an error: bytes moved, or -errno.
int Positional(const Pending& p) {
  size_t n = 0;
  while (n < p.length) {
    const ssize_t r =
        p.write ? ::pwrite(p.fd, p.data + n, p.length - n, static_cast<off_t>(p.offset + n))
                : ::pread(p.fd, p.data + n, p.length - n, static_cast<off_t>(p.offset + n));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -errno;
    if (r == 0) break;
    n += static_cast<size_t>(r);
  }
  return static_cast<int>(n);
}

int64_t MonotonicNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// Which rings of the process have work: each ring holds a seat with the last time its owner
// waited for or reaped operations in flight (or asked for a spare call). Rings beyond kSeats
// count as always busy.
class BusyRings {
 public:
  static constexpr int kSeats = 256;

  // A seat, or -1 when none is free.
  static int Claim() {
    for (int i = 0; i < kSeats; ++i) {
      if (!taken_[i].exchange(true, std::memory_order_acq_rel)) {
        last_work_ns_[i].store(0, std::memory_order_relaxed);
        int seen = seats_seen_.load(std::memory_order_relaxed);
        while (seen <= i && !seats_seen_.compare_exchange_weak(seen, i + 1)) {
        }
        return i;
      }
    }
    unseated_.fetch_add(1, std::memory_order_relaxed);
    return -1;
  }
  static void Release(int seat) {
    if (seat < 0) {
      unseated_.fetch_sub(1, std::memory_order_relaxed);
    } else {
      taken_[seat].store(false, std::memory_order_release);
    }
  }
  static void NoteWork(int seat, int64_t now_ns) {
    if (seat >= 0) last_work_ns_[seat].store(now_ns, std::memory_order_relaxed);
  }
  // True while fewer rings have had work in the last kBusyWindowNs than the process may run
  // threads at once.
  static bool ProcessorIdle(int64_t now_ns) {
    static const int processors = [] {
      cpu_set_t set;
      CPU_ZERO(&set);
      const int n = ::sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;
      return n > 0 ? n : static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
    }();
    int busy = unseated_.load(std::memory_order_relaxed);
    const int seen = seats_seen_.load(std::memory_order_relaxed);
    for (int i = 0; i < seen && busy < processors; ++i) {
      if (taken_[i].load(std::memory_order_acquire) &&
          now_ns - last_work_ns_[i].load(std::memory_order_relaxed) < IoRing::kBusyWindowNs) {
        ++busy;
      }
    }
    return busy < processors;
  }

 private:
  static inline std::atomic<bool> taken_[kSeats];
  static inline std::atomic<int64_t> last_work_ns_[kSeats];
  static inline std::atomic<int> seats_seen_{0};  // Seats below this have been claimed.
  static inline std::atomic<int> unseated_{0};
};

// Helper threads for QueueCall are started on first use.
constexpr int kCallThreads = 4;

// A call's completion in finished_: runs `done` with the call's status, then deletes itself.
class CallOp final : public IoRing::Op {
 public:
  CallOp(absl::AnyInvocable<absl::Status() &&> call, absl::AnyInvocable<void(absl::Status) &&> done)
      : call_(std::move(call)), done_(std::move(done)) {}
  void Run() { status_ = std::move(call_)(); }
  void Finish(int) override {
    std::move(done_)(std::move(status_));
    delete this;
  }

 private:
  absl::AnyInvocable<absl::Status() &&> call_;
  absl::AnyInvocable<void(absl::Status) &&> done_;
  absl::Status status_;
};

class Ring final : public IoRing {
 public:
  Ring(unsigned depth, bool use_io_uring)
      : depth_(depth), use_io_uring_(use_io_uring), seat_(BusyRings::Claim()) {
    pending_.reserve(depth);
    finished_.reserve(depth);
    running_.reserve(depth);
  }
  ~Ring() override {
    // Operations still in flight would write into memory their owners may free: wait first.
    (void)Wait(0);
    if (use_io_uring_) io_uring_queue_exit(&ring_);
    {
      absl::MutexLock lock(&calls_mu_);
      stopping_ = true;
    }
    for (std::thread& t : call_threads_) t.join();
    BusyRings::Release(seat_);
  }

  // False when io_uring cannot be set up here.
  bool Init() {
    if (!use_io_uring_) return true;
    io_uring_params params{};
    // One thread submits and reaps; completions are delivered when it waits, not by
    // interrupting it (kernel 6.1+). Older kernels take the plain setup.
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int r = io_uring_queue_init_params(depth_, &ring_, &params);
    if (r == -EINVAL) {
      params = {};
      r = io_uring_queue_init_params(depth_, &ring_, &params);
    }
    use_io_uring_ = r == 0;
    return use_io_uring_;
  }

  bool QueueRead(int fd, std::span<std::byte> out, uint64_t offset, Op* op) override {
    return Queue({false, fd, out.data(), out.size(), offset, op});
  }

  bool QueueWrite(int fd, std::span<const std::byte> data, uint64_t offset, Op* op) override {
    return Queue({true, fd, const_cast<std::byte*>(data.data()), data.size(), offset, op});
  }

  bool QueueCall(absl::AnyInvocable<absl::Status() &&> call,
                 absl::AnyInvocable<void(absl::Status) &&> done) override {
    if (in_flight() >= depth_) return false;
    if (call_threads_.empty()) {
      for (int i = 0; i < kCallThreads; ++i) call_threads_.emplace_back([this] { CallLoop(); });
    }
    absl::MutexLock lock(&calls_mu_);
    calls_.push_back(new CallOp(std::move(call), std::move(done)));
    ++calls_out_;
    return true;
  }

  bool QueueSpareCall(absl::AnyInvocable<absl::Status() &&> call,
                      absl::AnyInvocable<void(absl::Status) &&> done) override {
    // The owner has work now whether or not the call is queued (refused, it does it itself).
    const int64_t now_ns = MonotonicNs();
    BusyRings::NoteWork(seat_, now_ns);
    return BusyRings::ProcessorIdle(now_ns) && QueueCall(std::move(call), std::move(done));
  }

  bool QueueAsync(absl::AnyInvocable<void(Complete) &&> start, Op* op) override {
    if (in_flight() >= depth_) return false;
    ++calls_out_;
    std::move(start)([this, op](int result) {
      absl::MutexLock lock(&calls_mu_);
      completed_.emplace_back(op, result);
    });
    return true;
  }

  absl::Status Wait(unsigned remaining) override {
    if (in_flight() > remaining) NoteBusy();
    while (in_flight() > remaining) {
      CollectCalls(/*block=*/false);
      if (!use_io_uring_ || (pending_.size() == 1 && in_kernel_ == 0)) {
        RunPendingNow();
      } else {
        PrepPending();
        // Waits for a completion only when nothing has finished yet.
        if (in_kernel_ > 0) STRATA_RETURN_IF_ERROR(Enter(finished_.empty() ? 1 : 0));
        Reap();
      }
      if (finished_.empty() && calls_out_ > 0) CollectCalls(/*block=*/true);
      RunFinished();
    }
    return absl::OkStatus();
  }

  unsigned ReapCompleted() override {
    if (in_flight() > 0) NoteBusy();
    CollectCalls(/*block=*/false);
    if (in_kernel_ > 0) {
      // With DEFER_TASKRUN, completions are posted only when the owner enters the kernel.
      (void)io_uring_get_events(&ring_);
      Reap();
    }
    RunFinished();
    return in_kernel_ + calls_out_;
  }

  unsigned in_flight() const override {
    return static_cast<unsigned>(pending_.size() + finished_.size()) + in_kernel_ + calls_out_;
  }
  bool uses_io_uring() const override { return use_io_uring_; }

 private:
  bool Queue(const Pending& p) {
    if (in_flight() >= depth_) return false;
    if (p.write && p.length <= kInlineWriteBytes) {
      finished_.emplace_back(p.op, Positional(p));
    } else {
      pending_.push_back(p);
    }
    return true;
  }

  // The owner waits for or reaps its operations: once per burst, not per operation.
  void NoteBusy() { BusyRings::NoteWork(seat_, MonotonicNs()); }

  void RunPendingNow() {
    for (const Pending& p : pending_) finished_.emplace_back(p.op, Positional(p));
    pending_.clear();
  }

  void PrepPending() {
    for (const Pending& p : pending_) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);  // Never null: depth_ bounds the queue.
      if (p.write) {
        io_uring_prep_write(sqe, p.fd, p.data, static_cast<unsigned>(p.length), p.offset);
      } else {
        io_uring_prep_read(sqe, p.fd, p.data, static_cast<unsigned>(p.length), p.offset);
      }
      io_uring_sqe_set_data(sqe, p.op);
      ++in_kernel_;
    }
    pending_.clear();
  }

  // Submits what is prepared; with `wait`, also waits for a completion. An interrupted or
  // busy enter is not an error: the caller's loop enters again.
  absl::Status Enter(unsigned wait) {
    const int r = wait > 0 ? io_uring_submit_and_wait(&ring_, wait) : io_uring_submit(&ring_);
    if (r >= 0 || r == -EINTR || r == -EAGAIN || r == -EBUSY) return absl::OkStatus();
    return io::ErrnoToStatus(-r, "io_uring_enter");
  }

  // Moves the completions that have arrived to finished_.
  void Reap() {
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0;
    unsigned n = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      finished_.emplace_back(static_cast<Op*>(io_uring_cqe_get_data(cqe)), cqe->res);
      ++n;
    }
    io_uring_cq_advance(&ring_, n);
    in_kernel_ -= n;
  }

  // Runs Finish of what has finished; a Finish may queue more (into pending_ or finished_).
  void RunFinished() {
    running_.swap(finished_);
    for (const auto& [op, result] : running_) op->Finish(result);
    running_.clear();
  }

  // A helper thread: runs queued calls until the ring is destroyed.
  void CallLoop() {
    for (;;) {
      CallOp* op = nullptr;
      {
        absl::MutexLock lock(&calls_mu_);
        calls_mu_.Await(absl::Condition(
            +[](Ring* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->calls_mu_) {
              return r->stopping_ || !r->calls_.empty();
            },
            this));
        if (calls_.empty()) return;  // Stopping, and nothing is left.
        op = calls_.front();
        calls_.pop_front();
      }
      op->Run();
      absl::MutexLock lock(&calls_mu_);
      called_.push_back(op);
    }
  }

  // Moves finished calls to finished_; with `block`, first waits for at least one.
  void CollectCalls(bool block) {
    if (calls_out_ == 0) return;
    absl::MutexLock lock(&calls_mu_);
    if (block) {
      calls_mu_.Await(absl::Condition(
          +[](Ring* r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(r->calls_mu_) {
            return !r->called_.empty() || !r->completed_.empty();
          },
          this));
    }
    for (CallOp* op : called_) finished_.emplace_back(op, 0);
    finished_.insert(finished_.end(), completed_.begin(), completed_.end());
    calls_out_ -= static_cast<unsigned>(called_.size() + completed_.size());
    called_.clear();
    completed_.clear();
  }

  const unsigned depth_;
  bool use_io_uring_;
  io_uring ring_{};
  std::vector<Pending> pending_;               // Queued, not given to the kernel yet.
  std::vector<std::pair<Op*, int>> finished_;  // Done; Finish not run yet.
  std::vector<std::pair<Op*, int>> running_;   // Whose Finish is running.
  unsigned in_kernel_ = 0;                     // Submitted (or prepared), not reaped.
  unsigned calls_out_ = 0;                     // Queued calls not moved to finished_ yet.
  std::vector<std::thread> call_threads_;
  const int seat_;  // In BusyRings.

  absl::Mutex calls_mu_;
  std::deque<CallOp*> calls_ ABSL_GUARDED_BY(calls_mu_);    // Queued calls, not started.
  std::vector<CallOp*> called_ ABSL_GUARDED_BY(calls_mu_);  // Run; not collected yet.
  // Asynchronous work (QueueAsync) that has completed; not collected yet.
  std::vector<std::pair<Op*, int>> completed_ ABSL_GUARDED_BY(calls_mu_);
  bool stopping_ ABSL_GUARDED_BY(calls_mu_) = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<IoRing>> IoRing::Create(unsigned depth) {
  if (depth == 0 || depth > 4096) {
    return absl::InvalidArgumentError("an IoRing holds 1 to 4096 operations");
  }
  depth = std::bit_ceil(depth);
  const bool wanted = std::getenv("STRATA_NO_IO_URING") == nullptr;
  auto ring = std::make_unique<Ring>(depth, wanted);
  if (!ring->Init() && wanted) {
    static std::once_flag logged;
    std::call_once(logged, [] {
      STRATA_LOG(kWarning, "io_uring is not available here: file I/O runs as pread/pwrite");
    });
  }
  return ring;
}

}  // namespace strata
