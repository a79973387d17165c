// Several nodes, one region (RADOS only): two Stores with data directories of their own (two
// nodes, each its own librados client) serve one region's namespace. What one node makes (a
// snapshot, an image, a KMS key) the other lists, reads and uses; both answer Describe alike;
// chunks both store are stored once; a snapshot that the other node's volume reads through
// outlives its deletion until that volume moves off it. docs/ceph.md.

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "strata/aws_error.h"
#include "strata/fsck.h"
#include "strata/image.h"
#include "strata/kms.h"
#include "strata/secret.h"
#include "strata/store.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::Pattern;
using ::strata::testing::StatusIs;
using ::strata::testing::TempDir;

constexpr uint64_t kMiB = 1 << 20;
constexpr char kOwner[] = "111111111111";

// Starts nothing: machines are not what these tests are about.
class NoMachines final : public Hypervisor {
 public:
  std::string name() const override { return "none"; }
  absl::Status Start(const Machine&, ExitFn) override { return absl::OkStatus(); }
  absl::Status Stop(const std::string&, bool) override { return absl::OkStatus(); }
  absl::StatusOr<std::string> Console(const std::string&) override { return ""; }
};

class MultiNodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!::strata::testing::OnRados()) GTEST_SKIP() << "RADOS backend only: shared regions";
    root_key_ = RandomSecret(32);
    a_ = OpenNode(dir_a_);
    b_ = OpenNode(dir_b_);
    ASSERT_NE(a_, nullptr);
    ASSERT_NE(b_, nullptr);
  }

  // A node: its own data directory, on node A's region namespace.
  std::unique_ptr<Store> OpenNode(TempDir& dir) {
    StoreOptions options;
    options.ceph = ::strata::testing::TestCeph(dir_a_.path());
    options.kms_root_key = root_key_;
    options.hypervisor = &machines_;
    options.background_work = false;
    // The archive tier in the cluster's radosgw, one bucket and prefix for both nodes.
    options.archive = ::strata::testing::TestStoreOptions(dir_a_.path()).archive;
    options.archive.fixed_ms = 0;
    auto store = Store::Open(dir.path(), options);
    EXPECT_THAT(store, IsOk());
    return store.ok() ? *std::move(store) : nullptr;
  }
  Region& A() { return *a_->DefaultRegion(); }
  Region& B() { return *b_->DefaultRegion(); }

  // A volume on `region` holding `data`, and its completed snapshot.
  std::string Snapshot(Region& region, const std::vector<std::byte>& data,
                       const CreateVolumeRequest& request = {}) {
    CreateVolumeRequest r = request;
    r.size_bytes = data.size();
    r.owner = kOwner;
    auto volume = region.CreateVolume(r);
    EXPECT_THAT(volume, IsOk());
    if (!volume.ok()) return "";
    EXPECT_THAT((*region.GetVolume(volume->id))->Write(0, data), IsOk());
    auto snap = region.CreateSnapshot({.volume_id = volume->id, .owner = kOwner});
    EXPECT_THAT(snap, IsOk());
    if (!snap.ok()) return "";
    EXPECT_THAT(region.RunBackgroundWork(), IsOk());
    EXPECT_EQ(region.DescribeSnapshot(snap->id)->state, SnapshotState::kCompleted);
    return snap->id;
  }
  std::vector<std::byte> ReadVolume(Region& region, const std::string& volume_id, uint64_t n) {
    std::vector<std::byte> out(n);
    auto volume = region.GetVolume(volume_id);
    EXPECT_THAT(volume, IsOk());
    if (volume.ok()) {
      EXPECT_THAT((*volume)->Read(0, out), IsOk());
    }
    return out;
  }
  static std::vector<std::string> Ids(const std::vector<SnapshotInfo>& all) {
    std::vector<std::string> ids;
    for (const SnapshotInfo& s : all) ids.push_back(s.id);
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  TempDir dir_a_, dir_b_;
  SecretBytes root_key_;
  NoMachines machines_;
  std::unique_ptr<Store> a_, b_;
};

