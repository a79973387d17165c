// Snapshot locks and the Recycle Bin through the public API, on a clock the test moves: what a
// lock forbids in each state, what a rule puts in the bin, restores, expiry (and the chunks GC
// gets back), locked rules, and what survives a reopen.

#include <atomic>

#include "archive/archive_store.h"
#include "strata/aws_error.h"
#include "strata/fault_injection_env.h"
#include "strata/secret.h"
#include "strata/store.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::Pattern;
using ::strata::testing::StatusIs;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kDay = 86'400'000'000;  // µs: the tests keep AWS's day.
constexpr uint64_t kHour = kDay / 24;

// The default Env, but NowMicros is the test's.
class ClockEnv : public FaultInjectionEnv {
 public:
  ClockEnv() : FaultInjectionEnv(Env::Default()) {}
  uint64_t NowMicros() override { return now_.load(); }
  void Advance(uint64_t micros) { now_ += micros; }

 private:
  std::atomic<uint64_t> now_{1'800'000'000'000'000};  // 2027.
};

class DataProtectionTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    store_.reset();
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.env = &clock_;
    options.kms_root_key = root_key_;        // For encrypted volumes.
    options.archive.part_bytes = 256 << 10;  // Archives of several parts.
    options.background_work = false;
    auto store = Store::Open(dir_.path(), options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    region_ = store_->DefaultRegion();
  }

  // A completed snapshot of a volume holding Pattern(1 MiB, seed), tagged `tags`; the volume is
  // deleted, so that the snapshot alone holds its chunks.
  std::string Snapshot(int seed, std::map<std::string, std::string> tags = {}) {
    auto vol = region_->CreateVolume({.size_bytes = 4 * kMiB, .owner = kOwner});
    EXPECT_THAT(vol, IsOk());
    EXPECT_THAT((*region_->GetVolume(vol->id))->Write(0, Pattern(kMiB, seed)), IsOk());
    auto snap = region_->CreateSnapshot({.volume_id = vol->id, .tags = tags, .owner = kOwner});
    EXPECT_THAT(snap, IsOk());
    EXPECT_THAT(region_->RunBackgroundWork(), IsOk());
    EXPECT_THAT(region_->DeleteVolume(vol->id), IsOk());
    return snap->id;
  }
  bool Listed(const std::string& id) {
    auto all = region_->ListSnapshots();
    return std::any_of(all->begin(), all->end(), [&](const SnapshotInfo& s) { return s.id == id; });
  }
  bool InBin(const std::string& id) {
    auto all = region_->ListRecycledSnapshots();
    return std::any_of(all->begin(), all->end(), [&](const SnapshotInfo& s) { return s.id == id; });
  }
  RecycleRule SnapshotRule(uint32_t days) {
    return RecycleRule{.owner = kOwner,
                       .resource_type = kRecycleSnapshots,
                       .retention_days = days,
                       .resource_tags = {{"keep", "yes"}}};
  }

  static constexpr char kOwner[] = "123456789012";
  ClockEnv clock_;
  SecretBytes root_key_ = RandomSecret(32);
  ::strata::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  Region* region_ = nullptr;
};

TEST_F(DataProtectionTest, AGovernanceLockRefusesDeletionUntilUnlocked) {
  const std::string snap = Snapshot(1);
  auto locked = region_->LockSnapshot(snap, {.mode = "governance", .duration_days = 30});
  ASSERT_THAT(locked, IsOk());
  EXPECT_EQ(locked->lock_state, "governance");
  EXPECT_EQ(locked->lock->expires_micros, clock_.NowMicros() + 30 * kDay);
  const absl::Status refused = region_->DeleteSnapshot(snap);
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(AwsErrorCode(refused), "SnapshotLocked");
  // Shortened, then unlocked: then it goes.
  ASSERT_THAT(region_->LockSnapshot(snap, {.mode = "governance", .duration_days = 1}), IsOk());
  ASSERT_THAT(region_->UnlockSnapshot(snap), IsOk());
  EXPECT_THAT(region_->DeleteSnapshot(snap), IsOk());
  EXPECT_FALSE(Listed(snap));
}

