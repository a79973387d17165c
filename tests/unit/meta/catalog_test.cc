// The catalog on the suite's backend (test_backend.h): RocksDB, or the omap of a RADOS object.
// Atomic batches, guards, ordered scans from a start key across pages, many keys at once.

#include "meta/catalog.h"

#include <map>
#include <random>
#include <set>
#include <thread>

#include "absl/strings/str_format.h"
#include "meta/schema.h"
#include "meta/shared_catalog.h"
#include "strata/fault_injection_env.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata::meta {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::StatusIs;

class CatalogTest : public ::testing::Test {
 protected:
  void SetUp() override { catalog_ = Open(); }
  std::unique_ptr<Catalog> Open() {
    absl::StatusOr<std::unique_ptr<Catalog>> catalog =
        rados_ != nullptr
            ? Catalog::OpenRados(
                  rados_->IndexPool(::strata::testing::TestCeph(dir_.path())->name_space),
                  "catalog")
            : Catalog::OpenRocksDb(Env::Default(), dir_.path() + "/catalog");
    EXPECT_THAT(catalog, IsOk());
    return catalog.ok() ? std::move(*catalog) : nullptr;
  }
  std::vector<std::string> ScanKeys(absl::string_view prefix, absl::string_view start) {
    std::vector<std::string> keys;
    EXPECT_THAT(catalog_->Scan(prefix, start,
                               [&](absl::string_view k, absl::string_view) {
                                 keys.emplace_back(k);
                                 return true;
                               }),
                IsOk());
    return keys;
  }

  ::strata::testing::TempDir dir_;
  const std::shared_ptr<rados::Cluster> rados_ = ::strata::testing::TestCluster();
  std::unique_ptr<Catalog> catalog_;
};

TEST(SchemaTest, VolumeRecordKeepsItsModificationAndReadsTheVersionBefore) {
  VolumeRecord r;
  r.id = "vol-0123456789abcdef0";
  r.size_bytes = 4ull << 30;
  r.volume_type = "io2";
  r.iops = 3000;
  r.modification = {.start_time_micros = 10,
                    .optimizing_time_micros = 20,
                    .end_time_micros = 30,
                    .original_size_bytes = 1ull << 30,
                    .original_type = "gp3",
                    .original_iops = 3000,
                    .original_throughput = 125};
  const std::string bytes = r.Encode();
  absl::StatusOr<VolumeRecord> back = VolumeRecord::Decode(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->modification.end_time_micros, 30u);
  EXPECT_EQ(back->modification.original_type, "gp3");
  EXPECT_EQ(back->modification.original_throughput, 125u);
  EXPECT_EQ(back->head, HeadStore::kFiles);
  r.head = HeadStore::kRados;
  EXPECT_EQ(VolumeRecord::Decode(r.Encode())->head, HeadStore::kRados);
  r.fast_restored = true;
  EXPECT_TRUE(VolumeRecord::Decode(r.Encode())->fast_restored);
  // Version 5 ended before fast_restored (one byte): not fast restored.
  std::string v5 = bytes.substr(0, bytes.size() - 1);
  v5[0] = 5;
  absl::StatusOr<VolumeRecord> v5_record = VolumeRecord::Decode(v5);
  ASSERT_TRUE(v5_record.ok()) << v5_record.status();
  EXPECT_FALSE(v5_record->fast_restored);
  EXPECT_EQ(v5_record->head, HeadStore::kFiles);
  // Version 4 ended before the head store (one more byte): its heads are files.
  std::string v4 = bytes.substr(0, bytes.size() - 2);
  v4[0] = 4;
  absl::StatusOr<VolumeRecord> v4_record = VolumeRecord::Decode(v4);
  ASSERT_TRUE(v4_record.ok()) << v4_record.status();
  EXPECT_EQ(v4_record->head, HeadStore::kFiles);
  EXPECT_EQ(v4_record->modification.original_throughput, 125u);
  // Version 3 ended before the modification (6 u64s and a length-prefixed "gp3").
  std::string v3 = bytes.substr(0, bytes.size() - 2 - (6 * 8 + 4 + 3));
  v3[0] = 3;
  absl::StatusOr<VolumeRecord> old = VolumeRecord::Decode(v3);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->modification.start_time_micros, 0u);
  EXPECT_EQ(old->iops, 3000u);
  // Cut short or with bytes left over, a record is corrupt.
  EXPECT_FALSE(VolumeRecord::Decode(bytes.substr(0, bytes.size() - 1)).ok());
  EXPECT_FALSE(VolumeRecord::Decode(bytes + "x").ok());
}