TEST_F(MultiNodeTest, ASnapshotTakenOnOneNodeIsListedAndRestoredOnTheOther) {
  const std::vector<std::byte> data = Pattern(3 * kMiB, 7);
  const std::string snap = Snapshot(A(), data);
  auto on_b = B().DescribeSnapshot(snap);
  ASSERT_THAT(on_b, IsOk());
  EXPECT_EQ(on_b->state, SnapshotState::kCompleted);
  EXPECT_EQ(on_b->volume_size_bytes, data.size());
  EXPECT_EQ(Ids(*A().ListSnapshots()), Ids(*B().ListSnapshots()));

  auto restored = B().CreateVolume({.snapshot_id = snap, .owner = kOwner});
  ASSERT_THAT(restored, IsOk());
  EXPECT_EQ(ReadVolume(B(), restored->id, data.size()), data);
  // Volumes stay with their node: both list every volume of the region, A does not serve
  // B's, and a change of it on A says which node serves it.
  auto listed_a = A().ListVolumes();
  auto listed_b = B().ListVolumes();
  ASSERT_THAT(listed_a, IsOk());
  ASSERT_THAT(listed_b, IsOk());
  ASSERT_EQ(listed_a->size(), 2u);
  ASSERT_EQ(listed_b->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ((*listed_a)[i].id, (*listed_b)[i].id);
    EXPECT_EQ((*listed_a)[i].node, (*listed_b)[i].node);
    EXPECT_NE((*listed_a)[i].elsewhere, (*listed_b)[i].elsewhere);
  }
  auto described = A().DescribeVolume(restored->id);
  ASSERT_THAT(described, IsOk());
  EXPECT_TRUE(described->elsewhere);
  EXPECT_EQ(described->snapshot_id, snap);
  auto elsewhere = A().GrowVolume(restored->id, 8 * kMiB);
  EXPECT_THAT(elsewhere, ::strata::testing::StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(elsewhere.message(), ::testing::HasSubstr("is served by node node-"));
  EXPECT_FALSE(A().GetVolume(restored->id).ok());
  EXPECT_THAT(A().DescribeVolume("vol-00000000000000000"),
              ::strata::testing::StatusIs(absl::StatusCode::kNotFound));
  a_.reset();  // strata-fsck checks a stopped node (and the region's shared state).
  auto report = ::strata::testing::CheckTestStore(dir_a_.path());
  ASSERT_THAT(report, IsOk());
  EXPECT_TRUE(report->findings.empty()) << report->findings[0];
}

TEST_F(MultiNodeTest, SnapshotsTakenOnBothNodesAtOnceGetTheirOwnSequenceNumbers) {
  // Both nodes allocate snapshot sequence numbers (which key manifests) from one counter.
  std::vector<std::vector<std::byte>> data;
  for (int i = 0; i < 8; ++i) data.push_back(Pattern(kMiB, 100 + i));
  std::vector<std::string> snaps(8);
  std::thread on_a([&] {
    for (int i = 0; i < 8; i += 2) snaps[i] = Snapshot(A(), data[i]);
  });
  for (int i = 1; i < 8; i += 2) snaps[i] = Snapshot(B(), data[i]);
  on_a.join();
  for (int i = 0; i < 8; ++i) {
    Region& reader = i % 3 == 0 ? A() : B();
    auto volume = reader.CreateVolume({.snapshot_id = snaps[i], .owner = kOwner});
    ASSERT_THAT(volume, IsOk());
    EXPECT_EQ(ReadVolume(reader, volume->id, kMiB), data[i]) << "snapshot " << i;
  }
  EXPECT_EQ(Ids(*A().ListSnapshots()), Ids(*B().ListSnapshots()));
}

TEST_F(MultiNodeTest, BothNodesStoringTheSameDataStoreEachChunkOnce) {
  const std::vector<std::byte> data = Pattern(4 * kMiB, 11);
  std::string on_a;
  std::thread a([&] { on_a = Snapshot(A(), data); });
  const std::string on_b = Snapshot(B(), data);
  a.join();
  auto stats_a = A().GetStats();
  auto stats_b = B().GetStats();
  ASSERT_THAT(stats_a, IsOk());
  ASSERT_THAT(stats_b, IsOk());
  const uint64_t chunks = data.size() / A().chunk_size_bytes();
  EXPECT_EQ(stats_a->chunk_count, chunks);
  EXPECT_EQ(stats_a->referenced_chunk_count, 2 * chunks);
  EXPECT_EQ(stats_b->chunk_count, stats_a->chunk_count);
}

TEST_F(MultiNodeTest, AKeyMadeOnOneNodeEncryptsAVolumeOnTheOther) {
  auto key = A().kms().CreateKey(kOwner, "made on A", {}, "");
  ASSERT_THAT(key, IsOk());
  auto described = B().kms().DescribeKey(kOwner, key->key_id);
  ASSERT_THAT(described, IsOk());
  EXPECT_EQ(described->arn, key->arn);
  const std::vector<std::byte> data = Pattern(2 * kMiB, 21);
  const std::string snap = Snapshot(B(), data, {.encrypted = true, .kms_key_id = key->key_id});
  auto info = A().DescribeSnapshot(snap);
  ASSERT_THAT(info, IsOk());
  EXPECT_TRUE(info->encrypted);
  EXPECT_EQ(info->kms_key_id, key->arn);
  auto restored = A().CreateVolume({.snapshot_id = snap, .owner = kOwner});
  ASSERT_THAT(restored, IsOk());
  EXPECT_EQ(ReadVolume(A(), restored->id, data.size()), data);
  // A key disabled on one node is refused on the other.
  ASSERT_THAT(A().kms().DisableKey(kOwner, key->key_id), IsOk());
  EXPECT_FALSE(
      B().CreateVolume(
             {.size_bytes = kMiB, .owner = kOwner, .encrypted = true, .kms_key_id = key->key_id})
          .ok());
}

TEST_F(MultiNodeTest, AnImageRegisteredOnOneNodeLaunchesOnTheOther) {
  const std::vector<std::byte> data = Pattern(kMiB, 31);
  const std::string snap = Snapshot(A(), data);
  ImageInfo request;
  request.name = "shared-image";
  request.owner = kOwner;
  BlockDeviceMapping root;
  root.device_name = "/dev/sda1";
  root.ebs = EbsBlockDevice{.snapshot_id = snap};
  request.mappings.push_back(root);
  auto image = A().images().RegisterImage(request);
  ASSERT_THAT(image, IsOk());
  auto on_b = B().images().DescribeImage(image->id);
  ASSERT_THAT(on_b, IsOk());
  EXPECT_EQ(on_b->name, "shared-image");
  // One name per account, across nodes.
  EXPECT_FALSE(B().images().RegisterImage(request).ok());

  auto instance = B().images().RunInstance({.image_id = image->id, .owner = kOwner});
  ASSERT_THAT(instance, IsOk());
  ASSERT_EQ(instance->volumes.size(), 1u);
  std::vector<std::byte> head(kMiB);
  ASSERT_THAT((*B().GetVolume(instance->volumes[0].volume_id))->Read(0, head), IsOk());
  EXPECT_EQ(head, data);
  // The image's snapshot is in use on B: A may not delete it.
  EXPECT_FALSE(A().DeleteSnapshot(snap).ok());
  // A lists and describes B's instance and its volume, and sends changes to B.
  auto listed = A().images().ListInstances();
  ASSERT_THAT(listed, IsOk());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, instance->id);
  EXPECT_EQ(A().images().DescribeInstance(instance->id)->id, instance->id);
  auto stop = A().images().StopInstance(instance->id, false);
  EXPECT_THAT(stop, ::strata::testing::StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(stop.status().message(), ::testing::HasSubstr("runs on node node-"));
  auto root_on_a = A().DescribeVolume(instance->volumes[0].volume_id);
  ASSERT_THAT(root_on_a, IsOk());
  EXPECT_TRUE(root_on_a->elsewhere);
  EXPECT_EQ(root_on_a->attached_to, instance->id);
}

TEST_F(MultiNodeTest, ASnapshotTheOtherNodesVolumeReadsThroughOutlivesItsDeletion) {
  const std::vector<std::byte> data = Pattern(2 * kMiB, 41);
  const std::string snap = Snapshot(A(), data);
  auto restored = B().CreateVolume({.snapshot_id = snap, .owner = kOwner});
  ASSERT_THAT(restored, IsOk());
  ASSERT_THAT(A().DeleteSnapshot(snap), IsOk());
  ASSERT_THAT(A().RunBackgroundWork(), IsOk());
  ASSERT_THAT(A().CollectGarbage(), IsOk());
  EXPECT_FALSE(B().DescribeSnapshot(snap).ok());                // Deleted, for both.
  EXPECT_EQ(ReadVolume(B(), restored->id, data.size()), data);  // Still read through it.

  // Once B's volume goes, B's prune removes the snapshot's data and GC its chunks.
  ASSERT_THAT(B().DeleteVolume(restored->id), IsOk());
  ASSERT_THAT(B().RunBackgroundWork(), IsOk());
  auto collected = A().CollectGarbage();
  ASSERT_THAT(collected, IsOk());
  auto stats = A().GetStats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->chunk_count, 0u);
  b_.reset();
  auto report = ::strata::testing::CheckTestStore(dir_b_.path());
  ASSERT_THAT(report, IsOk());
  EXPECT_TRUE(report->findings.empty()) << report->findings[0];
}