TEST_F(DataProtectionTest, AComplianceLockPastItsCoolingOffCanOnlyBeExtended) {
  const std::string snap = Snapshot(2);
  auto locked = region_->LockSnapshot(
      snap, {.mode = "compliance", .cool_off_hours = 24, .duration_days = 30});
  ASSERT_THAT(locked, IsOk());
  EXPECT_EQ(locked->lock_state, "compliance-cooloff");
  // In its cooling-off period it can still be shortened, its mode changed, or removed.
  clock_.Advance(23 * kHour);
  locked = region_->LockSnapshot(snap,
                                 {.mode = "compliance", .cool_off_hours = 24, .duration_days = 10});
  ASSERT_THAT(locked, IsOk());
  EXPECT_EQ(locked->lock_state, "compliance-cooloff") << "the cooling-off runs from the lock";
  clock_.Advance(2 * kHour);
  auto info = region_->DescribeSnapshot(snap);
  EXPECT_EQ(info->lock_state, "compliance");
  EXPECT_EQ(AwsErrorCode(region_->UnlockSnapshot(snap).status()), "SnapshotLocked");
  EXPECT_EQ(AwsErrorCode(
                region_->LockSnapshot(snap, {.mode = "compliance", .duration_days = 5}).status()),
            "SnapshotLocked");
  EXPECT_EQ(AwsErrorCode(
                region_->LockSnapshot(snap, {.mode = "governance", .duration_days = 90}).status()),
            "SnapshotLocked");
  EXPECT_EQ(AwsErrorCode(region_->DeleteSnapshot(snap)), "SnapshotLocked");
  const uint64_t before = region_->DescribeSnapshot(snap)->lock->expires_micros;
  auto extended = region_->LockSnapshot(snap, {.mode = "compliance", .duration_days = 90});
  ASSERT_THAT(extended, IsOk());
  EXPECT_GT(extended->lock->expires_micros, before);
  EXPECT_EQ(extended->lock_state, "compliance");
  // The lock is in the catalog: a reopen keeps it.
  Reopen();
  EXPECT_EQ(AwsErrorCode(region_->DeleteSnapshot(snap)), "SnapshotLocked");
  // Expired, it holds nothing.
  clock_.Advance(91 * kDay);
  EXPECT_EQ(region_->DescribeSnapshot(snap)->lock_state, "expired");
  EXPECT_THAT(region_->DeleteSnapshot(snap), IsOk());
}