TEST(SchemaTest, SnapshotRecordKeepsItsLockAndBinStayAndReadsTheVersionBefore) {
  SnapshotRecord r;
  r.id = "snap-0123456789abcdef0";
  r.state = SnapshotRecordState::kCompleted;
  r.lock = {.mode = 2,
            .created_micros = 1,
            .duration_start_micros = 2,
            .cool_off_until_micros = 3,
            .expires_micros = 4,
            .duration_days = 5,
            .cool_off_hours = 6};
  r.recycled_micros = 7;
  r.recycle_until_micros = 8;
  const std::string bytes = r.Encode();
  absl::StatusOr<SnapshotRecord> back = SnapshotRecord::Decode(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->lock.mode, 2);
  EXPECT_EQ(back->lock.cool_off_until_micros, 3u);
  EXPECT_EQ(back->lock.expires_micros, 4u);
  EXPECT_EQ(back->lock.duration_days, 5u);
  EXPECT_EQ(back->lock.cool_off_hours, 6u);
  EXPECT_EQ(back->recycled_micros, 7u);
  EXPECT_EQ(back->recycle_until_micros, 8u);
  // Version 3 ended before the lock (1 + 4 * 8 + 2 * 4 bytes) and the bin (2 * 8).
  std::string v3 = bytes.substr(0, bytes.size() - (1 + 4 * 8 + 2 * 4 + 2 * 8));
  v3[0] = 3;
  absl::StatusOr<SnapshotRecord> old = SnapshotRecord::Decode(v3);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->lock.mode, 0);
  EXPECT_EQ(old->recycled_micros, 0u);
  // A lock mode past compliance, a cut record or bytes left over: corrupt.
  std::string bad_mode = bytes;
  bad_mode[bytes.size() - (1 + 4 * 8 + 2 * 4 + 2 * 8)] = 3;
  EXPECT_FALSE(SnapshotRecord::Decode(bad_mode).ok());
  EXPECT_FALSE(SnapshotRecord::Decode(bytes.substr(0, bytes.size() - 1)).ok());
  EXPECT_FALSE(SnapshotRecord::Decode(bytes + "x").ok());
}

TEST_F(CatalogTest, EmptyCatalogReadsAsEmpty) {
  EXPECT_EQ(*catalog_->Get("x/format"), std::nullopt);
  EXPECT_TRUE(ScanKeys("s/", "").empty());
}

TEST_F(CatalogTest, BatchAppliesInOrderAndWhole) {
  WriteBatch batch;
  batch.Put("a/1", "one");
  batch.Put("a/2", "two");
  batch.Delete("a/1");
  batch.Put("a/3", "");
  ASSERT_THAT(catalog_->Write(batch), IsOk());
  EXPECT_EQ(*catalog_->Get("a/1"), std::nullopt);
  EXPECT_EQ(*catalog_->Get("a/2"), std::optional<std::string>("two"));
  EXPECT_EQ(*catalog_->Get("a/3"), std::optional<std::string>(""));
  auto many = catalog_->GetMany({"a/3", "a/1", "a/2"});
  ASSERT_THAT(many, IsOk());
  EXPECT_EQ((*many)[0], std::optional<std::string>(""));
  EXPECT_EQ((*many)[1], std::nullopt);
  EXPECT_EQ((*many)[2], std::optional<std::string>("two"));
}

TEST_F(CatalogTest, StaleGuardRefusesTheWholeBatch) {
  WriteBatch first;
  first.Put("x/probe", "1");
  ASSERT_THAT(catalog_->Write(first), IsOk());
  std::unique_ptr<Catalog> other = rados_ != nullptr ? Open() : nullptr;
  Catalog& writer = other != nullptr ? *other : *catalog_;  // Another node on RADOS.
  WriteBatch stale;
  stale.Expect("x/probe", "0");
  stale.Put("x/probe", "2");
  stale.Put("x/other", "2");
  EXPECT_THAT(writer.Write(stale), StatusIs(absl::StatusCode::kAborted));
  EXPECT_EQ(*catalog_->Get("x/probe"), std::optional<std::string>("1"));
  EXPECT_EQ(*catalog_->Get("x/other"), std::nullopt);
  WriteBatch fresh;
  fresh.Expect("x/probe", "1");
  fresh.Expect("x/missing", "");  // Absent reads as "".
  fresh.Put("x/probe", "3");
  ASSERT_THAT(writer.Write(fresh), IsOk());
  EXPECT_EQ(*catalog_->Get("x/probe"), std::optional<std::string>("3"));
}

