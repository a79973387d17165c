// strata-fsck's checks: a sound store has no findings; corrupt bytes and broken refcounts are
// reported, naming what is wrong.

#include "strata/fsck.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "strata/store.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::Pattern;
using ::strata::testing::StatusIs;
using ::testing::HasSubstr;

class FsckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.background_work = false;
    auto store = Store::Open(dir_.path(), options);
    ASSERT_THAT(store, IsOk());
    Region* region = (*store)->DefaultRegion();
    auto vol = region->CreateVolume({.size_bytes = 1 << 20});
    ASSERT_THAT(vol, IsOk());
    ASSERT_THAT((*region->GetVolume(vol->id))->Write(0, Pattern(1 << 20, 1)), IsOk());
    auto snap = region->CreateSnapshot({.volume_id = vol->id});
    ASSERT_THAT(region->RunBackgroundWork(), IsOk());
    snapshot_id_ = snap->id;
  }
  // RADOS: the region's data pool, and the name and record of its first chunk object.
  rados::Pool DataPool() {
    return ::strata::testing::TestCluster()->DataPool(
        absl::StrCat(::strata::testing::TestCeph(dir_.path())->name_space, ".local-1"));
  }
  // The data pool holds the volume's head objects (`head.<vol>.<n>`) beside the chunks, and a
  // listing's order is the placement hash's: pick a chunk by its name.
  void FirstChunkObject(std::string* name, std::string* record) {
    std::vector<std::string> names;
    ASSERT_EQ(DataPool().List(&names), 0);
    const auto chunk = std::find_if(names.begin(), names.end(),
                                    [](const std::string& n) { return n.starts_with("chunk."); });
    ASSERT_NE(chunk, names.end());
    *name = *chunk;
    ASSERT_GT(DataPool().Read(*name, 1 << 20, record), 0);
  }
  // Flips the byte at `offset` of the first stored chunk's record (a segment file or a RADOS
  // object).
  void CorruptAChunk(uint64_t offset) {
    if (::strata::testing::OnRados()) {
      std::string name, record;
      ASSERT_NO_FATAL_FAILURE(FirstChunkObject(&name, &record));
      record[offset] = '\x5a';
      ASSERT_EQ(DataPool().WriteFull(name, record), 0);
      return;
    }
    const std::string path = SegmentPath();
    ASSERT_FALSE(path.empty());
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(offset);
    f.put('\x5a');
  }
  std::string SegmentPath() {
    for (const auto& e :
         std::filesystem::directory_iterator(dir_.path() + "/regions/local-1/segments")) {
      if (std::filesystem::file_size(e.path()) > 0) return e.path().string();
    }
    return "";
  }
  ::strata::testing::TempDir dir_;
  std::string snapshot_id_;
};

TEST_F(FsckTest, SoundStoreHasNoFindings) {
  auto report = ::strata::testing::CheckTestStore(dir_.path());
  ASSERT_THAT(report, IsOk());
  EXPECT_TRUE(report->findings.empty());
  EXPECT_EQ(report->snapshots_checked, 1u);
  EXPECT_EQ(report->chunks_checked, 16u);
  EXPECT_EQ(report->manifest_entries_checked, 16u);
}

TEST_F(FsckTest, CorruptByteIsReportedNamingTheChunk) {
  ASSERT_NO_FATAL_FAILURE(CorruptAChunk(5000));
  auto report = ::strata::testing::CheckTestStore(dir_.path());
  ASSERT_THAT(report, IsOk());
  ASSERT_EQ(report->findings.size(), 1u);
  EXPECT_THAT(report->findings[0], HasSubstr("checksum mismatch"));
  EXPECT_THAT(report->findings[0], HasSubstr("chunk d0:"));
  // Reading the snapshot now fails with kDataLoss naming the chunk: never wrong data.
  auto store = Store::Open(dir_.path(), ::strata::testing::TestStoreOptions(dir_.path()));
  ASSERT_THAT(store, IsOk());
  auto snap = (*store)->DefaultRegion()->OpenSnapshot(snapshot_id_);
  ASSERT_THAT(snap, IsOk());
  std::vector<std::byte> out(1 << 20);
  const absl::Status s = (*snap)->Read(0, out);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(s.message(), HasSubstr("chunk d0:"));
}

TEST_F(FsckTest, HeadObjectsOfNoVolumeAreReported) {
  if (!::strata::testing::OnRados()) GTEST_SKIP() << "RADOS backend only: heads as objects";
  // A deletion interrupted between the volume's record and its head objects leaves objects no
  // node's record names; the sound store's own volume's head objects are not findings.
  ASSERT_EQ(DataPool().WriteFull("head.vol-0123456789abcdef0.3", "stray"), 0);
  ASSERT_EQ(DataPool().WriteFull("head.vol-0123456789abcdef0.7", "stray"), 0);
  auto report = ::strata::testing::CheckTestStore(dir_.path());
  ASSERT_THAT(report, IsOk());
  ASSERT_EQ(report->findings.size(), 1u);
  EXPECT_THAT(report->findings[0],
              HasSubstr("2 head object(s) of volume vol-0123456789abcdef0, which no node has"));
}

TEST_F(FsckTest, LeakedChunkObjectsAreReportedUntilCollected) {
  if (!::strata::testing::OnRados()) GTEST_SKIP() << "RADOS backend only: objects per chunk";
  // A chunk stored by an ingest that never committed (its node died): an object with no index
  // entry. Past the grace period (0 in tests) it is a leak; garbage collection frees it.
  std::string name, record;
  ASSERT_NO_FATAL_FAILURE(FirstChunkObject(&name, &record));
  ASSERT_EQ(DataPool().WriteFull("chunk." + std::string(44, 'e'), record), 0);
  auto report = ::strata::testing::CheckTestStore(dir_.path());
  ASSERT_THAT(report, IsOk());
  ASSERT_EQ(report->findings.size(), 1u);
  EXPECT_THAT(report->findings[0], HasSubstr("1 stored chunks have no index entry"));
  {
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.background_work = false;
    auto store = Store::Open(dir_.path(), options);
    ASSERT_THAT(store, IsOk());
    ASSERT_THAT((*store)->DefaultRegion()->CollectGarbage(), IsOk());
  }
  report = ::strata::testing::CheckTestStore(dir_.path());
  ASSERT_THAT(report, IsOk());
  EXPECT_TRUE(report->findings.empty());
}

TEST_F(FsckTest, MissingStoreAndLockedStoreAreErrors) {
  EXPECT_THAT(CheckStore(dir_.path() + "/nope"), StatusIs(absl::StatusCode::kNotFound));
  auto store = Store::Open(dir_.path(), ::strata::testing::TestStoreOptions(dir_.path()));
  ASSERT_THAT(store, IsOk());
  EXPECT_THAT(::strata::testing::CheckTestStore(dir_.path()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace strata