TEST_F(MultiNodeTest, ANodeRestartsWithItsOwnVolumesAndLeavesTheOthersPendingSnapshots) {
  const std::vector<std::byte> data = Pattern(kMiB, 51);
  auto volume = B().CreateVolume({.size_bytes = kMiB, .owner = kOwner});
  ASSERT_THAT(volume, IsOk());
  ASSERT_THAT((*B().GetVolume(volume->id))->Write(0, data), IsOk());
  // B's snapshot is pending (B has not ingested it) while A restarts.
  auto pending = B().CreateSnapshot({.volume_id = volume->id, .owner = kOwner});
  ASSERT_THAT(pending, IsOk());
  a_.reset();
  a_ = OpenNode(dir_a_);
  ASSERT_NE(a_, nullptr);
  EXPECT_EQ(A().DescribeSnapshot(pending->id)->state, SnapshotState::kPending);
  ASSERT_THAT(B().RunBackgroundWork(), IsOk());
  EXPECT_EQ(A().DescribeSnapshot(pending->id)->state, SnapshotState::kCompleted);
  EXPECT_EQ(A().ListVolumes()->size(), 1u);  // B's, listed.
  EXPECT_TRUE(A().ListVolumes()->at(0).elsewhere);
  EXPECT_FALSE(B().ListVolumes()->at(0).elsewhere);
}

