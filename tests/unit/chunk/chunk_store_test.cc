// The chunk store on the suite's backend (test_backend.h): segment files, or an object per chunk
// in RADOS. Dedup by compared bytes, checksums on every read, refcounts, GC; on RADOS also
// several nodes at once (two stores over one catalog object stand for two stratad processes).

#include "chunk/chunk_store.h"

#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "chunk/segment_format.h"
#include "meta/catalog.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata::chunk {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::Pattern;
using ::strata::testing::StatusIs;
using ::testing::HasSubstr;

constexpr size_t kChunk = 64 * 1024;

class ChunkStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(false); }
  void Open(bool compression) {
    store_.reset();
    catalog_.reset();
    OpenInto(catalog_, store_, {.compression = compression, .gc_grace_seconds = 0});
  }
  // Opens a catalog and chunk store on the suite's backend: on RADOS, another instance over the
  // same objects (another node).
  void OpenInto(std::unique_ptr<meta::Catalog>& catalog, std::unique_ptr<ChunkStore>& store,
                const ChunkStoreOptions& options) {
    if (rados_ != nullptr) {
      auto opened = meta::Catalog::OpenRados(rados_->IndexPool(ns_), "catalog");
      ASSERT_THAT(opened, IsOk());
      catalog = std::move(*opened);
      auto chunks = ChunkStore::OpenRadosStore(rados_->DataPool(ns_), catalog.get(), options);
      ASSERT_THAT(chunks, IsOk());
      store = std::move(*chunks);
      return;
    }
    auto opened = meta::Catalog::OpenRocksDb(env_.get(), dir_.path() + "/catalog");
    ASSERT_THAT(opened, IsOk());
    catalog = std::move(*opened);
    auto chunks =
        ChunkStore::OpenSegmentStore(env_.get(), dir_.path() + "/segments", catalog.get(), options);
    ASSERT_THAT(chunks, IsOk());
    store = std::move(*chunks);
  }
  ChunkKey PutAndCommit(const std::vector<std::byte>& data) {
    auto key = store_->Put(kPlaintextDomain, data);
    EXPECT_THAT(key, IsOk());
    EXPECT_THAT(store_->Commit({}, std::span(&*key, 1), {}), IsOk());
    return *key;
  }
  std::optional<ChunkLocation> Location(const ChunkKey& key) {
    std::optional<ChunkLocation> found;
    EXPECT_THAT(store_->ForEachChunk([&](const ChunkKey& k, const ChunkLocation& loc) {
      if (k == key) found = loc;
    }),
                IsOk());
    return found;
  }
  // docs/formats/rados.md: a chunk's object is "chunk." and the hex of its key.
  static std::string ObjectName(const ChunkKey& key) {
    return absl::StrCat("chunk.", absl::BytesToHexString(key.Encode()));
  }
  void FlipByte(const ChunkKey& key, uint64_t offset_in_record) {
    if (rados_ != nullptr) {
      rados::Pool data = rados_->DataPool(ns_);
      std::string bytes;
      ASSERT_GT(data.Read(ObjectName(key), 1 << 20, &bytes), 0);
      bytes[offset_in_record] ^= 0x40;
      ASSERT_EQ(data.WriteFull(ObjectName(key), bytes), 0);
      return;
    }
    const std::optional<ChunkLocation> loc = Location(key);
    ASSERT_TRUE(loc.has_value());
    auto file = env_->OpenFile(store_->SegmentPath(loc->segment_id), false);
    ASSERT_THAT(file, IsOk());
    std::byte b[1];
    ASSERT_THAT((*file)->Read(loc->offset_bytes + offset_in_record, b), IsOk());
    b[0] ^= std::byte{0x40};
    ASSERT_THAT((*file)->Write(loc->offset_bytes + offset_in_record, b), IsOk());
  }

  ::strata::testing::TempDir dir_;
  const std::shared_ptr<rados::Cluster> rados_ = ::strata::testing::TestCluster();
  const std::string ns_ =
      rados_ == nullptr ? "" : ::strata::testing::TestCeph(dir_.path())->name_space;
  std::unique_ptr<Env> env_ = NewMemEnv();
  std::unique_ptr<meta::Catalog> catalog_;
  std::unique_ptr<ChunkStore> store_;
};

