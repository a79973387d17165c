// Power loss in the middle of the store's long flows, which run on background threads: a
// cross-region copy of a snapshot (the copy service, both regions' catalogs and chunk stores)
// and the restore of an image from a bundle (CreateRestoreImageTask: builder volumes, direct
// snapshots, their ingest, a new image). Each round starts one on a store over
// FaultInjectionEnv, cuts the power at a random moment (every later Env call fails, then
// unsynced data goes, torn or not), reopens, lets the flow resume or fail, and checks: the
// source snapshot is intact, nothing the flow made is stuck pending, whatever says it completed
// holds the source's bytes exactly, and fsck is clean after GC in both regions.

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "image/bundle.h"
#include "strata/fault_injection_env.h"
#include "strata/fsck.h"
#include "strata/image.h"
#include "strata/secret.h"
#include "strata/store.h"
#include "strata/transfer.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata::crash {
namespace {

using ::strata::testing::IsOk;

constexpr char kAccount[] = "111111111111";
constexpr uint64_t kVolumeBytes = 4 << 20;

class FlowCrashTest : public ::testing::Test {
 protected:
  void Open() {
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.ceph.reset();  // The Env's power loss reaches the local backend only.
    options.env = &*env_;
    options.kms_root_key = root_key_;
    options.chunk_size_bytes = 16 * 1024;
    options.links[""] = *ParseLinkModel("bandwidth=1GB,rtt=1ms,streams=2");
    options.archive.fixed_ms = 0;  // Archivals and restores run as soon as they are asked.
    options.archive.bytes_per_second = uint64_t{1} << 40;
    options.archive.part_bytes = 256 << 10;  // Several parts: more moments to cut.
    auto store = Store::Open(dir_.path(), options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    if (store_->ListRegions().size() == 1) {
      ASSERT_THAT(store_->CreateRegion("west-1"), IsOk());
    }
    east_ = store_->DefaultRegion();
    west_ = *store_->GetRegion("west-1");
  }

  // A new store on a fresh memory Env.
  void Fresh() {
    store_.reset();
    env_.reset();
    mem_ = NewMemEnv();
    env_.emplace(mem_.get());
    Open();
  }

  // A volume's worth of random data with holes (every third 4 KiB block is zeros).
  static std::vector<std::byte> RandomData(std::mt19937_64& rng) {
    std::vector<std::byte> data(kVolumeBytes);
    for (size_t i = 0; i < data.size(); i += 8) {
      const uint64_t v = (i / 4096) % 3 == 0 ? 0 : rng();
      std::memcpy(data.data() + i, &v, 8);
    }
    return data;
  }

  // Power loss with background threads running: every Env call fails from now on, the calls
  // already past their check land, then unsynced data goes.
  void PowerLoss(bool tear, uint64_t seed) {
    env_->FailAfter(0, absl::DataLossError("injected: the machine is off"));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_THAT(env_->Crash(tear, seed), IsOk());
    store_.reset();
    env_->ClearFaults();
    Open();
  }

  std::vector<std::byte> ReadSnapshot(Region* region, const std::string& id) {
    auto snap = region->OpenSnapshot(id);
    EXPECT_THAT(snap, IsOk());
    std::vector<std::byte> out(kVolumeBytes);
    if (snap.ok()) {
      EXPECT_THAT((*snap)->Read(0, out), IsOk());
    }
    return out;
  }

  // Waits until `id` leaves pending; its final state.
  SnapshotState Settle(Region* region, const std::string& id) {
    auto info = region->WaitForSnapshot(id, 20'000);
    EXPECT_THAT(info, IsOk());
    return info.ok() ? info->state : SnapshotState::kError;
  }

  // Waits until the snapshot's tiering is no longer in progress; its tier status then.
  SnapshotTierStatus SettleTier(const std::string& id) {
    SnapshotTierStatus found;
    for (int i = 0; i < 2000; ++i) {
      auto all = east_->ListSnapshotTierStatuses();
      EXPECT_THAT(all, IsOk());
      if (!all.ok()) break;
      for (const SnapshotTierStatus& t : *all) {
        if (t.snapshot_id == id) found = t;
      }
      if (!absl::EndsWith(found.last_operation_status, "in-progress")) return found;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "the tiering of " << id << " is stuck: " << found.last_operation_status;
    return found;
  }

  void CheckFsck() {
    ASSERT_THAT(east_->CollectGarbage(), IsOk());
    ASSERT_THAT(west_->CollectGarbage(), IsOk());
    store_.reset();
    auto report = CheckStore(dir_.path(), &*env_, std::nullopt);
    ASSERT_THAT(report, IsOk());
    for (const std::string& f : report->findings) ADD_FAILURE() << f;
  }

  ::strata::testing::TempDir dir_;
  ::strata::testing::TempDir bucket_;  // The bundle's bucket: outside the store's Env.
  SecretBytes root_key_ = RandomSecret(32);
  std::unique_ptr<Env> mem_;
  std::optional<FaultInjectionEnv> env_;
  std::unique_ptr<Store> store_;
  Region* east_ = nullptr;
  Region* west_ = nullptr;
};

TEST_F(FlowCrashTest, CopiesAndRestoresCutByPowerLossLoseNothingAndLeakNothing) {
  const uint64_t seed = ::strata::testing::TestSeed();
  std::mt19937_64 rng(seed);
  int rounds = 0;
  for (int round = 0; round < 40 && !HasFailure(); ++round, ++rounds) {
    const bool copy = round % 2 == 0;
    SCOPED_TRACE(::testing::Message()
                 << "round " << round << (copy ? " (copy)" : " (restore)") << " seed " << seed);
    Fresh();
    // The source: a completed snapshot of data, and an image on it.
    auto vol = east_->CreateVolume({.size_bytes = kVolumeBytes, .owner = kAccount});
    ASSERT_THAT(vol, IsOk());
    const std::vector<std::byte> data = RandomData(rng);
    ASSERT_THAT((*east_->GetVolume(vol->id))->Write(0, data), IsOk());
    auto source = east_->CreateSnapshot({.volume_id = vol->id, .owner = kAccount});
    ASSERT_THAT(source, IsOk());
    ASSERT_EQ(Settle(east_, source->id), SnapshotState::kCompleted);
    ImageInfo request;
    request.name = absl::StrCat("flow-", round);
    request.owner = kAccount;
    request.root_device_name = "/dev/sda1";
    BlockDeviceMapping root;
    root.device_name = "/dev/sda1";
    root.ebs = EbsBlockDevice{.snapshot_id = source->id};
    request.mappings.push_back(root);
    auto image = east_->images().RegisterImage(request);
    ASSERT_THAT(image, IsOk());
    const std::string key = absl::StrCat("round-", round, ".bundle");
    if (!copy) {
      ASSERT_THAT(image::WriteBundle(*east_, *image, bucket_.path(), key, kAccount, nullptr),
                  IsOk());
    }
    // The flow, cut at a random moment (up to about the time it takes).
    std::thread restore;
    if (copy) {
      auto started = store_->CopySnapshotAcrossRegions("west-1", {.source_region = east_->name(),
                                                                  .source_snapshot_id = source->id,
                                                                  .request = {.owner = kAccount}});
      ASSERT_THAT(started, IsOk());
    } else {
      restore = std::thread([this, key] {
        // Fails when the power goes; what it made must then be undone or fail on reopen.
        (void)image::ReadBundle(*east_, bucket_.path(), key, kAccount);
      });
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 40'000));
    env_->FailAfter(0, absl::DataLossError("injected: the machine is off"));
    if (restore.joinable()) restore.join();
    PowerLoss(rng() % 2 == 0, rng());

    // The source is intact.
    ASSERT_EQ(Settle(east_, source->id), SnapshotState::kCompleted);
    ASSERT_EQ(ReadSnapshot(east_, source->id), data);
    // Whatever the flow made (a copy in west-1, restored snapshots in local-1) resumes or
    // fails: none stays pending, and what completed holds the source's bytes.
    for (Region* region : {east_, west_}) {
      auto snapshots = region->ListSnapshots();
      ASSERT_THAT(snapshots, IsOk());
      for (const SnapshotInfo& s : *snapshots) {
        if (s.id == source->id) continue;
        const SnapshotState state = Settle(region, s.id);
        ASSERT_NE(state, SnapshotState::kPending) << "snapshot " << s.id << " is stuck";
        if (state == SnapshotState::kCompleted) {
          ASSERT_EQ(ReadSnapshot(region, s.id), data) << "snapshot " << s.id;
        }
      }
    }
    CheckFsck();
  }
  std::printf("%d copy and restore crash rounds\n", rounds);
  ::strata::testing::RecordCrashRounds("power-loss-flows", rounds);
}

// The archive tier cut by power loss: an archival (parts, manifest, then the catalog write that
// deletes the snapshot's data) or a restore (the chunks back, a manifest in pieces, the record),
// at a random moment. After the reopen the tiering resumes; whatever tier the snapshot ends in,
// a permanent restore gives back its bytes exactly, and fsck is clean after GC.
TEST_F(FlowCrashTest, ArchivalsAndRestoresCutByPowerLossLoseNothing) {
  const uint64_t seed = ::strata::testing::TestSeed();
  std::mt19937_64 rng(seed);
  int rounds = 0;
  for (int round = 0; round < 30 && !HasFailure(); ++round, ++rounds) {
    const bool cut_restore = round % 2 == 1;
    SCOPED_TRACE(::testing::Message()
                 << "round " << round << (cut_restore ? " (restore)" : " (archival)") << " seed "
                 << seed);
    Fresh();
    auto vol = east_->CreateVolume({.size_bytes = kVolumeBytes, .owner = kAccount});
    ASSERT_THAT(vol, IsOk());
    const std::vector<std::byte> data = RandomData(rng);
    ASSERT_THAT((*east_->GetVolume(vol->id))->Write(0, data), IsOk());
    auto snap = east_->CreateSnapshot({.volume_id = vol->id, .owner = kAccount});
    ASSERT_THAT(snap, IsOk());
    ASSERT_EQ(Settle(east_, snap->id), SnapshotState::kCompleted);
    // Mostly the snapshot alone holds its data (the archival frees it); sometimes a volume
    // still reads through it (the data is kept, and a restore undeletes it).
    if (rng() % 4 != 0) {
      ASSERT_THAT(east_->DeleteVolume(vol->id), IsOk());
    }
    ASSERT_THAT(east_->ArchiveSnapshot(snap->id), IsOk());
    if (cut_restore) {
      ASSERT_EQ(SettleTier(snap->id).storage_tier, "archive");
      ASSERT_THAT(east_->RestoreArchivedSnapshot(
                      snap->id, rng() % 2 == 0 ? SnapshotTierRestoreRequest{.temporary_days = 1}
                                               : SnapshotTierRestoreRequest{.permanent = true}),
                  IsOk());
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 6'000));
    PowerLoss(rng() % 2 == 0, rng());

    SnapshotTierStatus tier = SettleTier(snap->id);
    if (tier.storage_tier == "archive") {
      ASSERT_THAT(east_->RestoreArchivedSnapshot(snap->id, {.permanent = true}), IsOk());
      tier = SettleTier(snap->id);
    }
    ASSERT_EQ(tier.storage_tier, "standard") << tier.last_operation_status;
    ASSERT_EQ(Settle(east_, snap->id), SnapshotState::kCompleted);
    ASSERT_EQ(ReadSnapshot(east_, snap->id), data);
    CheckFsck();
  }
  std::printf("%d archival and restore crash rounds\n", rounds);
  ::strata::testing::RecordCrashRounds("power-loss-archive-tier", rounds);
}

}  // namespace
}  // namespace strata::crash
