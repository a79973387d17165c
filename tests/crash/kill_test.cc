// Blackbox crash test: a child process runs a seeded workload on a real store and reports each
// completed operation through a pipe; the parent kills it with SIGKILL at a random moment, then
// reopens the store and judges it against the model (DESIGN.md invariants 1-4).

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "strata/fsck.h"
#include "strata/store.h"
#include "test_backend.h"
#include "test_util.h"
#include "workload.h"

namespace strata::crash {
namespace {

// A child's report of one op: index (8 bytes), what it did to a snapshot, the snapshot id.
constexpr size_t kRecordBytes = 8 + 1 + 32;

using ::strata::testing::IsOk;

constexpr uint64_t kVolumeBytes = 4 << 20;
constexpr uint64_t kBlocks = kVolumeBytes / kBlockBytes;
constexpr size_t kOps = 400;

// Runs in the child: never returns.
[[noreturn]] void RunChild(const std::string& dir, uint64_t seed, int report_fd) {
  StoreOptions options = ::strata::testing::TestStoreOptions(dir);
  options.chunk_size_bytes = 16 * 1024;
  // Snapshots commit their manifests in many small writes, so kills land between them too.
  options.manifest_piece_entries = 8;
  auto store = Store::Open(dir, options);
  if (!store.ok()) _exit(3);
  Region* region = (*store)->DefaultRegion();
  auto vol = region->ListVolumes();
  if (!vol.ok() || vol->size() != 1) _exit(4);
  Volume* volume = *region->GetVolume((*vol)[0].id);
  std::vector<std::string> snapshots;
  std::vector<std::byte> buf(32 * kBlockBytes);
  const std::vector<Op> ops = MakeWorkload(seed, kBlocks, kOps);
  for (size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    const uint64_t off = op.block * kBlockBytes, len = op.block_count * kBlockBytes;
    absl::Status s;
    std::string named;  // The snapshot the op created or deleted.
    char what = 0;      // 'P' created (maybe pending), 'C' created and completed, 'D' deleted.
    switch (op.kind) {
      case OpKind::kWrite:
      case OpKind::kWriteFua:
        FillValue(std::span(buf).first(len), op.value, op.block * kSectorsPerBlock);
        s = volume->Write(off, std::span(buf).first(len), op.kind == OpKind::kWriteFua);
        break;
      case OpKind::kTrim:
        s = volume->Trim(off, len);
        break;
      case OpKind::kFlush:
        s = volume->Flush();
        break;
      case OpKind::kSnapshot: {
        auto info = region->CreateSnapshot({.volume_id = volume->id()});
        s = info.status();
        if (s.ok()) {
          named = info->id;
          what = 'P';
          snapshots.push_back(info->id);
          // Sometimes wait for completion, sometimes race on.
          if (op.block % 2 == 0) {
            auto done = region->WaitForSnapshot(info->id, 60000);
            s = done.status();
            if (s.ok() && done->state == SnapshotState::kCompleted) what = 'C';
          }
        }
        break;
      }
      case OpKind::kDeleteSnapshot:
        if (!snapshots.empty()) {
          const size_t k = op.value % snapshots.size();
          s = region->DeleteSnapshot(snapshots[k]);
          if (s.ok()) {
            named = snapshots[k];
            what = 'D';
            snapshots.erase(snapshots.begin() + static_cast<long>(k));
          }
          if (s.code() == absl::StatusCode::kFailedPrecondition) s = absl::OkStatus();
        }
        break;
      case OpKind::kGc:
        s = region->CollectGarbage().status();
        break;
    }
    if (!s.ok()) _exit(5);
    // Report: op index, what it did to a snapshot, and that snapshot's id (fixed 32 bytes).
    char record[kRecordBytes] = {};
    const uint64_t index = i;
    std::memcpy(record, &index, 8);
    record[8] = what;
    std::memcpy(record + 9, named.data(), std::min<size_t>(named.size(), 32));
    if (write(report_fd, record, sizeof(record)) != sizeof(record)) _exit(6);
  }
  _exit(0);
}

class KillTest : public ::testing::Test {
 protected:
  std::unique_ptr<Store> Open() {
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.chunk_size_bytes = 16 * 1024;
    options.manifest_piece_entries = 8;  // Recovery drops a failed snapshot's pieces in pieces.
    auto store = Store::Open(dir_.path(), options);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? std::move(*store) : nullptr;
  }
  ::strata::testing::TempDir dir_;
};

TEST_F(KillTest, SigkillAtRandomPointsLosesNothingAcknowledged) {
  const uint64_t seed = ::strata::testing::TestSeed();
  std::mt19937_64 rng(seed);
  std::string volume_id;
  {
    auto store = Open();
    ASSERT_NE(store, nullptr);
    auto vol = store->DefaultRegion()->CreateVolume({.size_bytes = kVolumeBytes});
    ASSERT_THAT(vol, IsOk());
    volume_id = vol->id;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int rounds = 0, killed = 0;
  for (; rounds < 100 && std::chrono::steady_clock::now() < deadline; ++rounds) {
    SCOPED_TRACE(::testing::Message() << "round " << rounds << " seed " << seed);
    // The starting state is what the previous round left (durable after its recovery).
    Model model(kBlocks);
    {
      auto store = Open();
      ASSERT_NE(store, nullptr);
      std::vector<std::byte> start(kVolumeBytes);
      ASSERT_THAT((*store->DefaultRegion()->GetVolume(volume_id))->Read(0, start), IsOk());
      for (uint64_t sector = 0; sector < kVolumeBytes / kSector; ++sector) {
        model.SetDurable(sector,
                         SectorValue(std::span(start).subspan(sector * kSector, kSector), sector));
      }
    }
    const uint64_t workload_seed = rng();
    const std::vector<Op> ops = MakeWorkload(workload_seed, kBlocks, kOps);
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      close(fds[0]);
      RunChild(dir_.path(), workload_seed, fds[1]);
    }
    close(fds[1]);
    const auto kill_after = std::chrono::microseconds(20000 + rng() % 400000);
    std::thread killer([&] {
      std::this_thread::sleep_for(kill_after);
      kill(child, SIGKILL);
    });
    // Read the acknowledgements until the pipe closes.
    struct Acked {
      std::vector<uint64_t> image;
      bool completed = false;  // Its creator waited and saw it completed.
    };
    std::map<std::string, Acked> snapshots;
    std::set<std::string> deleted;
    size_t acknowledged = 0;
    char record[kRecordBytes];
    while (read(fds[0], record, sizeof(record)) == static_cast<ssize_t>(sizeof(record))) {
      uint64_t index = 0;
      std::memcpy(&index, record, 8);
      ASSERT_EQ(index, acknowledged);
      model.Apply(ops[index]);
      const std::string named(record + 9, strnlen(record + 9, 32));
      if (record[8] == 'P' || record[8] == 'C') {
        snapshots[named] = {model.current(), record[8] == 'C'};
      } else if (record[8] == 'D') {
        snapshots.erase(named);
        deleted.insert(named);
      }
      ++acknowledged;
    }
    close(fds[0]);
    killer.join();
    int wstatus = 0;
    ASSERT_EQ(waitpid(child, &wstatus, 0), child);
    ASSERT_TRUE(WIFSIGNALED(wstatus) || (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0))
        << "child failed with exit " << WEXITSTATUS(wstatus);
    killed += WIFSIGNALED(wstatus) ? 1 : 0;
    if (acknowledged < ops.size()) model.ApplyMaybe(ops[acknowledged]);

    auto store = Open();
    ASSERT_NE(store, nullptr);
    Region* region = store->DefaultRegion();
    std::vector<std::byte> after(kVolumeBytes);
    ASSERT_THAT((*region->GetVolume(volume_id))->Read(0, after), IsOk());
    for (uint64_t sector = 0; sector < kVolumeBytes / kSector; ++sector) {
      const uint64_t v = SectorValue(std::span(after).subspan(sector * kSector, kSector), sector);
      ASSERT_TRUE(model.Allowed(sector, v))
          << "sector " << sector << " holds " << v << ", durable " << model.durable(sector);
    }
    // A delete in flight at the kill may or may not have happened.
    const bool delete_in_flight =
        acknowledged < ops.size() && ops[acknowledged].kind == OpKind::kDeleteSnapshot;
    for (const std::string& gone : deleted) {
      auto info = region->DescribeSnapshot(gone);
      EXPECT_TRUE(absl::IsNotFound(info.status())) << "snapshot " << gone << " was deleted";
    }
    for (auto& [snap, acked] : snapshots) {
      const std::vector<uint64_t>& image = acked.image;
      auto info = region->DescribeSnapshot(snap);
      if (!info.ok()) {
        ASSERT_TRUE(delete_in_flight && absl::IsNotFound(info.status()))
            << "snapshot " << snap << " vanished: " << info.status();
        continue;
      }
      if (info->state == SnapshotState::kPending) {
        info = region->WaitForSnapshot(snap, 60000);  // Recovery resumes or fails it.
        ASSERT_THAT(info, IsOk());
      }
      if (info->state != SnapshotState::kCompleted) {
        // Only one pending at the kill may have failed.
        ASSERT_FALSE(acked.completed)
            << "snapshot " << snap << " was acknowledged completed and is now failed";
        continue;
      }
      auto reader = region->OpenSnapshot(snap);
      ASSERT_THAT(reader, IsOk());
      std::vector<std::byte> got(kVolumeBytes);
      ASSERT_THAT((*reader)->Read(0, got), IsOk());
      for (uint64_t sector = 0; sector < kVolumeBytes / kSector; ++sector) {
        ASSERT_EQ(SectorValue(std::span(got).subspan(sector * kSector, kSector), sector),
                  image[sector])
            << "snapshot " << snap << " sector " << sector;
      }
    }
    // Invariant 3: the first snapshot after the kill equals the volume.
    auto s = region->CreateSnapshot({.volume_id = volume_id});
    ASSERT_THAT(s, IsOk());
    auto done = region->WaitForSnapshot(s->id, 60000);
    ASSERT_EQ(done->state, SnapshotState::kCompleted);
    std::vector<std::byte> snap_bytes(kVolumeBytes);
    ASSERT_THAT((*region->OpenSnapshot(s->id))->Read(0, snap_bytes), IsOk());
    ASSERT_EQ(snap_bytes, after);
    // Chunks stored by an ingest the kill cut short are garbage (dead records in a segment, or
    // objects with no index entry on RADOS): collected, nothing may be left over.
    ASSERT_THAT(region->CollectGarbage(), IsOk());
    store.reset();
    // Invariant 4: refcounts exact, every checksum good, no leaked chunk.
    auto report = ::strata::testing::CheckTestStore(dir_.path());
    ASSERT_THAT(report, IsOk());
    for (const std::string& f : report->findings) ADD_FAILURE() << f;
  }
  std::printf("%d rounds, %d killed mid-workload\n", rounds, killed);
  ::strata::testing::RecordCrashRounds("sigkill", rounds);
  EXPECT_GT(killed, 0);
}

}  // namespace
}  // namespace strata::crash