TEST_F(MultiNodeTest, ANodeWithAnotherKmsRootKeyCannotUseTheRegionsKeys) {
  auto key = A().kms().CreateKey(kOwner, "made on A", {}, "");
  ASSERT_THAT(key, IsOk());
  TempDir dir_c;
  StoreOptions options;
  options.ceph = ::strata::testing::TestCeph(dir_a_.path());
  options.kms_root_key = RandomSecret(32);
  options.background_work = false;
  auto c = Store::Open(dir_c.path(), options);
  ASSERT_THAT(c, IsOk());
  auto refused = (*c)->DefaultRegion()->CreateVolume(
      {.size_bytes = kMiB, .owner = kOwner, .encrypted = true, .kms_key_id = key->key_id});
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), ::testing::HasSubstr("wrong root key"));
}

// Volumes on RADOS (docs/ceph.md): a volume's head is objects in the cluster, so any node may
// serve it; one node at a time holds its writer lock.

TEST_F(MultiNodeTest, AVolumeAttachedOnTheOtherNodeIsHandedOverWithItsDataAndChanges) {
  constexpr uint64_t kChunk = 64 * 1024;
  const std::vector<std::byte> data = Pattern(2 * kMiB, 61);
  auto created = A().CreateVolume({.size_bytes = 2 * kMiB, .owner = kOwner});
  ASSERT_THAT(created, IsOk());
  const std::string id = created->id;
  Volume* on_a = *A().GetVolume(id);
  ASSERT_THAT(on_a->Write(0, data), IsOk());
  auto first = A().CreateSnapshot({.volume_id = id, .owner = kOwner});
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(A().RunBackgroundWork(), IsOk());
  // One chunk changes after the snapshot, and is flushed.
  const std::vector<std::byte> change = Pattern(kChunk, 62);
  ASSERT_THAT(on_a->Write(5 * kChunk, change), IsOk());
  ASSERT_THAT(on_a->Flush(), IsOk());

  // B attaches it: A uses it for nothing, so A hands it over (its writer lock and records).
  ASSERT_THAT(B().AttachVolume(id, "i-0123456789abcdef0", "/dev/sdf"), IsOk());
  EXPECT_FALSE(A().GetVolume(id).ok());
  auto on_b = B().DescribeVolume(id);
  ASSERT_THAT(on_b, IsOk());
  EXPECT_FALSE(on_b->elsewhere);
  EXPECT_EQ(on_b->attached_to, "i-0123456789abcdef0");
  auto seen_on_a = A().DescribeVolume(id);
  ASSERT_THAT(seen_on_a, IsOk());
  EXPECT_TRUE(seen_on_a->elsewhere);
  EXPECT_EQ(seen_on_a->node, on_b->node);
  std::vector<std::byte> expected = data;
  std::copy(change.begin(), change.end(), expected.begin() + 5 * kChunk);
  EXPECT_EQ(ReadVolume(B(), id, expected.size()), expected);

  // Its changed-block tracking came with it: B's snapshot holds exactly the changed chunk.
  auto second = B().CreateSnapshot({.volume_id = id, .owner = kOwner});
  ASSERT_THAT(second, IsOk());
  ASSERT_THAT(B().RunBackgroundWork(), IsOk());
  auto changed = B().ListChunks(second->id, first->id);
  ASSERT_THAT(changed, IsOk());
  ASSERT_EQ(changed->chunks.size(), 1u);
  EXPECT_EQ(changed->chunks[0].index, 5u);
  // And A's restore of B's snapshot reads B's bytes.
  auto restored = A().CreateVolume({.snapshot_id = second->id, .owner = kOwner});
  ASSERT_THAT(restored, IsOk());
  EXPECT_EQ(ReadVolume(A(), restored->id, expected.size()), expected);
}

