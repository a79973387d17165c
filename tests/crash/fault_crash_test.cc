// In-process crash tests over FaultInjectionEnv: a seeded workload runs, the "machine" loses
// power (everything unsynced dropped, or torn), the store reopens, and the model judges it:
// flushed and FUA data survive (invariant 1), completed snapshots are exact (2), the first
// snapshot after the crash misses no change (3), refcounts stay exact (4, via fsck).

#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <set>
#include <thread>
#include <utility>

#include "strata/fault_injection_env.h"
#include "strata/fsck.h"
#include "strata/store.h"
#include "test_backend.h"
#include "test_util.h"
#include "workload.h"

namespace strata::crash {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::StatusIs;

constexpr uint64_t kVolumeBytes = 2 << 20;
constexpr uint64_t kBlocks = kVolumeBytes / kBlockBytes;

// Forwards to another Env; runs a hook (once) just before the next write to a volume head reaches
// the file, to put another thread's work exactly there.
class HeadWriteHookEnv final : public Env {
 public:
  explicit HeadWriteHookEnv(Env* base) : base_(base) {}
  void BeforeNextHeadWrite(std::function<void()> hook) { hook_ = std::move(hook); }

  absl::StatusOr<std::unique_ptr<File>> OpenFile(const std::string& path, bool create) override {
    auto file = base_->OpenFile(path, create);
    if (!file.ok() || !path.ends_with(".head")) return file;
    return std::unique_ptr<File>(new HookedFile(std::move(*file), *this));
  }
  absl::Status DeleteFile(const std::string& path) override { return base_->DeleteFile(path); }
  absl::Status RenameFile(const std::string& from, const std::string& to) override {
    return base_->RenameFile(from, to);
  }
  bool FileExists(const std::string& path) override { return base_->FileExists(path); }
  absl::Status CreateDirs(const std::string& path) override { return base_->CreateDirs(path); }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    return base_->ListDir(path);
  }
  absl::Status SyncDir(const std::string& path) override { return base_->SyncDir(path); }
  absl::StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path) override {
    return base_->LockFile(path);
  }
  uint64_t NowMicros() override { return base_->NowMicros(); }

 private:
  class HookedFile final : public File {
   public:
    HookedFile(std::unique_ptr<File> base, HeadWriteHookEnv& env)
        : base_(std::move(base)), env_(env) {}
    absl::Status Read(uint64_t offset, std::span<std::byte> out) override {
      return base_->Read(offset, out);
    }
    absl::Status Write(uint64_t offset, std::span<const std::byte> data) override {
      if (auto hook = std::exchange(env_.hook_, nullptr)) hook();
      return base_->Write(offset, data);
    }
    absl::Status Sync() override { return base_->Sync(); }
    absl::StatusOr<uint64_t> Size() override { return base_->Size(); }
    absl::Status Truncate(uint64_t size) override { return base_->Truncate(size); }
    absl::Status PunchHole(uint64_t offset, uint64_t length) override {
      return base_->PunchHole(offset, length);
    }

   private:
    std::unique_ptr<File> base_;
    HeadWriteHookEnv& env_;
  };

  Env* const base_;
  std::function<void()> hook_;
};