// A store of many segments keeps only options.max_open_segments of them open (counted in this
// process's descriptors), and reads every chunk from whichever segment it is in.
TEST(SegmentChunkStoreTest, OpenSegmentsAreBoundedAndEveryChunkStillReads) {
  if (::strata::testing::TestCluster() != nullptr) GTEST_SKIP() << "segment files only";
  ::strata::testing::TempDir dir;
  auto catalog = meta::Catalog::OpenRocksDb(Env::Default(), dir.path() + "/catalog");
  ASSERT_THAT(catalog, IsOk());
  auto store = ChunkStore::OpenSegmentStore(Env::Default(), dir.path() + "/segments",
                                            catalog->get(), {.max_open_segments = 3});
  ASSERT_THAT(store, IsOk());
  auto open_segments = [&] {
    int n = 0;
    for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      const auto target = std::filesystem::read_symlink(fd.path(), ec);
      if (!ec && target.string().find(dir.path() + "/segments/") == 0) ++n;
    }
    return n;
  };
  std::vector<std::pair<ChunkKey, std::vector<std::byte>>> chunks;
  for (int i = 0; i < 10; ++i) {
    std::vector<std::byte> data = Pattern(kChunk, 100 + i);
    auto key = (*store)->Put(kPlaintextDomain, data);
    ASSERT_THAT(key, IsOk());
    ASSERT_THAT((*store)->Commit({}, std::span(&*key, 1), {}), IsOk());
    ASSERT_THAT((*store)->CollectGarbage(), IsOk());  // Seals the segment: one per chunk.
    chunks.push_back({*key, std::move(data)});
  }
  EXPECT_EQ((*(*store)->GetStats()).segment_count, 10u);
  for (int round = 0; round < 2; ++round) {
    for (const auto& [key, data] : chunks) {
      std::vector<std::byte> out(kChunk);
      ASSERT_THAT((*store)->Read(key, out), IsOk());
      EXPECT_EQ(out, data);
      EXPECT_LE(open_segments(), 3);
    }
  }
}

TEST_F(ChunkStoreTest, PutReadRoundTripAndDedup) {
  const auto data = Pattern(kChunk, 1);
  const ChunkKey a = PutAndCommit(data);
  const ChunkKey b = PutAndCommit(data);
  EXPECT_EQ(a, b);
  EXPECT_EQ(Location(a)->refcount, 2u);
  std::vector<std::byte> out(kChunk);
  ASSERT_THAT(store_->Read(a, out), IsOk());
  EXPECT_EQ(out, data);
  EXPECT_NE(PutAndCommit(Pattern(kChunk, 2)), a);
}