TEST_F(CatalogTest, ScansInKeyOrderFromAStartKeyAcrossPages) {
  // More keys than one omap read returns (1000), among neighbours of other prefixes.
  WriteBatch batch;
  for (int i = 0; i < 2500; ++i) batch.Put(absl::StrFormat("m/%08d", i), std::to_string(i));
  batch.Put("l/x", "before");
  batch.Put("n/x", "after");
  ASSERT_THAT(catalog_->Write(batch), IsOk());
  std::vector<std::string> all = ScanKeys("m/", "");
  ASSERT_EQ(all.size(), 2500u);
  EXPECT_EQ(all.front(), "m/00000000");
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
  std::vector<std::string> tail = ScanKeys("m/", "m/00001234");
  ASSERT_EQ(tail.size(), 2500u - 1234);
  EXPECT_EQ(tail.front(), "m/00001234");
  // A start key that is absent starts at the next key.
  std::vector<std::string> from_gap = ScanKeys("m/", "m/00001234x");
  ASSERT_FALSE(from_gap.empty());
  EXPECT_EQ(from_gap.front(), "m/00001235");
  // Stopping early.
  int seen = 0;
  ASSERT_THAT(
      catalog_->Scan("m/", "", [&](absl::string_view, absl::string_view) { return ++seen < 3; }),
      IsOk());
  EXPECT_EQ(seen, 3);
}

TEST_F(CatalogTest, SurvivesReopen) {
  WriteBatch batch;
  batch.Put("v/vol-1", "record");
  ASSERT_THAT(catalog_->Write(batch), IsOk());
  catalog_.reset();
  catalog_ = Open();
  EXPECT_EQ(*catalog_->Get("v/vol-1"), std::optional<std::string>("record"));
}

// A RocksDB catalog on an Env other than the process's own keeps its files in that Env
// (meta/env_file_system.h): a power loss of the Env cuts the catalog, and every batch it
// acknowledged survives it whole while a batch that failed is there whole or not at all.
TEST(CatalogOnAnEnvTest, PowerLossKeepsEveryAcknowledgedBatchWholeAndAFailedOneAtomic) {
  std::unique_ptr<Env> mem = NewMemEnv();
  FaultInjectionEnv env(mem.get());
  const std::string path = "/store/catalog";
  std::mt19937_64 rng(::strata::testing::TestSeed());
  std::map<int, std::string> acknowledged;  // Batch number -> its value.
  std::set<int> failed;
  int next = 0;
  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    auto catalog = Catalog::OpenRocksDb(&env, path);
    ASSERT_THAT(catalog, IsOk());
    // What was acknowledged before the last power loss is there; a failed batch is all or none.
    for (const auto& [n, value] : acknowledged) {
      EXPECT_EQ(*(*catalog)->Get(absl::StrCat("a/", n)), std::optional<std::string>(value));
      EXPECT_EQ(*(*catalog)->Get(absl::StrCat("b/", n)), std::optional<std::string>(value));
    }
    for (int n : failed) {
      EXPECT_EQ(*(*catalog)->Get(absl::StrCat("a/", n)), *(*catalog)->Get(absl::StrCat("b/", n)));
    }
    const int64_t before = env.operations();
    const int64_t fault_at = static_cast<int64_t>(rng() % 60);
    env.InjectAt(fault_at,
                 {.status = rng() % 2 == 0 ? absl::DataLossError("injected EIO")
                                           : absl::ResourceExhaustedError("injected ENOSPC"),
                  .transient = rng() % 2 == 0,
                  .short_write = rng() % 2 == 0});
    for (int i = 0; i < 20; ++i, ++next) {
      const std::string value(1 + rng() % 6000, static_cast<char>('a' + next % 26));
      WriteBatch batch;
      batch.Put(absl::StrCat("a/", next), value);
      batch.Put(absl::StrCat("b/", next), value);
      const absl::Status s = (*catalog)->Write(batch);
      if (s.ok()) {
        acknowledged[next] = value;
      } else {
        failed.insert(next);
        EXPECT_TRUE(absl::IsDataLoss(s) || absl::IsResourceExhausted(s)) << s;
      }
    }
    EXPECT_GT(env.operations(), before) << "the catalog's writes did not go through the Env";
    ASSERT_THAT(env.Crash(/*tear=*/rng() % 2 == 0, rng()), IsOk());
    env.FailAfter(0, absl::DataLossError("injected: the machine is off"));
    catalog->reset();
    env.ClearFaults();
  }
  EXPECT_FALSE(acknowledged.empty());
  EXPECT_FALSE(failed.empty());
}

}  // namespace
}  // namespace strata::meta