TEST_F(MultiNodeTest, AVolumeInUseOnOneNodeIsNotTakenByTheOther) {
  auto created = A().CreateVolume({.size_bytes = kMiB, .owner = kOwner});
  ASSERT_THAT(created, IsOk());
  const std::string id = created->id;
  ASSERT_THAT(A().AttachVolume(id, "i-0123456789abcdef0", "/dev/sdf"), IsOk());
  absl::Status refused = B().AttachVolume(id, "i-0123456789abcdef1", "/dev/sdf");
  EXPECT_THAT(refused, ::strata::testing::StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(refused.message(), ::testing::HasSubstr("is attached to i-0123456789abcdef0"));
  // Detached but held open by a client (a pin, as an NBD connection holds): not handed over.
  ASSERT_THAT(A().DetachVolume(id, ""), IsOk());
  {
    auto pin = A().PinVolume(id);
    ASSERT_THAT(pin, IsOk());
    refused = B().AttachVolume(id, "i-0123456789abcdef1", "/dev/sdf");
    EXPECT_THAT(refused, ::strata::testing::StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(refused.message(), ::testing::HasSubstr("in use on node"));
    EXPECT_THAT(A().GetVolume(id), IsOk());  // Still A's, unchanged.
  }
  EXPECT_THAT(B().AttachVolume(id, "i-0123456789abcdef1", "/dev/sdf"), IsOk());
}

TEST_F(MultiNodeTest, AForcedTakeoverKeepsEveryFlushedWriteAndFencesTheOldHolder) {
  const std::vector<std::byte> flushed = Pattern(kMiB, 71);
  auto created = A().CreateVolume({.size_bytes = kMiB, .owner = kOwner});
  ASSERT_THAT(created, IsOk());
  const std::string id = created->id;
  ASSERT_THAT(A().AttachVolume(id, "i-0123456789abcdef0", "/dev/sdf"), IsOk());
  Volume* on_a = *A().GetVolume(id);
  ASSERT_THAT(on_a->Write(0, flushed), IsOk());
  ASSERT_THAT(on_a->Flush(), IsOk());
  // A is cut off (as if dead): the operator forces the volume to B.
  auto taken = B().TakeOverVolume(id, /*force=*/true);
  ASSERT_THAT(taken, IsOk());
  EXPECT_FALSE(taken->elsewhere);
  EXPECT_TRUE(taken->attached_to.empty());  // A's attachment ended with A.
  EXPECT_EQ(ReadVolume(B(), id, kMiB), flushed);
  // A late write from A is refused by the OSDs (A's client is blocklisted): it never lands.
  const std::vector<std::byte> late = Pattern(kMiB, 72);
  const absl::Status late_write = on_a->Write(0, late);
  const absl::Status late_flush = late_write.ok() ? on_a->Flush() : late_write;
  EXPECT_FALSE(late_flush.ok());
  EXPECT_EQ(ReadVolume(B(), id, kMiB), flushed);
  // B writes on; A, fenced, is gone for good (its store is closed without a clean stop).
  const std::vector<std::byte> next = Pattern(kMiB, 73);
  ASSERT_THAT((*B().GetVolume(id))->Write(0, next), IsOk());
  ASSERT_THAT((*B().GetVolume(id))->Flush(), IsOk());
  EXPECT_EQ(ReadVolume(B(), id, kMiB), next);
  a_.reset();
  EXPECT_EQ(ReadVolume(B(), id, kMiB), next);
}

TEST_F(MultiNodeTest, ChangedBlocksAreExactAfterATakeoverFromANodeThatDidNotHandOver) {
  constexpr uint64_t kChunk = 64 * 1024;
  auto created = A().CreateVolume({.size_bytes = kMiB, .owner = kOwner});
  ASSERT_THAT(created, IsOk());
  const std::string id = created->id;
  Volume* on_a = *A().GetVolume(id);
  const std::vector<std::byte> data = Pattern(kMiB, 81);
  ASSERT_THAT(on_a->Write(0, data), IsOk());
  auto first = A().CreateSnapshot({.volume_id = id, .owner = kOwner});
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(A().RunBackgroundWork(), IsOk());
  // Chunk 3 changes; chunk 9 is rewritten with the bytes it had (not a change); both flushed.
  const std::vector<std::byte> same(data.begin() + 9 * kChunk, data.begin() + 10 * kChunk);
  ASSERT_THAT(on_a->Write(3 * kChunk, Pattern(kChunk, 82)), IsOk());
  ASSERT_THAT(on_a->Write(9 * kChunk, same), IsOk());
  ASSERT_THAT(on_a->Flush(), IsOk());
  // A's changed-block bitmap is in its memory only: B rescans the chunks A held.
  ASSERT_THAT(B().TakeOverVolume(id, /*force=*/true), IsOk());
  Volume* on_b = *B().GetVolume(id);
  auto changes = on_b->Changes(0, kMiB, 100);
  ASSERT_THAT(changes, IsOk());
  std::vector<uint64_t> changed;
  uint64_t pos = 0;
  for (const ChangeExtent& x : *changes) {
    for (uint64_t c = pos / kChunk; x.changed && c < (pos + x.length_bytes) / kChunk; ++c) {
      changed.push_back(c);
    }
    pos += x.length_bytes;
  }
  EXPECT_EQ(changed, std::vector<uint64_t>{3});  // The NBD meta context's view.
  auto second = B().CreateSnapshot({.volume_id = id, .owner = kOwner});
  ASSERT_THAT(second, IsOk());
  ASSERT_THAT(B().RunBackgroundWork(), IsOk());
  auto listed = B().ListChunks(second->id, first->id);
  ASSERT_THAT(listed, IsOk());
  ASSERT_EQ(listed->chunks.size(), 1u);
  EXPECT_EQ(listed->chunks[0].index, 3u);
}

TEST_F(MultiNodeTest, LocksRulesBinAndFastRestoresAreTheRegionsNotANodes) {
  const std::string kept = Snapshot(A(), Pattern(kMiB, 11));
  ASSERT_THAT(A().TagSnapshot(kept, {{"keep", "yes"}}, {}), IsOk());
  const std::string locked = Snapshot(A(), Pattern(kMiB, 12));
  // A rule made on A covers a deletion on B; the bin is one.
  auto rule = A().recycle_bin().CreateRule({.owner = kOwner,
                                            .resource_type = kRecycleSnapshots,
                                            .retention_days = 5,
                                            .resource_tags = {{"keep", "yes"}}});
  ASSERT_THAT(rule, IsOk());
  EXPECT_EQ(B().recycle_bin().GetRule(kOwner, rule->id)->retention_days, 5u);
  ASSERT_THAT(B().DeleteSnapshot(kept), IsOk());
  ASSERT_EQ(A().ListRecycledSnapshots()->size(), 1u);
  EXPECT_THAT(A().DescribeSnapshot(kept), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(A().RestoreSnapshotFromRecycleBin(kept), IsOk());
  EXPECT_THAT(B().DescribeSnapshot(kept), IsOk());
  // A lock taken on B holds on A.
  ASSERT_THAT(B().LockSnapshot(locked, {.mode = "governance", .duration_days = 1}), IsOk());
  EXPECT_EQ(AwsErrorCode(A().DeleteSnapshot(locked)), "SnapshotLocked");
  // Fast snapshot restore enabled on A is listed on B.
  ASSERT_THAT(A().EnableFastSnapshotRestore(kOwner, kept), IsOk());
  auto on_b = B().ListFastSnapshotRestores();
  ASSERT_THAT(on_b, IsOk());
  ASSERT_EQ(on_b->size(), 1u);
  EXPECT_EQ(on_b->front().snapshot_id, kept);
  // A locked rule cannot be deleted from either node.
  ASSERT_THAT(A().recycle_bin().LockRule(kOwner, rule->id, 7),
              StatusIs(absl::StatusCode::kInvalidArgument))
      << "a tag-level rule cannot be locked";
  auto region_rule = B().recycle_bin().CreateRule({.owner = kOwner,
                                                   .resource_type = kRecycleImages,
                                                   .retention_days = 1,
                                                   .unlock_delay_days = 7});
  ASSERT_THAT(region_rule, IsOk());
  EXPECT_THAT(A().recycle_bin().DeleteRule(kOwner, region_rule->id),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(MultiNodeTest, ASnapshotArchivedOnOneNodeIsRestoredOnTheOther) {
  ASSERT_FALSE(::strata::testing::TestStoreOptions(dir_a_.path()).archive.s3_endpoint.empty())
      << "the test cluster has no radosgw (scripts/ceph_cluster.sh with CEPH_WITH_RGW=1)";
  const std::string snap = Snapshot(A(), Pattern(kMiB, 13));
  ASSERT_THAT(A().ArchiveSnapshot(snap), IsOk());
  ASSERT_THAT(A().RunBackgroundWork(), IsOk());
  EXPECT_EQ(B().DescribeSnapshot(snap)->storage_tier, "archive");
  ASSERT_THAT(A().CollectGarbage(), IsOk());
  EXPECT_EQ(A().GetStats()->referenced_chunk_count, 0u);
  // B restores it from the bucket A wrote; A reads it.
  ASSERT_THAT(B().RestoreArchivedSnapshot(snap, {.permanent = true}), IsOk());
  ASSERT_THAT(B().RunBackgroundWork(), IsOk());
  EXPECT_EQ(A().DescribeSnapshot(snap)->storage_tier, "standard");
  auto volume = A().CreateVolume({.snapshot_id = snap, .owner = kOwner});
  ASSERT_THAT(volume, IsOk());
  EXPECT_EQ(ReadVolume(A(), volume->id, kMiB), Pattern(kMiB, 13));
}

}  // namespace
}  // namespace strata