TEST_F(ChunkStoreTest, FlippedPayloadByteIsDataLossNamingTheChunk) {
  const ChunkKey key = PutAndCommit(Pattern(kChunk, 3));
  FlipByte(key, kRecordHeaderBytes + 100);
  std::vector<std::byte> out(kChunk);
  const absl::Status s = store_->Read(key, out);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(s.message(), HasSubstr(key.ToString()));
  EXPECT_THAT(store_->VerifyRecord(key, *Location(key)), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(ChunkStoreTest, FlippedHeaderByteIsDataLoss) {
  const ChunkKey key = PutAndCommit(Pattern(kChunk, 4));
  FlipByte(key, 0);
  std::vector<std::byte> out(kChunk);
  EXPECT_THAT(store_->Read(key, out), StatusIs(absl::StatusCode::kDataLoss));
}

Fingerprint ConstantFingerprint(uint32_t, std::span<const std::byte>) { return Fingerprint{}; }

TEST_F(ChunkStoreTest, ForcedFingerprintCollisionNeverSharesData) {
  SetFingerprintFnForTesting(&ConstantFingerprint);
  const auto x = Pattern(kChunk, 5);
  const auto y = Pattern(kChunk, 6);
  const ChunkKey kx = PutAndCommit(x);
  const ChunkKey ky = PutAndCommit(y);
  const ChunkKey kx2 = PutAndCommit(x);
  SetFingerprintFnForTesting(nullptr);
  EXPECT_EQ(kx.fingerprint, ky.fingerprint);
  EXPECT_NE(kx, ky);
  EXPECT_EQ(kx, kx2);
  std::vector<std::byte> out(kChunk);
  ASSERT_THAT(store_->Read(ky, out), IsOk());
  EXPECT_EQ(out, y);
  ASSERT_THAT(store_->Read(kx, out), IsOk());
  EXPECT_EQ(out, x);
}

TEST_F(ChunkStoreTest, CompressedRecordsReadBack) {
  Open(true);
  std::vector<std::byte> text(kChunk, std::byte{'z'});
  const ChunkKey key = PutAndCommit(text);
  EXPECT_LT(Location(key)->stored_length, kChunk / 10);
  std::vector<std::byte> out(kChunk);
  ASSERT_THAT(store_->Read(key, out), IsOk());
  EXPECT_EQ(out, text);
}

TEST_F(ChunkStoreTest, GarbageCollectionKeepsReferencedAndReclaimsTheRest) {
  std::vector<ChunkKey> keys;
  for (int i = 0; i < 20; ++i) keys.push_back(PutAndCommit(Pattern(kChunk, 100 + i)));
  // Unreferenced: refcount back to zero for all but two.
  std::vector<ChunkKey> drops(keys.begin() + 2, keys.end());
  ASSERT_THAT(store_->Commit({}, {}, drops), IsOk());
  Open(false);  // Start a new active segment so the old one can be compacted.
  auto reclaimed = store_->CollectGarbage();
  ASSERT_THAT(reclaimed, IsOk());
  EXPECT_GE(*reclaimed, 18 * kChunk);
  auto stats = store_->GetStats();
  EXPECT_EQ(stats->chunk_count, 2u);
  std::vector<std::byte> out(kChunk);
  ASSERT_THAT(store_->Read(keys[0], out), IsOk());
  EXPECT_EQ(out, Pattern(kChunk, 100));
  EXPECT_THAT(store_->Read(keys[5], out), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ChunkStoreTest, PinnedUncommittedChunkSurvivesGarbageCollection) {
  auto key = store_->Put(kPlaintextDomain, Pattern(kChunk, 7));
  ASSERT_THAT(key, IsOk());
  ASSERT_THAT(store_->CollectGarbage(), IsOk());
  ASSERT_THAT(store_->Commit({}, std::span(&*key, 1), {}), IsOk());
  std::vector<std::byte> out(kChunk);
  EXPECT_THAT(store_->Read(*key, out), IsOk());
}

TEST_F(ChunkStoreTest, SameNewChunkCommittedByTwoSessionsCountsTwice) {
  // Two pending snapshots store the same new data; each commits its own reference.
  const auto data = Pattern(kChunk, 9);
  auto first = store_->Put(kPlaintextDomain, data);
  auto second = store_->Put(kPlaintextDomain, data);
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(second, IsOk());
  ASSERT_EQ(*first, *second);
  ASSERT_THAT(store_->Commit({}, std::span(&*first, 1), {}), IsOk());
  ASSERT_THAT(store_->Commit({}, std::span(&*second, 1), {}), IsOk());
  EXPECT_EQ(Location(*first)->refcount, 2u);
  // Dropping one reference keeps the chunk through garbage collection.
  ASSERT_THAT(store_->Commit({}, {}, std::span(&*first, 1)), IsOk());
  ASSERT_THAT(store_->CollectGarbage(), IsOk());
  std::vector<std::byte> out(kChunk);
  ASSERT_THAT(store_->Read(*first, out), IsOk());
  EXPECT_EQ(out, data);
}

// Several nodes (RADOS only: the local backend has one process by its data directory's lock).
class MultiNodeChunkStoreTest : public ChunkStoreTest {
 protected:
  void SetUp() override {
    if (rados_ == nullptr) GTEST_SKIP() << "RADOS backend only (STRATA_TEST_CEPH_CONF)";
    ChunkStoreTest::SetUp();
    OpenInto(other_catalog_, other_, {.gc_grace_seconds = 0});
  }
  uint64_t ObjectCount() {
    std::vector<std::string> names;
    EXPECT_EQ(rados_->DataPool(ns_).List(&names), 0);
    return names.size();
  }
  std::unique_ptr<meta::Catalog> other_catalog_;
  std::unique_ptr<ChunkStore> other_;
};

TEST_F(MultiNodeChunkStoreTest, TwoNodesIngestingTheSameDataAtOnceStoreEachChunkOnce) {
  constexpr int kChunks = 24;
  auto ingest = [&](ChunkStore* store) {
    std::vector<ChunkKey> keys;
    for (int i = 0; i < kChunks; ++i) {
      auto key = store->Put(kPlaintextDomain, Pattern(kChunk, 500 + i));
      ASSERT_THAT(key, IsOk());
      keys.push_back(*key);
    }
    ASSERT_THAT(store->Commit({}, keys, {}), IsOk());
  };
  std::thread a(ingest, store_.get());
  std::thread b(ingest, other_.get());
  a.join();
  b.join();
  EXPECT_EQ(ObjectCount(), static_cast<uint64_t>(kChunks));
  auto stats = store_->GetStats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->chunk_count, static_cast<uint64_t>(kChunks));
  EXPECT_EQ(stats->referenced_chunk_count, 2u * kChunks);  // No refcount lost to the race.
}

TEST_F(MultiNodeChunkStoreTest, ConcurrentCommitsOfOneChunkNeverLoseACount) {
  const auto data = Pattern(kChunk, 600);
  auto commit_many = [&](ChunkStore* store) {
    for (int i = 0; i < 20; ++i) {
      auto key = store->Put(kPlaintextDomain, data);
      ASSERT_THAT(key, IsOk());
      ASSERT_THAT(store->Commit({}, std::span(&*key, 1), {}), IsOk());
    }
  };
  std::thread a(commit_many, store_.get());
  std::thread b(commit_many, other_.get());
  a.join();
  b.join();
  const ChunkKey key{kPlaintextDomain, FingerprintOf(kPlaintextDomain, data), 0};
  EXPECT_EQ(Location(key)->refcount, 40u);
}

TEST_F(MultiNodeChunkStoreTest, GcOnOneNodeSparesAChunkAnotherNodeHasNotCommittedYet) {
  // Node B stores a chunk for a snapshot it has not committed; node A collects garbage with a
  // grace period: the chunk has no index entry yet, but it is younger than the grace.
  std::unique_ptr<meta::Catalog> graced_catalog;
  std::unique_ptr<ChunkStore> graced;
  OpenInto(graced_catalog, graced, {.gc_grace_seconds = 3600});
  auto key = other_->Put(kPlaintextDomain, Pattern(kChunk, 700));
  ASSERT_THAT(key, IsOk());
  ASSERT_THAT(graced->CollectGarbage(), IsOk());
  ASSERT_THAT(other_->Commit({}, std::span(&*key, 1), {}), IsOk());
  std::vector<std::byte> out(kChunk);
  ASSERT_THAT(store_->Read(*key, out), IsOk());
  EXPECT_EQ(out, Pattern(kChunk, 700));
  // Unreferenced again: a graced collection keeps it, one past the grace frees it.
  ASSERT_THAT(other_->Commit({}, {}, std::span(&*key, 1)), IsOk());
  ASSERT_THAT(graced->CollectGarbage(), IsOk());
  EXPECT_EQ(ObjectCount(), 1u);
  ASSERT_THAT(store_->CollectGarbage(), IsOk());
  EXPECT_EQ(ObjectCount(), 0u);
  EXPECT_THAT(store_->Read(*key, out), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(MultiNodeChunkStoreTest, ChunksOfANodeThatDiedBeforeCommittingAreCollected) {
  // Stored, never committed, the process gone (its pins with it): an object with no index
  // entry, which garbage collection on another node frees once the grace has passed.
  for (int i = 0; i < 5; ++i) {
    ASSERT_THAT(other_->Put(kPlaintextDomain, Pattern(kChunk, 800 + i)), IsOk());
  }
  const ChunkKey kept = PutAndCommit(Pattern(kChunk, 900));
  other_.reset();
  other_catalog_.reset();
  EXPECT_EQ(ObjectCount(), 6u);
  auto reclaimed = store_->CollectGarbage();
  ASSERT_THAT(reclaimed, IsOk());
  EXPECT_GE(*reclaimed, 5 * kChunk);
  EXPECT_EQ(ObjectCount(), 1u);
  std::vector<std::byte> out(kChunk);
  ASSERT_THAT(store_->Read(kept, out), IsOk());
  EXPECT_EQ(out, Pattern(kChunk, 900));
}

TEST_F(ChunkStoreTest, ChunkKeyEncodingRoundTripsAndRejectsBadLengths) {
  ChunkKey key{7, {}, 3};
  key.fingerprint[0] = 0xAB;
  EXPECT_EQ(ChunkKey::Decode(key.Encode()), key);
  EXPECT_EQ(ChunkKey::Decode("short"), std::nullopt);
  EXPECT_EQ(ChunkLocation::Decode("bad"), std::nullopt);
  uint64_t id = 0;
  EXPECT_TRUE(ParseSegmentFileName(SegmentFileName(42), id));
  EXPECT_EQ(id, 42u);
  EXPECT_FALSE(ParseSegmentFileName("seg-zz.dat", id));
}

}  // namespace
}  // namespace strata::chunk