namespace strata::rados {
namespace {

using ::strata::meta::Catalog;
using ::strata::meta::SharedCatalog;
using ::strata::testing::IsOk;
using ::strata::testing::StatusIs;

TEST(RegionClaimTest, EachNodeClaimsItsOwnPartAndItsOwnStaleClaimIsTakenOver) {
  std::shared_ptr<Cluster> cluster = ::strata::testing::TestCluster();
  if (cluster == nullptr) GTEST_SKIP() << "RADOS backend only (STRATA_TEST_CEPH_CONF)";
  ::strata::testing::TempDir dir;
  const std::string ns = ::strata::testing::TestCeph(dir.path())->name_space;
  auto a = cluster->Claim(ns, "catalog", "node-a", "test");
  ASSERT_THAT(a, IsOk());
  // The claimed object is the catalog's: its writes leave the claim in place.
  auto catalog = meta::Catalog::OpenRados(cluster->IndexPool(ns), "catalog");
  ASSERT_THAT(catalog, IsOk());
  meta::WriteBatch batch;
  batch.Put("x/format", "1");
  ASSERT_THAT((*catalog)->Write(batch), IsOk());
  // Another node shares the region.
  auto b = cluster->Claim(ns, "catalog", "node-b", "test");
  EXPECT_THAT(b, IsOk());
  std::vector<Pool::Locker> lockers;
  ASSERT_GE(cluster->IndexPool(ns).ListLockers("catalog", "strata.node.node-a", &lockers), 0);
  ASSERT_EQ(lockers.size(), 1u);
  EXPECT_EQ(lockers[0].cookie, "node-a");
  // The same node again, from another client (a restart after a crash left the claim): taken
  // over.
  auto restarted = Cluster::Connect(*::strata::testing::TestCeph(dir.path()));
  ASSERT_THAT(restarted, IsOk());
  auto again = (*restarted)->Claim(ns, "catalog", "node-a", "test");
  EXPECT_THAT(again, IsOk());
  a->reset();
  again->reset();
  lockers.clear();
  ASSERT_GE(cluster->IndexPool(ns).ListLockers("catalog", "strata.node.node-a", &lockers), 0);
  EXPECT_THAT(lockers, ::testing::IsEmpty());
}

// Two nodes' views of one region catalog, each on a librados client of its own.
class SharedCatalogTest : public ::testing::Test {
 protected:
  std::unique_ptr<SharedCatalog> Node(const std::string& id, int lease_seconds = 30,
                                      absl::Duration wait = absl::Seconds(30)) {
    auto cluster = Cluster::Connect(*::strata::testing::TestCeph(dir_.path()));
    EXPECT_THAT(cluster, IsOk());
    if (!cluster.ok()) return nullptr;
    clusters_.push_back(*cluster);
    const std::string ns = ::strata::testing::TestCeph(dir_.path())->name_space;
    auto base = meta::Catalog::OpenRados((*cluster)->IndexPool(ns), "catalog");
    EXPECT_THAT(base, IsOk());
    auto shared = SharedCatalog::Open(
        *std::move(base), (*cluster)->IndexPool(ns), "catalog",
        {.node_id = id, .description = "test " + id, .lease_seconds = lease_seconds, .wait = wait});
    EXPECT_THAT(shared, IsOk());
    return shared.ok() ? *std::move(shared) : nullptr;
  }
  static std::vector<std::string> Keys(Catalog& catalog, absl::string_view prefix) {
    std::vector<std::string> keys;
    EXPECT_THAT(catalog.Scan(prefix, "",
                             [&](absl::string_view k, absl::string_view) {
                               keys.emplace_back(k);
                               return true;
                             }),
                IsOk());
    return keys;
  }
  static absl::Status Put(Catalog& catalog, const std::string& key, const std::string& value) {
    meta::WriteBatch batch;
    batch.Put(key, value);
    return catalog.Write(batch);
  }