TEST_F(DataProtectionTest, BadLockRequestsChangeNothing) {
  const std::string snap = Snapshot(3);
  const SnapshotLockRequest bad[] = {
      {.mode = "forever", .duration_days = 1},
      {.mode = "governance", .cool_off_hours = 1, .duration_days = 1},
      {.mode = "compliance", .cool_off_hours = 73, .duration_days = 1},
      {.mode = "governance"},
      {.mode = "governance", .duration_days = 1, .expiration_micros = clock_.NowMicros() + kDay},
      {.mode = "governance", .duration_days = 36501},
      {.mode = "governance", .expiration_micros = clock_.NowMicros() - 1},
  };
  for (const SnapshotLockRequest& request : bad) {
    EXPECT_THAT(region_->LockSnapshot(snap, request), StatusIs(absl::StatusCode::kInvalidArgument))
        << request.mode;
  }
  EXPECT_FALSE(region_->DescribeSnapshot(snap)->lock.has_value());
  EXPECT_THAT(
      region_->LockSnapshot("snap-0123456789abcdef0", {.mode = "governance", .duration_days = 1}),
      StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(AwsErrorCode(region_->UnlockSnapshot(snap).status()), "SnapshotNotLocked");
  EXPECT_THAT(region_->DeleteSnapshot(snap), IsOk());
}

TEST_F(DataProtectionTest, ARuleKeepsADeletedSnapshotRestorableThenGcGetsItsChunksBack) {
  ASSERT_THAT(region_->recycle_bin().CreateRule(SnapshotRule(7)), IsOk());
  const std::string kept = Snapshot(4, {{"keep", "yes"}});
  const std::string other = Snapshot(5, {{"keep", "no"}});
  const uint64_t held = region_->GetStats()->referenced_chunk_count;
  ASSERT_GT(held, 0u);

  ASSERT_THAT(region_->DeleteSnapshot(kept), IsOk());
  ASSERT_THAT(region_->DeleteSnapshot(other), IsOk());
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  EXPECT_TRUE(InBin(kept));
  EXPECT_FALSE(InBin(other)) << "a tag value the rule does not name";
  EXPECT_FALSE(Listed(kept));
  EXPECT_THAT(region_->OpenSnapshot(kept), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(region_->CreateVolume({.size_bytes = 0, .snapshot_id = kept, .owner = kOwner}),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(region_->DeleteSnapshot(kept), StatusIs(absl::StatusCode::kNotFound));
  const std::vector<SnapshotInfo> bin = *region_->ListRecycledSnapshots();
  ASSERT_EQ(bin.size(), 1u);
  EXPECT_EQ(bin[0].recycle_bin->exit_micros - bin[0].recycle_bin->enter_micros, 7 * kDay);
  // Its chunks are still held: only `other`'s went.
  EXPECT_EQ(region_->GetStats()->referenced_chunk_count, held / 2);

  // Restored (after a reopen: the bin is in the catalog), it reads as before.
  Reopen();
  clock_.Advance(6 * kDay);
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  ASSERT_THAT(region_->RestoreSnapshotFromRecycleBin(kept), IsOk());
  EXPECT_TRUE(Listed(kept));
  EXPECT_FALSE(InBin(kept));
  auto reader = region_->OpenSnapshot(kept);
  ASSERT_THAT(reader, IsOk());
  std::vector<std::byte> out(kMiB);
  ASSERT_THAT((*reader)->Read(0, out), IsOk());
  EXPECT_EQ(out, Pattern(kMiB, 4));
  EXPECT_THAT(region_->RestoreSnapshotFromRecycleBin(kept), StatusIs(absl::StatusCode::kNotFound));

  // Deleted again, past its retention it is deleted for good and GC reclaims its chunks.
  ASSERT_THAT(region_->DeleteSnapshot(kept), IsOk());
  clock_.Advance(7 * kDay - 1);
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  EXPECT_TRUE(InBin(kept)) << "a microsecond before its retention ends";
  clock_.Advance(1);
  EXPECT_THAT(region_->RestoreSnapshotFromRecycleBin(kept), StatusIs(absl::StatusCode::kNotFound))
      << "its retention over, it cannot be restored even before the sweep";
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  EXPECT_FALSE(InBin(kept));
  EXPECT_FALSE(Listed(kept));
  EXPECT_EQ(region_->GetStats()->referenced_chunk_count, 0u);
  ASSERT_THAT(region_->CollectGarbage(), IsOk());
  EXPECT_EQ(region_->GetStats()->chunk_count, 0u);
}

TEST_F(DataProtectionTest, ALockedSnapshotIsNeitherDeletedNorBinned) {
  ASSERT_THAT(region_->recycle_bin().CreateRule(SnapshotRule(7)), IsOk());
  const std::string snap = Snapshot(6, {{"keep", "yes"}});
  ASSERT_THAT(region_->LockSnapshot(snap, {.mode = "governance", .duration_days = 1}), IsOk());
  EXPECT_EQ(AwsErrorCode(region_->DeleteSnapshot(snap)), "SnapshotLocked");
  EXPECT_FALSE(InBin(snap));
  EXPECT_TRUE(Listed(snap));
}

TEST_F(DataProtectionTest, RulesAreValidatedAndALockedRuleWaitsOutItsUnlockDelay) {
  RecycleBin& bin = region_->recycle_bin();
  const RecycleRule bad[] = {
      {.owner = kOwner, .resource_type = "EBS_VOLUME", .retention_days = 1},
      {.owner = kOwner, .resource_type = kRecycleSnapshots, .retention_days = 0},
      {.owner = kOwner, .resource_type = kRecycleSnapshots, .retention_days = 3651},
      {.owner = kOwner,
       .resource_type = kRecycleSnapshots,
       .retention_days = 1,
       .resource_tags = {{"a", ""}},
       .exclude_resource_tags = {{"b", ""}}},
      {.owner = kOwner,
       .resource_type = kRecycleImages,
       .retention_days = 1,
       .unlock_delay_days = 6},
      {.owner = kOwner,
       .resource_type = kRecycleImages,
       .retention_days = 1,
       .resource_tags = {{"a", ""}},
       .unlock_delay_days = 7},
  };
  for (const RecycleRule& rule : bad) {
    EXPECT_THAT(bin.CreateRule(rule), StatusIs(absl::StatusCode::kInvalidArgument))
        << rule.resource_type << " " << rule.retention_days;
  }
  EXPECT_TRUE(bin.ListRules(kOwner)->empty());
  auto tag_level = bin.CreateRule(SnapshotRule(1));
  ASSERT_THAT(tag_level, IsOk());
  EXPECT_EQ(tag_level->LockStateAt(clock_.NowMicros()), "") << "tag-level rules have no lock";
  ASSERT_THAT(bin.DeleteRule(kOwner, tag_level->id), IsOk());
  auto never_locked =
      bin.CreateRule({.owner = kOwner, .resource_type = kRecycleImages, .retention_days = 1});
  ASSERT_THAT(never_locked, IsOk());
  EXPECT_EQ(never_locked->LockStateAt(clock_.NowMicros()), "unlocked");
  EXPECT_FALSE(never_locked->FrozenAt(clock_.NowMicros()));
  EXPECT_THAT(bin.UnlockRule(kOwner, never_locked->id),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT(bin.DeleteRule(kOwner, never_locked->id), IsOk());

  auto rule = bin.CreateRule({.owner = kOwner,
                              .resource_type = kRecycleImages,
                              .retention_days = 10,
                              .unlock_delay_days = 7});
  ASSERT_THAT(rule, IsOk());
  EXPECT_EQ(rule->LockStateAt(clock_.NowMicros()), "locked");
  EXPECT_THAT(bin.GetRule("999999999999", rule->id), StatusIs(absl::StatusCode::kNotFound))
      << "another account's rule is not found";
  auto shorten = [](RecycleRule& r) {
    r.retention_days = 1;
    return absl::OkStatus();
  };
  EXPECT_THAT(bin.UpdateRule(kOwner, rule->id, shorten, false),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(bin.DeleteRule(kOwner, rule->id), StatusIs(absl::StatusCode::kFailedPrecondition));
  auto tag = [](RecycleRule& r) {
    r.tags["team"] = "storage";
    r.retention_days = 1;  // Ignored: a tags-only update.
    return absl::OkStatus();
  };
  auto tagged = bin.UpdateRule(kOwner, rule->id, tag, true);
  ASSERT_THAT(tagged, IsOk());
  EXPECT_EQ(tagged->tags.at("team"), "storage");
  EXPECT_EQ(tagged->retention_days, 10u);

  ASSERT_THAT(bin.UnlockRule(kOwner, rule->id), IsOk());
  EXPECT_EQ(bin.GetRule(kOwner, rule->id)->LockStateAt(clock_.NowMicros()), "pending_unlock");
  clock_.Advance(7 * kDay - 1);
  EXPECT_THAT(bin.DeleteRule(kOwner, rule->id), StatusIs(absl::StatusCode::kFailedPrecondition));
  clock_.Advance(1);
  EXPECT_EQ(bin.GetRule(kOwner, rule->id)->LockStateAt(clock_.NowMicros()), "unlocked");
  ASSERT_THAT(bin.UpdateRule(kOwner, rule->id, shorten, false), IsOk());
  ASSERT_THAT(bin.LockRule(kOwner, rule->id, 30), IsOk());
  EXPECT_THAT(bin.LockRule(kOwner, rule->id, 30), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT(bin.UnlockRule(kOwner, rule->id), IsOk());
  clock_.Advance(30 * kDay);
  ASSERT_THAT(bin.DeleteRule(kOwner, rule->id), IsOk());
  EXPECT_THAT(bin.GetRule(kOwner, rule->id), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(DataProtectionTest, TheLongestRetentionOfTheRulesThatCoverAResourceApplies) {
  RecycleBin& bin = region_->recycle_bin();
  ASSERT_THAT(bin.CreateRule({.owner = kOwner,
                              .resource_type = kRecycleSnapshots,
                              .retention_days = 3,
                              .exclude_resource_tags = {{"scratch", ""}}}),
              IsOk());
  ASSERT_THAT(bin.CreateRule(SnapshotRule(9)), IsOk());
  EXPECT_EQ(*bin.RetentionMicros(kOwner, kRecycleSnapshots, {}), 3 * kDay);
  EXPECT_EQ(*bin.RetentionMicros(kOwner, kRecycleSnapshots, {{"keep", "yes"}}), 9 * kDay);
  EXPECT_EQ(*bin.RetentionMicros(kOwner, kRecycleSnapshots, {{"scratch", "1"}}), 0u);
  EXPECT_EQ(*bin.RetentionMicros(kOwner, kRecycleImages, {{"keep", "yes"}}), 0u);
  EXPECT_EQ(*bin.RetentionMicros("999999999999", kRecycleSnapshots, {{"keep", "yes"}}), 0u);
}

TEST_F(DataProtectionTest, ABinnedImageKeepsItsSnapshotsUntilItsRetentionEnds) {
  ASSERT_THAT(region_->recycle_bin().CreateRule(
                  {.owner = kOwner, .resource_type = kRecycleImages, .retention_days = 2}),
              IsOk());
  const std::string snap = Snapshot(7);
  ImageInfo request;
  request.name = "binned-image";
  request.owner = kOwner;
  request.mappings = {
      BlockDeviceMapping{.device_name = "/dev/sda1", .ebs = EbsBlockDevice{.snapshot_id = snap}}};
  auto image = region_->images().RegisterImage(request);
  ASSERT_THAT(image, IsOk());
  auto deleted = region_->images().DeregisterImage(image->id, /*delete_snapshots=*/true);
  ASSERT_THAT(deleted, IsOk());
  EXPECT_TRUE(deleted->empty()) << "a binned image's snapshots stay";
  EXPECT_THAT(region_->images().DescribeImage(image->id), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_EQ(region_->images().ListRecycledImages()->size(), 1u);
  EXPECT_EQ(AwsErrorCode(region_->DeleteSnapshot(snap)), "InvalidSnapshot.InUse");

  ASSERT_THAT(region_->images().RestoreImageFromRecycleBin(image->id), IsOk());
  EXPECT_THAT(region_->images().DescribeImage(image->id), IsOk());
  ASSERT_THAT(region_->images().DeregisterImage(image->id, false), IsOk());
  Reopen();
  clock_.Advance(2 * kDay);
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  EXPECT_TRUE(region_->images().ListRecycledImages()->empty());
  EXPECT_THAT(region_->images().RestoreImageFromRecycleBin(image->id),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(region_->DeleteSnapshot(snap), IsOk()) << "deregistered for good: no longer in use";
}

TEST_F(DataProtectionTest, FastSnapshotRestoreHydratesAtCreationWhileCreditsLast) {
  // Kept alive: a volume made from a snapshot reads through it.
  auto source = region_->CreateVolume({.size_bytes = 4 * kMiB, .owner = kOwner});
  ASSERT_THAT(source, IsOk());
  ASSERT_THAT((*region_->GetVolume(source->id))->Write(0, Pattern(kMiB, 8)), IsOk());
  auto snap = region_->CreateSnapshot({.volume_id = source->id, .owner = kOwner});
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  auto make = [&](const std::string& owner) {
    auto v = region_->CreateVolume({.size_bytes = 0, .snapshot_id = snap->id, .owner = owner});
    EXPECT_THAT(v, IsOk());
    return *v;
  };
  auto state = [&] {
    auto all = region_->ListFastSnapshotRestores();
    EXPECT_EQ(all->size(), 1u);
    return all->empty() ? FastRestoreInfo{} : all->front();
  };

  EXPECT_FALSE(make(kOwner).fast_restored) << "not enabled: lazy";
  auto enabled = region_->EnableFastSnapshotRestore(kOwner, snap->id);
  ASSERT_THAT(enabled, IsOk());
  EXPECT_EQ(enabled->state, "enabling");
  EXPECT_EQ(enabled->bucket_size, 10u) << "MIN(10, 1024 / 1 GiB)";
  EXPECT_FALSE(make(kOwner).fast_restored) << "enabling: lazy";
  clock_.Advance(1000 * 1000);  // Past enabling (1 s); optimizing a 4 MiB snapshot at 1 GiB/s.
  EXPECT_EQ(state().state, "optimizing");
  clock_.Advance(10 * 1000);
  EXPECT_EQ(state().state, "enabled");
  EXPECT_EQ(state().credits, 10);

  const VolumeInfo fast = make(kOwner);
  EXPECT_TRUE(fast.fast_restored);
  EXPECT_EQ(fast.hydration_percent, 100) << "every chunk in its head at creation";
  EXPECT_FALSE(fast.hydrating);
  std::vector<std::byte> out(kMiB);
  ASSERT_THAT((*region_->GetVolume(fast.id))->Read(0, out), IsOk());
  EXPECT_EQ(out, Pattern(kMiB, 8));
  const VolumeInfo other = make("999999999999");
  EXPECT_FALSE(other.fast_restored) << "enabled by another account";
  EXPECT_LT(other.hydration_percent, 100);

  // Ten credits: the eleventh volume restores lazily; an hour refills the bucket.
  for (int i = 1; i < 10; ++i) EXPECT_TRUE(make(kOwner).fast_restored) << i;
  EXPECT_FALSE(make(kOwner).fast_restored) << "the bucket is empty";
  clock_.Advance(kHour / 10 + 1);
  EXPECT_TRUE(make(kOwner).fast_restored) << "a tenth of an hour refills one credit";
  EXPECT_FALSE(make(kOwner).fast_restored);
  Reopen();
  EXPECT_TRUE(region_->DescribeVolume(fast.id)->fast_restored) << "recorded in the catalog";
  EXPECT_EQ(state().state, "enabled");

  // Enabling again changes nothing; disabling ends it.
  ASSERT_THAT(region_->EnableFastSnapshotRestore(kOwner, snap->id), IsOk());
  EXPECT_LT(state().credits, 1);
  ASSERT_THAT(region_->DisableFastSnapshotRestore(kOwner, snap->id), IsOk());
  EXPECT_EQ(state().state, "disabling");
  clock_.Advance(kHour);
  EXPECT_EQ(state().state, "disabled");
  EXPECT_FALSE(make(kOwner).fast_restored);
  EXPECT_THAT(region_->DisableFastSnapshotRestore("999999999999", snap->id),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(region_->EnableFastSnapshotRestore(kOwner, "snap-0123456789abcdef0"),
              StatusIs(absl::StatusCode::kNotFound));

  // Re-enabled, then the snapshot deleted: its fast restores go with it.
  ASSERT_THAT(region_->EnableFastSnapshotRestore(kOwner, snap->id), IsOk());
  absl::StatusOr<std::vector<VolumeInfo>> volumes = region_->ListVolumes();
  ASSERT_THAT(volumes, IsOk());
  for (const VolumeInfo& v : *volumes) ASSERT_THAT(region_->DeleteVolume(v.id), IsOk());
  ASSERT_THAT(region_->DeleteSnapshot(snap->id), IsOk());
  EXPECT_TRUE(region_->ListFastSnapshotRestores()->empty());
}

// The archive tier: ModifySnapshotTier's archival, RestoreSnapshotTier's restores (temporary
// and permanent), on the timing model's clock (StoreOptions::archive: 2 s plus 1 GiB/s).
class ArchiveTierTest : public DataProtectionTest {
 protected:
  static constexpr uint64_t kTierTime = 3'000'000;  // µs: more than 2 s + 4 MiB at 1 GiB/s.

  std::string Tier(const std::string& id) { return region_->DescribeSnapshot(id)->storage_tier; }
  SnapshotTierStatus TierStatus(const std::string& id) {
    auto all = region_->ListSnapshotTierStatuses();
    EXPECT_THAT(all, IsOk());
    for (const SnapshotTierStatus& s : *all) {
      if (s.snapshot_id == id) return s;
    }
    ADD_FAILURE() << id << " has no tier status";
    return {};
  }
  std::vector<std::byte> Read(const std::string& id, uint64_t bytes = kMiB) {
    auto reader = region_->OpenSnapshot(id);
    EXPECT_THAT(reader, IsOk());
    std::vector<std::byte> out(bytes);
    if (reader.ok()) {
      EXPECT_THAT((*reader)->Read(0, out), IsOk());
    }
    return out;
  }
  // The archive's objects of `id`: in the region's directory, or in radosgw on RADOS.
  size_t ArchiveObjects(const std::string& id) {
    const StoreOptions::ArchiveTier o = ::strata::testing::TestStoreOptions(dir_.path()).archive;
    std::unique_ptr<archive::ArchiveStore> store = archive::NewDirectoryArchive(
        Env::Default(), dir_.path() + "/regions/" + region_->name() + "/archive");
    if (!o.s3_endpoint.empty()) {
      auto s3 = archive::OpenS3Archive({.endpoint = o.s3_endpoint,
                                        .bucket = o.s3_bucket,
                                        .access_key_id = o.s3_access_key_id,
                                        .secret_access_key = o.s3_secret_access_key,
                                        .prefix = o.s3_prefix + region_->name() + "/"});
      EXPECT_THAT(s3, IsOk());
      if (!s3.ok()) return 0;
      store = *std::move(s3);
    }
    auto names = store->List(id + ".");
    EXPECT_THAT(names, IsOk());
    return names.ok() ? names->size() : 0;
  }
  // Runs the tiering the model has made due.
  void Elapse(uint64_t micros) {
    clock_.Advance(micros);
    ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  }
};

TEST_F(ArchiveTierTest, ArchivalFreesTheChunksAndRestoresBringTheSnapshotBack) {
  const std::string snap = Snapshot(7);
  ASSERT_GT(region_->GetStats()->referenced_chunk_count, 0u);
  auto started = region_->ArchiveSnapshot(snap);
  ASSERT_THAT(started, IsOk());
  EXPECT_EQ(started->last_operation_status, "archival-in-progress");
  EXPECT_EQ(started->tiering_start_micros, clock_.NowMicros());
  // Before the model's time it is still standard, and usable.
  Elapse(1'000'000);
  EXPECT_EQ(Tier(snap), "standard");
  EXPECT_GT(TierStatus(snap).progress_percent, 0);
  EXPECT_LT(TierStatus(snap).progress_percent, 100);
  EXPECT_EQ(AwsErrorCode(region_->DeleteSnapshot(snap)), "IncorrectState");
  EXPECT_EQ(AwsErrorCode(region_->ArchiveSnapshot(snap).status()), "IncorrectState");

  Elapse(kTierTime);
  EXPECT_EQ(Tier(snap), "archive");
  EXPECT_TRUE(Listed(snap)) << "an archived snapshot is still listed";
  SnapshotTierStatus status = TierStatus(snap);
  EXPECT_EQ(status.storage_tier, "archive");
  EXPECT_EQ(status.last_operation_status, "archival-completed");
  EXPECT_EQ(status.progress_percent, 100);
  EXPECT_EQ(status.archival_complete_micros, clock_.NowMicros());
  EXPECT_EQ(ArchiveObjects(snap), 5u) << "four parts of 256 KiB and a manifest";
  // Its chunks left the main store.
  EXPECT_EQ(region_->GetStats()->referenced_chunk_count, 0u);
  ASSERT_THAT(region_->CollectGarbage(), IsOk());
  EXPECT_EQ(region_->GetStats()->chunk_count, 0u);
  // Archived, it can be described, deleted or restored; nothing else.
  EXPECT_THAT(region_->OpenSnapshot(snap), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(AwsErrorCode(region_->CreateVolume({.snapshot_id = snap, .owner = kOwner}).status()),
            "IncorrectState");
  EXPECT_EQ(AwsErrorCode(region_->CopySnapshot(snap, {.owner = kOwner}).status()),
            "IncorrectState");
  EXPECT_EQ(AwsErrorCode(region_->ArchiveSnapshot(snap).status()), "IncorrectState");

  // A temporary restore, after a reopen (the archive is in the catalog and the directory).
  Reopen();
  EXPECT_EQ(Tier(snap), "archive");
  auto restoring = region_->RestoreArchivedSnapshot(snap, {.temporary_days = 2});
  ASSERT_THAT(restoring, IsOk());
  EXPECT_EQ(restoring->last_operation_status, "temporary-restore-in-progress");
  EXPECT_EQ(restoring->storage_tier, "archive");
  EXPECT_EQ(AwsErrorCode(region_->DeleteSnapshot(snap)), "IncorrectState");
  Elapse(kTierTime);
  EXPECT_EQ(Tier(snap), "standard");
  EXPECT_EQ(Read(snap), Pattern(kMiB, 7));
  status = TierStatus(snap);
  EXPECT_EQ(status.last_operation_status, "temporary-restore-completed");
  EXPECT_EQ(status.restore_expiry_micros, clock_.NowMicros() + 2 * kDay);
  EXPECT_EQ(region_->DescribeSnapshot(snap)->restore_expiry_micros, status.restore_expiry_micros);
  EXPECT_GT(region_->GetStats()->referenced_chunk_count, 0u);

  // Its period over, it is archived again, from the archive it kept.
  Elapse(2 * kDay);
  EXPECT_EQ(Tier(snap), "archive");
  ASSERT_THAT(region_->CollectGarbage(), IsOk());
  EXPECT_EQ(region_->GetStats()->chunk_count, 0u);

  // A permanent restore: standard for good, and its archive is gone.
  ASSERT_THAT(region_->RestoreArchivedSnapshot(snap, {.permanent = true}), IsOk());
  Elapse(kTierTime);
  EXPECT_EQ(Tier(snap), "standard");
  EXPECT_EQ(TierStatus(snap).last_operation_status, "permanent-restore-completed");
  EXPECT_EQ(ArchiveObjects(snap), 0u);
  EXPECT_EQ(Read(snap), Pattern(kMiB, 7));
  EXPECT_EQ(AwsErrorCode(region_->RestoreArchivedSnapshot(snap, {.permanent = true}).status()),
            "IncorrectState");
  // And a volume from it reads the data.
  auto vol = region_->CreateVolume({.snapshot_id = snap, .owner = kOwner});
  ASSERT_THAT(vol, IsOk());
  std::vector<std::byte> out(kMiB);
  ASSERT_THAT((*region_->GetVolume(vol->id))->Read(0, out), IsOk());
  EXPECT_EQ(out, Pattern(kMiB, 7));
}

TEST_F(ArchiveTierTest, AnArchivedParentMergesIntoItsChildAndAKeptSnapshotIsUndeleted) {
  // An encrypted lineage: A, then B over it; a volume made from C keeps C's data.
  auto vol = region_->CreateVolume({.size_bytes = 4 * kMiB, .owner = kOwner, .encrypted = true});
  ASSERT_THAT(vol, IsOk());
  Volume* v = *region_->GetVolume(vol->id);
  ASSERT_THAT(v->Write(0, Pattern(2 * kMiB, 8)), IsOk());
  auto a = region_->CreateSnapshot({.volume_id = vol->id, .owner = kOwner});
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  ASSERT_THAT(v->Write(kMiB, Pattern(kMiB, 9)), IsOk());
  auto b = region_->CreateSnapshot({.volume_id = vol->id, .owner = kOwner});
  ASSERT_THAT(b, IsOk());
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  ASSERT_THAT(region_->DeleteVolume(vol->id), IsOk());
  std::vector<std::byte> b_data = Pattern(2 * kMiB, 8);
  const std::vector<std::byte> second = Pattern(kMiB, 9);
  std::copy(second.begin(), second.end(), b_data.begin() + kMiB);

  ASSERT_THAT(region_->ArchiveSnapshot(a->id), IsOk());
  Elapse(kTierTime);
  EXPECT_EQ(Tier(a->id), "archive");
  EXPECT_EQ(Read(b->id, 2 * kMiB), b_data) << "B took over what it shared with A";
  ASSERT_THAT(region_->RestoreArchivedSnapshot(a->id, {.permanent = true}), IsOk());
  Elapse(kTierTime);
  EXPECT_EQ(Read(a->id, 2 * kMiB), Pattern(2 * kMiB, 8));
  EXPECT_TRUE(region_->DescribeSnapshot(a->id)->encrypted);
  EXPECT_EQ(Read(b->id, 2 * kMiB), b_data);

  // A volume reads through B: archiving B keeps its data, and a restore just undeletes it.
  auto user = region_->CreateVolume({.snapshot_id = b->id, .owner = kOwner});
  ASSERT_THAT(user, IsOk());
  const uint64_t held = region_->GetStats()->referenced_chunk_count;
  ASSERT_THAT(region_->ArchiveSnapshot(b->id), IsOk());
  Elapse(kTierTime);
  EXPECT_EQ(Tier(b->id), "archive");
  EXPECT_EQ(region_->GetStats()->referenced_chunk_count, held) << "the volume still needs them";
  std::vector<std::byte> out(2 * kMiB);
  ASSERT_THAT((*region_->GetVolume(user->id))->Read(0, out), IsOk());
  EXPECT_EQ(out, b_data);
  ASSERT_THAT(region_->RestoreArchivedSnapshot(b->id, {.temporary_days = 1}), IsOk());
  Elapse(kTierTime);
  EXPECT_EQ(Tier(b->id), "standard");
  EXPECT_EQ(Read(b->id, 2 * kMiB), b_data);
  // Deleting a temporarily restored snapshot deletes its archive too.
  ASSERT_THAT(region_->DeleteVolume(user->id), IsOk());
  ASSERT_THAT(region_->DeleteSnapshot(b->id), IsOk());
  ASSERT_THAT(region_->DeleteSnapshot(a->id), IsOk());
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  EXPECT_EQ(ArchiveObjects(b->id), 0u);
  EXPECT_FALSE(Listed(b->id));
  ASSERT_THAT(region_->CollectGarbage(), IsOk());
  EXPECT_EQ(region_->GetStats()->chunk_count, 0u);
}

TEST_F(ArchiveTierTest, RefusalsChangeNothing) {
  const std::string snap = Snapshot(10);
  // Restores of what is not archived, and bad restore requests.
  EXPECT_EQ(AwsErrorCode(region_->RestoreArchivedSnapshot(snap, {.permanent = true}).status()),
            "IncorrectState");
  const SnapshotTierRestoreRequest bad[] = {
      {}, {.temporary_days = 1, .permanent = true}, {.temporary_days = 181}};
  for (const SnapshotTierRestoreRequest& request : bad) {
    EXPECT_THAT(region_->RestoreArchivedSnapshot(snap, request),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_THAT(region_->ArchiveSnapshot("snap-0123456789abcdef0"),
              StatusIs(absl::StatusCode::kNotFound));
  // A snapshot being read (a copy's source, an export) is not archived.
  {
    auto reader = region_->OpenSnapshot(snap);
    ASSERT_THAT(reader, IsOk());
    EXPECT_EQ(AwsErrorCode(region_->ArchiveSnapshot(snap).status()), "IncorrectState");
  }
  // Nor a pending one.
  auto vol = region_->CreateVolume({.size_bytes = 4 * kMiB, .owner = kOwner});
  ASSERT_THAT(vol, IsOk());
  auto pending = region_->CreateSnapshot({.volume_id = vol->id, .owner = kOwner});
  ASSERT_THAT(pending, IsOk());
  EXPECT_EQ(AwsErrorCode(region_->ArchiveSnapshot(pending->id).status()), "IncorrectState");
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  // None of it left a trace.
  for (const std::string& id : {snap, pending->id}) {
    EXPECT_EQ(TierStatus(id).last_operation, "") << id;
    EXPECT_EQ(Tier(id), "standard");
  }
  // A locked snapshot is archived, and stays undeletable there.
  ASSERT_THAT(region_->LockSnapshot(snap, {.mode = "governance", .duration_days = 1}), IsOk());
  ASSERT_THAT(region_->ArchiveSnapshot(snap), IsOk());
  Elapse(kTierTime);
  EXPECT_EQ(Tier(snap), "archive");
  EXPECT_EQ(AwsErrorCode(region_->DeleteSnapshot(snap)), "SnapshotLocked");
  // Its lock changes while it is archived (and survives a reopen there).
  clock_.Advance(kDay);
  ASSERT_THAT(region_->LockSnapshot(snap, {.mode = "governance", .duration_days = 5}), IsOk());
  Reopen();
  EXPECT_EQ(region_->DescribeSnapshot(snap)->lock_state, "governance");
  EXPECT_EQ(AwsErrorCode(region_->DeleteSnapshot(snap)), "SnapshotLocked");
  ASSERT_THAT(region_->UnlockSnapshot(snap), IsOk());
  EXPECT_EQ(Tier(snap), "archive");
  EXPECT_GT(ArchiveObjects(snap), 0u);
  ASSERT_THAT(region_->DeleteSnapshot(snap), IsOk());
  EXPECT_FALSE(Listed(snap));
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());  // Its objects go after the record.
  EXPECT_EQ(ArchiveObjects(snap), 0u);
  EXPECT_THAT(region_->RestoreArchivedSnapshot(snap, {.permanent = true}),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace strata