class FaultCrashTest : public ::testing::Test {
 protected:
  // `file_heads`: on the RADOS backend too, heads are files of the Env (whose faults a test
  // injects); otherwise the backend's default (RADOS heads: objects, written past the Env).
  void Open(bool file_heads = false) {
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.env = &hooked_env_;
    options.volume_heads_in_rados = !file_heads;
    options.background_work = false;
    options.chunk_size_bytes = 16 * 1024;
    options.manifest_piece_entries = 8;  // Snapshot commits span several catalog writes.
    auto store = Store::Open(dir_.path(), options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    region_ = store_->DefaultRegion();
  }
  // Power loss: unsynced data goes (or tears); the dying process can write nothing more.
  void CrashAndReopen(bool tear, uint64_t seed) {
    ASSERT_THAT(env_.Crash(tear, seed), IsOk());
    env_.FailAfter(0, absl::DataLossError("injected: the machine is off"));
    store_.reset();
    env_.ClearFaults();
    Open();
  }
  void CheckFsck() {
    // Chunks stored by an ingest the crash cut short are garbage (dead records in a segment, or
    // objects with no index entry on RADOS): collected, nothing may be left over.
    ASSERT_THAT(region_->CollectGarbage(), IsOk());
    store_.reset();
    auto report = CheckStore(dir_.path(), &env_, ::strata::testing::TestCeph(dir_.path()));
    ASSERT_THAT(report, IsOk());
    for (const std::string& f : report->findings) ADD_FAILURE() << f;
    Open();
  }
  std::vector<std::byte> ReadVolume(const std::string& id) {
    std::vector<std::byte> out(kVolumeBytes);
    EXPECT_THAT((*region_->GetVolume(id))->Read(0, out), IsOk());
    return out;
  }
  std::vector<std::byte> ReadSnapshot(const std::string& id) {
    std::vector<std::byte> out(kVolumeBytes);
    auto snap = region_->OpenSnapshot(id);
    EXPECT_THAT(snap, IsOk());
    if (snap.ok()) {
      EXPECT_THAT((*snap)->Read(0, out), IsOk());
    }
    return out;
  }

  ::strata::testing::TempDir dir_;
  std::unique_ptr<Env> mem_ = NewMemEnv();
  FaultInjectionEnv env_{mem_.get()};
  HeadWriteHookEnv hooked_env_{&env_};
  std::unique_ptr<Store> store_;
  Region* region_ = nullptr;
};

TEST_F(FaultCrashTest, SeededWorkloadsSurvivePowerLoss) {
  const uint64_t seed = ::strata::testing::TestSeed();
  std::mt19937_64 rng(seed);
  Open();
  auto vol = region_->CreateVolume({.size_bytes = kVolumeBytes});
  ASSERT_THAT(vol, IsOk());
  const std::string id = vol->id;
  // 500 rounds, or 300 s if those take longer (about 290 s on these machines under the whole
  // ctest load, the catalog now under the power loss too): with the enumerated faults
  // (fault_enumeration_test, about 900) and the other crash suites a run passes 1,000 counted
  // crashes (tests/crash/crash_count.sh) whatever the machine's speed. STRATA_POWER_LOSS_SECONDS
  // bounds the time instead (the RADOS suite, whose rounds are slow, and the ASan pass).
  const char* seconds_env = std::getenv("STRATA_POWER_LOSS_SECONDS");
  const int seconds = seconds_env != nullptr ? std::atoi(seconds_env) : 300;
  const int max_rounds = seconds_env != nullptr ? 100000 : 500;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  int rounds = 0;
  for (; rounds < max_rounds && std::chrono::steady_clock::now() < deadline; ++rounds) {
    SCOPED_TRACE(::testing::Message() << "round " << rounds << " seed " << seed);
    const std::vector<Op> ops = MakeWorkload(rng(), kBlocks, 120);
    Model model(kBlocks);
    // The state at the start of the round is durable: it was reopened after a crash.
    const std::vector<std::byte> start = ReadVolume(id);
    for (uint64_t sector = 0; sector < kVolumeBytes / kSector; ++sector) {
      model.SetDurable(sector,
                       SectorValue(std::span(start).subspan(sector * kSector, kSector), sector));
    }
    std::vector<std::pair<std::string, std::vector<uint64_t>>> snapshots;
    Volume* volume = *region_->GetVolume(id);
    std::vector<std::byte> buf(32 * kBlockBytes);
    const size_t crash_at = rng() % ops.size();
    for (size_t i = 0; i < crash_at; ++i) {
      const Op& op = ops[i];
      const uint64_t off = op.block * kBlockBytes, len = op.block_count * kBlockBytes;
      switch (op.kind) {
        case OpKind::kWrite:
        case OpKind::kWriteFua:
          FillValue(std::span(buf).first(len), op.value, op.block * 8);
          ASSERT_THAT(volume->Write(off, std::span(buf).first(len), op.kind == OpKind::kWriteFua),
                      IsOk());
          break;
        case OpKind::kTrim:
          ASSERT_THAT(volume->Trim(off, len), IsOk());
          break;
        case OpKind::kFlush:
          ASSERT_THAT(volume->Flush(), IsOk());
          break;
        case OpKind::kSnapshot: {
          auto s = region_->CreateSnapshot({.volume_id = id});
          ASSERT_THAT(s, IsOk());
          // Keep some snapshots pending across the crash.
          if (rng() % 3 != 0) {
            ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
          }
          snapshots.push_back({s->id, model.current()});
          break;
        }
        case OpKind::kDeleteSnapshot:
          if (!snapshots.empty()) {
            const size_t k = op.value % snapshots.size();
            const absl::Status s = region_->DeleteSnapshot(snapshots[k].first);
            if (s.ok()) snapshots.erase(snapshots.begin() + static_cast<long>(k));
          }
          break;
        case OpKind::kGc:
          ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
          ASSERT_THAT(region_->CollectGarbage(), IsOk());
          break;
      }
      model.Apply(op);
    }
    // Snapshots that completed before the power loss must still be completed after it.
    std::set<std::string> completed_before;
    for (const auto& [snap, image] : snapshots) {
      auto info = region_->DescribeSnapshot(snap);
      ASSERT_THAT(info, IsOk());
      if (info->state == SnapshotState::kCompleted) completed_before.insert(snap);
    }
    CrashAndReopen(rng() % 2 == 0, rng());
    // Invariant 1: every sector holds its durable value or a later write.
    const std::vector<std::byte> after = ReadVolume(id);
    for (uint64_t sector = 0; sector < kVolumeBytes / kSector; ++sector) {
      const uint64_t v = SectorValue(std::span(after).subspan(sector * kSector, kSector), sector);
      ASSERT_TRUE(model.Allowed(sector, v))
          << "sector " << sector << " holds value " << v << ", durable " << model.durable(sector);
    }
    // Invariant 2: completed snapshots hold exactly the image at their creation.
    for (const auto& [snap, image] : snapshots) {
      auto info = region_->DescribeSnapshot(snap);
      ASSERT_THAT(info, IsOk());
      if (info->state != SnapshotState::kCompleted) {
        // Only a snapshot pending at the power loss may have failed.
        ASSERT_FALSE(completed_before.contains(snap))
            << "snapshot " << snap << " was completed before the crash and is now "
            << static_cast<int>(info->state);
        EXPECT_EQ(info->state, SnapshotState::kError);
        continue;
      }
      const std::vector<std::byte> got = ReadSnapshot(snap);
      for (uint64_t sector = 0; sector < kVolumeBytes / kSector; ++sector) {
        ASSERT_EQ(SectorValue(std::span(got).subspan(sector * kSector, kSector), sector),
                  image[sector])
            << "snapshot " << snap << " sector " << sector;
      }
    }
    // Invariant 3: the first snapshot after the crash equals the volume, so nothing was missed.
    auto s = region_->CreateSnapshot({.volume_id = id});
    ASSERT_THAT(s, IsOk());
    ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
    ASSERT_EQ(ReadSnapshot(s->id), after);
    if (rounds % 4 == 3) CheckFsck();
  }
  std::printf("%d crash rounds\n", rounds);
  ::strata::testing::RecordCrashRounds("power-loss", rounds);
  CheckFsck();
}

// A FLUSH that runs while a write is on its way to the head (from another connection) need not
// cover it, but a FLUSH after the write was answered must, even though the racing one synced the
// head in between.
TEST_F(FaultCrashTest, AFlushRacingAWriteLeavesItForTheNextFlush) {
  Open();
  auto vol = region_->CreateVolume({.size_bytes = kVolumeBytes});
  ASSERT_THAT(vol, IsOk());
  Volume* volume = *region_->GetVolume(vol->id);
  std::vector<std::byte> data(64 * 1024);
  FillValue(data, 3, 0);
  ASSERT_THAT(volume->Write(0, data, /*fua=*/true), IsOk());
  FillValue(data, 4, 0);
  hooked_env_.BeforeNextHeadWrite([&] {
    std::thread racing([&] { EXPECT_THAT(volume->Flush(), IsOk()); });
    racing.join();
  });
  ASSERT_THAT(volume->Write(0, data), IsOk());  // Answered: a FLUSH from now on covers it.
  ASSERT_THAT(volume->Flush(), IsOk());
  CrashAndReopen(/*tear=*/false, 0);
  std::vector<std::byte> back(data.size());
  ASSERT_THAT((*region_->GetVolume(vol->id))->Read(0, back), IsOk());
  EXPECT_EQ(back, data);
}

TEST_F(FaultCrashTest, IoErrorsFailCleanlyAndChangeNothingDurable) {
  Open(/*file_heads=*/true);
  auto vol = region_->CreateVolume({.size_bytes = kVolumeBytes});
  ASSERT_THAT(vol, IsOk());
  Volume* volume = *region_->GetVolume(vol->id);
  std::vector<std::byte> data(64 * 1024);
  FillValue(data, 7, 0);
  ASSERT_THAT(volume->Write(0, data, /*fua=*/true), IsOk());
  // Each round writes a new value and flushes with the n-th Env call failing: every error is
  // the injected one. Once the faults are gone a FLUSH covers every write that was answered,
  // through a power loss: each sector then holds the last answered write's value (or that of a
  // failed write made after it, which may or may not have landed), never an older one. Unless
  // a fault hit an fsync (or the catalog's log): then no FLUSH succeeds until the store reopens,
  // since the kernel dropped the pages it could not write (tests/crash/fault_enumeration_test.cc
  // covers that case call by call).
  std::set<uint64_t> allowed = {7};
  int failed = 0;
  for (int n = 0; n < 6; ++n) {
    env_.FailAfter(n, absl::DataLossError("injected EIO"));
    std::vector<std::byte> other(64 * 1024);
    FillValue(other, 8 + n, 0);
    const absl::Status write = volume->Write(0, other);
    const absl::Status flush = write.ok() ? volume->Flush() : write;
    env_.ClearFaults();
    if (write.ok()) {
      allowed = {8 + static_cast<uint64_t>(n)};
    } else {
      EXPECT_THAT(write, StatusIs(absl::StatusCode::kDataLoss));
      allowed.insert(8 + n);
    }
    if (!flush.ok()) {
      EXPECT_THAT(flush, StatusIs(absl::StatusCode::kDataLoss));
      ++failed;
    }
  }
  EXPECT_GT(failed, 0) << "no injected fault reached a write or a flush";
  if (const absl::Status flush = volume->Flush(); !flush.ok()) {
    EXPECT_THAT(flush, StatusIs(absl::StatusCode::kDataLoss));
    for (int n = 0; n < 6; ++n) allowed.insert(8 + n);  // Answered, never made durable.
    allowed.insert(7);
  }
  CrashAndReopen(/*tear=*/false, 0);
  volume = *region_->GetVolume(vol->id);
  std::vector<std::byte> back(64 * 1024);
  ASSERT_THAT(volume->Read(0, back), IsOk());
  for (uint64_t sector = 0; sector < back.size() / kSector; ++sector) {
    const uint64_t v = SectorValue(std::span(back).subspan(sector * kSector, kSector), sector);
    EXPECT_TRUE(allowed.contains(v)) << "sector " << sector << " holds " << v;
  }
  // A snapshot whose ingest hits an I/O error goes to the error state with the reason (a
  // transient error: the catalog can still record it).
  auto snap = region_->CreateSnapshot({.volume_id = vol->id});
  ASSERT_THAT(snap, IsOk());
  env_.InjectAt(0, {.status = absl::DataLossError("injected EIO"), .transient = true});
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  env_.ClearFaults();
  auto info = region_->DescribeSnapshot(snap->id);
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->state, SnapshotState::kError);
  EXPECT_THAT(info->state_message, ::testing::HasSubstr("injected EIO"));
  // The next snapshot still captures everything.
  auto again = region_->CreateSnapshot({.volume_id = vol->id});
  ASSERT_THAT(again, IsOk());
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  EXPECT_EQ(region_->DescribeSnapshot(again->id)->state, SnapshotState::kCompleted);
  EXPECT_EQ(ReadSnapshot(again->id), ReadVolume(vol->id));
  CheckFsck();
}

}  // namespace
}  // namespace strata::crash
