// Cross-region copy between two regions of one store, through the transfer protocol over a
// socketpair: full then incremental copies, faults on the link, encryption, admission of
// time-based copies, and the copy journal.

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "strata/store.h"
#include "strata/transfer.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::Pattern;
using ::strata::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kChunk = kChunkSizeBytesDefault;
constexpr char kAccount[] = "111122223333";

class CopyTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open(const std::string& link = "bandwidth=2GB,rtt=1ms,streams=3") {
    store_.reset();
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.kms_root_key = root_;
    options.links[""] = *ParseLinkModel(link);
    options.copy_retry_window_ms = 20'000;
    auto store = Store::Open(dir_.path(), options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    if (store_->ListRegions().size() == 1) {
      ASSERT_THAT(store_->CreateRegion("west-1"), IsOk());
    }
    east_ = store_->DefaultRegion();
    west_ = *store_->GetRegion("west-1");
  }

  std::string NewVolume(uint64_t size, bool encrypted = false) {
    auto v = east_->CreateVolume({.size_bytes = size, .owner = kAccount, .encrypted = encrypted});
    EXPECT_THAT(v, IsOk());
    return v->id;
  }
  void Write(const std::string& vol, uint64_t offset, const std::vector<std::byte>& data) {
    ASSERT_THAT((*east_->GetVolume(vol))->Write(offset, data), IsOk());
  }
  std::string Snap(const std::string& vol) {
    auto s = east_->CreateSnapshot({.volume_id = vol, .owner = kAccount});
    EXPECT_THAT(s, IsOk());
    auto done = east_->WaitForSnapshot(s->id, 30'000);
    EXPECT_EQ(done->state, SnapshotState::kCompleted);
    return s->id;
  }
  absl::StatusOr<SnapshotInfo> StartCopy(const std::string& snap,
                                         CreateSnapshotRequest request = {}, uint32_t minutes = 0) {
    if (request.owner.empty()) request.owner = kAccount;
    return store_->CopySnapshotAcrossRegions("west-1", {.source_region = east_->name(),
                                                        .source_snapshot_id = snap,
                                                        .request = request,
                                                        .completion_minutes = minutes});
  }
  // Copies and waits; returns the copy's record.
  CopyRecord Copy(const std::string& snap, CreateSnapshotRequest request = {}) {
    auto started = StartCopy(snap, request);
    EXPECT_THAT(started, IsOk());
    if (!started.ok()) return {};
    EXPECT_EQ(started->state, SnapshotState::kPending);
    auto done = west_->WaitForSnapshot(started->id, 60'000);
    EXPECT_THAT(done, IsOk());
    EXPECT_EQ(done->state, SnapshotState::kCompleted) << done->state_message;
    // The record is final just after the snapshot completes.
    absl::StatusOr<CopyRecord> record;
    for (int i = 0; i < 3000; ++i) {
      record = store_->DescribeCopy(started->id);
      if (!record.ok() || record->state != "pending") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_THAT(record, IsOk());
    EXPECT_EQ(record->state, "completed") << record->message;
    return *record;
  }
  std::vector<std::byte> Read(Region* region, const std::string& snap) {
    auto s = region->OpenSnapshot(snap);
    EXPECT_THAT(s, IsOk());
    if (!s.ok()) return {};
    std::vector<std::byte> out((*s)->size_bytes());
    EXPECT_THAT((*s)->Read(0, out), IsOk());
    return out;
  }

  ::strata::testing::TempDir dir_;
  SecretBytes root_ = RandomSecret(32);
  std::unique_ptr<Store> store_;
  Region* east_ = nullptr;
  Region* west_ = nullptr;
};

TEST_F(CopyTest, FirstCopyIsFullLaterOnesSendOnlyTheChangedChunks) {
  const uint64_t size = 8 * kMiB;  // 128 chunks.
  const std::string vol = NewVolume(size);
  Write(vol, 0, Pattern(6 * kMiB, 1));  // 96 chunks hold data; the rest is a hole.
  const std::string first = Snap(vol);
  const CopyRecord full = Copy(first);
  EXPECT_EQ(full.chunks_total, 96u);
  EXPECT_EQ(full.chunks_done, 96u);
  EXPECT_EQ(full.chunks_skipped, 0u);
  EXPECT_TRUE(full.base_source_snapshot.empty());
  EXPECT_EQ(Read(west_, full.snapshot_id), Read(east_, first));

  // Change two chunks (1.5%), zero a third, and write one past the old data.
  Write(vol, 5 * kChunk, Pattern(kChunk, 2));
  Write(vol, 40 * kChunk + 4096, Pattern(4096, 3));
  ASSERT_THAT((*east_->GetVolume(vol))->Trim(70 * kChunk, kChunk), IsOk());
  Write(vol, 100 * kChunk, Pattern(kChunk, 4));
  const std::string second = Snap(vol);
  const CopyRecord incremental = Copy(second);
  EXPECT_EQ(incremental.base_source_snapshot, first);
  EXPECT_EQ(incremental.base_snapshot_id, full.snapshot_id);
  EXPECT_EQ(incremental.chunks_total, 3u);  // The zeroed chunk crosses as a manifest entry.
  EXPECT_EQ(incremental.changed_bytes, 3 * kChunk);
  EXPECT_EQ(incremental.chunks_skipped, 96u - 3u);
  // At most the changed chunks plus framing (the pattern does not compress).
  EXPECT_LE(incremental.bytes_sent, 3 * kChunk + 4096);
  EXPECT_LT(incremental.bytes_sent * 10, full.bytes_sent);
  EXPECT_EQ(Read(west_, incremental.snapshot_id), Read(east_, second));
  // The first copy is untouched by the second.
  EXPECT_EQ(Read(west_, full.snapshot_id), Read(east_, first));

  // The journal outlives the process.
  Open();
  auto again = store_->DescribeCopy(incremental.snapshot_id);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->state, "completed");
  EXPECT_EQ(again->bytes_sent, incremental.bytes_sent);
}

TEST_F(CopyTest, CompressibleChunksCrossCompressed) {
  const std::string vol = NewVolume(4 * kMiB);
  Write(vol, 0, std::vector<std::byte>(4 * kMiB, std::byte{'a'}));
  const CopyRecord record = Copy(Snap(vol));
  EXPECT_EQ(record.changed_bytes, 4 * kMiB);
  EXPECT_LT(record.bytes_sent, kMiB / 8);
}

TEST_F(CopyTest, DamagedAndDroppedChunksAreSentAgainAndNeverLand) {
  Open("bandwidth=2GB,rtt=1ms,streams=2,corrupt=0.2,drop=0.05");
  const std::string vol = NewVolume(8 * kMiB);
  Write(vol, 0, Pattern(8 * kMiB, 5));
  const std::string snap = Snap(vol);
  const CopyRecord record = Copy(snap);
  EXPECT_GT(record.retries, 5u);
  EXPECT_EQ(record.chunks_done, 128u);
  EXPECT_EQ(Read(west_, record.snapshot_id), Read(east_, snap));
}

TEST_F(CopyTest, NothingOfACopyIsReadableBeforeEveryChunkIsVerified) {
  Open("bandwidth=2MB,rtt=5ms,streams=2");  // 2 MiB of data: about a second on the link.
  const std::string vol = NewVolume(2 * kMiB);
  Write(vol, 0, Pattern(2 * kMiB, 12));
  const std::string snap = Snap(vol);
  auto started = StartCopy(snap);
  ASSERT_THAT(started, IsOk());
  EXPECT_THAT(west_->OpenSnapshot(started->id), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_FALSE(
      west_->CreateVolume({.size_bytes = 2 * kMiB, .snapshot_id = started->id, .owner = kAccount})
          .ok());
  auto done = west_->WaitForSnapshot(started->id, 60'000);
  ASSERT_THAT(done, IsOk());
  EXPECT_EQ(done->state, SnapshotState::kCompleted);
  EXPECT_EQ(Read(west_, started->id), Read(east_, snap));
}

TEST_F(CopyTest, EncryptedCopiesUseTheDestinationKeyAndPlainOnesMayBeEncrypted) {
  const std::string vol = NewVolume(2 * kMiB, /*encrypted=*/true);
  Write(vol, 0, Pattern(2 * kMiB, 6));
  const std::string snap = Snap(vol);
  // Asking for an unencrypted copy of an encrypted snapshot still encrypts it.
  const CopyRecord record = Copy(snap, {.encrypted = false});
  auto info = west_->DescribeSnapshot(record.snapshot_id);
  ASSERT_THAT(info, IsOk());
  EXPECT_TRUE(info->encrypted);
  EXPECT_THAT(info->kms_key_id, HasSubstr(":key/"));
  EXPECT_NE(info->kms_key_id, east_->DescribeSnapshot(snap)->kms_key_id);  // Per-region keys.
  EXPECT_EQ(Read(west_, record.snapshot_id), Read(east_, snap));

  const std::string plain = NewVolume(kMiB);
  Write(plain, 0, Pattern(kMiB, 7));
  const std::string plain_snap = Snap(plain);
  const CopyRecord encrypted = Copy(plain_snap, {.encrypted = true});
  EXPECT_TRUE(west_->DescribeSnapshot(encrypted.snapshot_id)->encrypted);
  EXPECT_EQ(Read(west_, encrypted.snapshot_id), Read(east_, plain_snap));
}

// A shared encrypted snapshot leaves its region only for an account that may decrypt under its
// key: sharing the snapshot is not sharing the key (AWS requires kms:Decrypt on the source key).
TEST_F(CopyTest, ASharedEncryptedSnapshotIsNotCopiedWithoutItsKey) {
  constexpr char kOther[] = "222222222222";
  const std::string vol = NewVolume(kMiB, /*encrypted=*/true);
  Write(vol, 0, Pattern(kMiB, 9));
  const std::string snap = Snap(vol);
  ASSERT_THAT(east_->SetSnapshotPermissions(snap, {kOther}), IsOk());
  const size_t before = west_->ListSnapshots()->size();
  EXPECT_THAT(StartCopy(snap, {.owner = kOther, .encrypted = true}),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(west_->ListSnapshots()->size(), before);
  // With a grant on the key, the same copy goes through and reads the same.
  const std::string key = east_->DescribeSnapshot(snap)->kms_key_id;
  ASSERT_THAT(east_->kms().CreateGrant(kAccount, key, kOther, {"Decrypt", "DescribeKey"}, "", ""),
              IsOk());
  const CopyRecord copied = Copy(snap, {.owner = kOther, .encrypted = true});
  EXPECT_EQ(Read(west_, copied.snapshot_id), Read(east_, snap));
}

TEST_F(CopyTest, BadRequestsAreRefusedAndCreateNothing) {
  const std::string vol = NewVolume(kMiB);
  Write(vol, 0, Pattern(kMiB, 8));
  const std::string snap = Snap(vol);
  const size_t before = west_->ListSnapshots()->size();
  EXPECT_THAT(StartCopy("snap-0000000000000000"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(StartCopy(snap, {.owner = "999999999999"}), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(StartCopy(snap, {}, 10), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(StartCopy(snap, {}, 3000), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(store_->CopySnapshotAcrossRegions(
                  "west-1", {.source_region = "nowhere-1", .source_snapshot_id = snap}),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_EQ(west_->ListSnapshots()->size(), before);
  EXPECT_THAT(ParseLinkModel("bandwidth=fast"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseLinkModel("latency=5ms"), StatusIs(absl::StatusCode::kInvalidArgument));
  auto link = ParseLinkModel("bandwidth=50MB,rtt=0.1s,streams=2");
  ASSERT_THAT(link, IsOk());
  EXPECT_EQ(link->bandwidth_bytes_per_second, 50'000'000u);
  EXPECT_EQ(link->rtt_ms, 100u);
  EXPECT_EQ(link->streams, 2u);
}

TEST_F(CopyTest, ATimeBasedCopyIsAdmittedOnlyWhenTheLinkCanMakeIt) {
  Open("bandwidth=1KB,rtt=1ms");  // 1 kB/s: 1 MiB needs more than 15 minutes.
  const std::string vol = NewVolume(kMiB);
  Write(vol, 0, Pattern(kMiB, 9));
  const std::string snap = Snap(vol);
  auto refused = StartCopy(snap, {}, 15);
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(refused.status().message(), HasSubstr("cannot complete in 15 minutes"));
  // The region's limit is shared: a copy that needs 1.2 kB/s for 15 minutes fits in 2 kB/s
  // once, and the next does not while the first holds its share.
  Open("bandwidth=2GB,rtt=1ms,region=2KB,streams=1");
  auto first = StartCopy(snap, {}, 15);
  ASSERT_THAT(first, IsOk());
  auto second = StartCopy(snap, {}, 15);
  EXPECT_THAT(second, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(second.status().message(), HasSubstr("gives 0.0 MB/s"));
  Open("bandwidth=2GB,rtt=1ms");
  auto admitted = StartCopy(snap, {}, 15);
  ASSERT_THAT(admitted, IsOk());
  EXPECT_EQ(west_->WaitForSnapshot(admitted->id, 60'000)->state, SnapshotState::kCompleted);
  EXPECT_EQ(store_->DescribeCopy(admitted->id)->completion_minutes, 15u);
}

// A store stopped cleanly mid-copy: the copy stays pending and resumes at the next open,
// fetching only the chunks it had not recorded.
TEST_F(CopyTest, ACopyInterruptedByAStopResumesWhenTheStoreOpensAgain) {
  Open("bandwidth=2MB,rtt=5ms,streams=2");  // 4 MiB: about two seconds on the link.
  const std::string vol = NewVolume(4 * kMiB);
  Write(vol, 0, Pattern(4 * kMiB, 13));
  const std::string snap = Snap(vol);
  auto started = StartCopy(snap);
  ASSERT_THAT(started, IsOk());
  for (int i = 0; i < 500 && store_->DescribeCopy(started->id)->chunks_done < 20; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Open("bandwidth=2MB,rtt=5ms,streams=2");
  EXPECT_EQ(west_->DescribeSnapshot(started->id)->state, SnapshotState::kPending);
  auto stopped = store_->DescribeCopy(started->id);
  ASSERT_THAT(stopped, IsOk());
  EXPECT_GE(stopped->chunks_done, 20u);  // Recorded at the stop.
  EXPECT_LT(stopped->chunks_done, 64u);
  auto done = west_->WaitForSnapshot(started->id, 60'000);
  ASSERT_THAT(done, IsOk());
  EXPECT_EQ(done->state, SnapshotState::kCompleted) << done->state_message;
  EXPECT_EQ(Read(west_, started->id), Read(east_, snap));
  absl::StatusOr<CopyRecord> record;
  for (int i = 0; i < 3000; ++i) {
    record = store_->DescribeCopy(started->id);
    if (record->state != "pending") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(record->state, "completed") << record->message;
  EXPECT_EQ(record->chunks_done, 64u);
  EXPECT_EQ(record->changed_bytes, 4 * kMiB);  // Every chunk landed once in the record.
  EXPECT_GE(record->retries, 1u);              // The restart.
}

// The mechanism a copy resumes on is a direct snapshot asked to survive a restart (the test
// above resumes one). One that no journaled copy resumes, here one made without a copy, would
// stay pending for ever: the store fails it when it opens (as a copy whose journal record was
// lost in a crash), deletes its builder, and fails the one not asked to survive as before.
TEST_F(CopyTest, ADirectSnapshotLeftOpenByNoCopyFailsWhenTheStoreOpens) {
  auto kept =
      west_->StartDirectSnapshot(2 * kMiB, "", {.owner = kAccount, .survive_restart = true});
  auto lost = west_->StartDirectSnapshot(2 * kMiB, "", {.owner = kAccount});
  ASSERT_THAT(kept, IsOk());
  ASSERT_THAT(lost, IsOk());
  auto builder = west_->GetVolume(kept->builder_volume_id);
  ASSERT_THAT(builder, IsOk());
  ASSERT_THAT((*builder)->Write(kChunk, Pattern(kChunk, 10)), IsOk());
  ASSERT_THAT((*builder)->Flush(), IsOk());
  EXPECT_EQ(west_->OpenDirectSnapshots().size(), 2u);
  Open();
  EXPECT_EQ(west_->DescribeSnapshot(lost->snapshot.id)->state, SnapshotState::kError);
  auto orphan = west_->DescribeSnapshot(kept->snapshot.id);
  ASSERT_THAT(orphan, IsOk());
  EXPECT_EQ(orphan->state, SnapshotState::kError);
  EXPECT_THAT(orphan->state_message, ::testing::HasSubstr("cannot resume"));
  EXPECT_TRUE(west_->OpenDirectSnapshots().empty());
  EXPECT_THAT(west_->GetVolume(kept->builder_volume_id), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace strata