  ::strata::testing::TempDir dir_;
  std::vector<std::shared_ptr<Cluster>> clusters_;
};

TEST_F(SharedCatalogTest, NodeKeysAreEachNodesOwnAndTheRestIsShared) {
  if (::strata::testing::TestCluster() == nullptr) GTEST_SKIP() << "RADOS backend only";
  auto a = Node("node-a");
  auto b = Node("node-b");
  ASSERT_THAT(Put(*a, "v/vol-1", "a's volume"), IsOk());
  ASSERT_THAT(Put(*b, "v/vol-2", "b's volume"), IsOk());
  ASSERT_THAT(Put(*a, "s/snap-1", "a snapshot"), IsOk());
  EXPECT_EQ(Keys(*a, "v/"), std::vector<std::string>{"v/vol-1"});
  EXPECT_EQ(Keys(*b, "v/"), std::vector<std::string>{"v/vol-2"});
  EXPECT_EQ(*b->Get("s/snap-1"), "a snapshot");
  EXPECT_EQ(*a->Get("v/vol-2"), std::nullopt);
  EXPECT_EQ(*a->Get(SharedCatalog::NodeKey("node-b", "v/vol-2")), "b's volume");
  auto nodes = a->Nodes();
  ASSERT_THAT(nodes, IsOk());
  EXPECT_EQ(*nodes, (std::vector<std::string>{"node-a", "node-b"}));
}

TEST_F(SharedCatalogTest, OneNodeHoldsTheLeaseAndTheOtherSeesItsChanges) {
  if (::strata::testing::TestCluster() == nullptr) GTEST_SKIP() << "RADOS backend only";
  auto a = Node("node-a");
  auto b = Node("node-b", 30, absl::Milliseconds(300));
  {
    auto held = a->Enter();
    ASSERT_THAT(held, IsOk());
    auto nested = a->Enter();  // Threads of one node share it.
    ASSERT_THAT(nested, IsOk());
    auto refused = b->Enter();
    EXPECT_THAT(refused, StatusIs(absl::StatusCode::kUnavailable));
    EXPECT_THAT(refused.status().message(), ::testing::HasSubstr("node-a"));
    ASSERT_THAT(Put(*a, "s/snap-1", "v1"), IsOk());
  }
  const uint64_t seen = b->foreign_changes();
  ASSERT_THAT(b->Enter(), IsOk());  // Released: B enters, and sees that A changed the region.
  EXPECT_EQ(b->foreign_changes(), seen + 1);
  ASSERT_THAT(b->Enter(), IsOk());  // Nothing changed since.
  EXPECT_EQ(b->foreign_changes(), seen + 1);
  // Node-scoped, chunk index and manifest writes change no generation.
  ASSERT_THAT(Put(*a, "c/chunk", "1"), IsOk());
  ASSERT_THAT(Put(*a, "v/vol-1", "x"), IsOk());
  ASSERT_THAT(b->Enter(), IsOk());
  EXPECT_EQ(b->foreign_changes(), seen + 1);
}

TEST_F(SharedCatalogTest, AWriteAfterTheLeaseLapsedAndAnotherNodeWroteIsRefused) {
  if (::strata::testing::TestCluster() == nullptr) GTEST_SKIP() << "RADOS backend only";
  auto a = Node("node-a", /*lease_seconds=*/1);
  auto b = Node("node-b");
  auto held = a->Enter();
  ASSERT_THAT(held, IsOk());
  // B waits out A's lease (1 s, not renewed: A is idle), then changes the region.
  ASSERT_THAT(Put(*b, "s/snap-1", "b's"), IsOk());
  // A, still in its section, writes from what it read before B's change: refused.
  EXPECT_THAT(Put(*a, "s/snap-1", "a's"), StatusIs(absl::StatusCode::kAborted));
  EXPECT_EQ(*b->Get("s/snap-1"), "b's");
}

}  // namespace
}  // namespace strata::rados
