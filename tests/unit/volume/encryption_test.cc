// Encrypted volumes through the public API (AWS's rules), and invariant 5: no plaintext of an
// encrypted volume and no unwrapped key in any file of the data directory.

#include <filesystem>
#include <fstream>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "crypto/kms_impl.h"
#include "meta/catalog.h"
#include "meta/schema.h"
#include "strata/store.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::StatusIs;

constexpr uint64_t kMiB = 1 << 20;
constexpr char kAlice[] = "111111111111";
constexpr char kBob[] = "222222222222";

// A distinctive plaintext: a scan finds it wherever it lands unencrypted.
std::vector<std::byte> Marker(size_t n) {
  const std::string word = "STRATA-PLAINTEXT-MARKER-0123456789abcdef-";
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>(word[i % word.size()]);
  return out;
}

// Every file under `dir` that contains `needle`.
// The files under `dir` that hold `needle`, and on the RADOS backend the objects of the store's
// namespaces too (their data, omap keys and values, and extended attributes): read object by
// object, as `rados export` would.
std::vector<std::string> FilesContaining(const std::string& dir, const std::string& needle) {
  std::vector<std::string> hits;
  if (std::optional<CephBackendOptions> ceph = ::strata::testing::TestCeph(dir)) {
    const std::string ns = absl::StrCat(ceph->name_space, ".local-1");
    std::shared_ptr<rados::Cluster> cluster = ::strata::testing::TestCluster();
    for (const rados::Pool& pool : {cluster->IndexPool(ns), cluster->DataPool(ns)}) {
      std::vector<std::string> names;
      EXPECT_EQ(pool.List(&names), 0);
      for (const std::string& oid : names) {
        std::string bytes;
        EXPECT_GE(pool.Read(oid, 64 << 20, &bytes), 0);
        std::map<std::string, std::string> attrs;
        EXPECT_GE(pool.GetXattrs(oid, &attrs), 0);
        for (const auto& [name, value] : attrs) bytes += name + value;
        for (std::string after;;) {
          std::map<std::string, std::string> omap;
          bool more = false;
          if (pool.OmapList(oid, after, "", 1000, &omap, &more) < 0 || omap.empty()) break;
          for (const auto& [key, value] : omap) bytes += key + value;
          after = omap.rbegin()->first;
          if (!more) break;
        }
        if (bytes.find(needle) != std::string::npos) hits.push_back("rados:" + oid);
      }
    }
  }
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.find(needle) != std::string::npos) hits.push_back(entry.path().string());
  }
  return hits;
}

class EncryptionTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(root_); }
  void Open(const SecretBytes& root) {
    store_.reset();
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.background_work = false;
    options.kms_root_key = root;
    auto store = Store::Open(dir_.path(), options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    region_ = store_->DefaultRegion();
  }
  absl::StatusOr<VolumeInfo> NewVolume(CreateVolumeRequest request) {
    if (request.size_bytes == 0 && request.snapshot_id.empty()) request.size_bytes = 4 * kMiB;
    if (request.owner.empty()) request.owner = kAlice;
    return region_->CreateVolume(request);
  }
  std::string Snap(const std::string& vol, const std::string& owner = kAlice) {
    auto info = region_->CreateSnapshot({.volume_id = vol, .owner = owner});
    EXPECT_THAT(info, IsOk());
    EXPECT_THAT(region_->RunBackgroundWork(), IsOk());
    EXPECT_EQ(region_->DescribeSnapshot(info->id)->state, SnapshotState::kCompleted)
        << region_->DescribeSnapshot(info->id)->state_message;
    return info->id;
  }
  std::vector<std::byte> ReadVolume(const std::string& id, uint64_t n) {
    std::vector<std::byte> out(n);
    EXPECT_THAT((*region_->GetVolume(id))->Read(0, out), IsOk());
    return out;
  }
  std::vector<std::byte> ReadSnapshot(const std::string& id, uint64_t n) {
    std::vector<std::byte> out(n);
    auto snap = region_->OpenSnapshot(id);
    EXPECT_THAT(snap, IsOk());
    if (snap.ok()) {
      EXPECT_THAT((*snap)->Read(0, out), IsOk());
    }
    return out;
  }

  ::strata::testing::TempDir dir_;
  SecretBytes root_ = RandomSecret(32);
  std::unique_ptr<Store> store_;
  Region* region_ = nullptr;
};

TEST_F(EncryptionTest, EncryptedVolumesSnapshotsAndClonesFollowAwsRules) {
  auto plain = NewVolume({});
  ASSERT_THAT(plain, IsOk());
  EXPECT_FALSE(plain->encrypted);
  auto vol = NewVolume({.encrypted = true});
  ASSERT_THAT(vol, IsOk());
  EXPECT_TRUE(vol->encrypted);
  EXPECT_THAT(vol->kms_key_id, ::testing::HasSubstr(":key/"));  // The default EBS key.
  const std::vector<std::byte> data = Marker(kMiB);
  ASSERT_THAT((*region_->GetVolume(vol->id))->Write(0, data), IsOk());
  // 512-byte writes inside a 4 KiB unit (read-modify-write) and a partial trim.
  ASSERT_THAT((*region_->GetVolume(vol->id))->Write(kMiB + 512, Marker(1024)), IsOk());
  ASSERT_THAT((*region_->GetVolume(vol->id))->Trim(1024, 512), IsOk());
  std::vector<std::byte> want = data;
  std::fill(want.begin() + 1024, want.begin() + 1536, std::byte{0});
  std::vector<std::byte> back = ReadVolume(vol->id, kMiB + 2048);
  EXPECT_TRUE(std::equal(want.begin(), want.end(), back.begin()));
  EXPECT_TRUE(
      std::equal(back.begin() + kMiB + 512, back.begin() + kMiB + 1536, Marker(1024).begin()));
  // A snapshot of an encrypted volume is encrypted with the same key.
  const std::string snap = Snap(vol->id);
  auto snap_info = region_->DescribeSnapshot(snap);
  EXPECT_TRUE(snap_info->encrypted);
  EXPECT_EQ(snap_info->kms_key_id, vol->kms_key_id);
  EXPECT_EQ(ReadSnapshot(snap, kMiB + 2048), back);
  // A volume from it is encrypted, even when not asked to be.
  auto clone = NewVolume({.snapshot_id = snap});
  ASSERT_THAT(clone, IsOk());
  EXPECT_TRUE(clone->encrypted);
  EXPECT_EQ(ReadVolume(clone->id, kMiB + 2048), back);
  // Another key: a new data key; the clone reads the same, and so does its snapshot.
  auto key = region_->kms().CreateKey(kAlice, "other", {}, "");
  ASSERT_THAT(key, IsOk());
  auto rekeyed = NewVolume({.snapshot_id = snap, .kms_key_id = key->key_id});
  ASSERT_THAT(rekeyed, IsOk());
  EXPECT_EQ(rekeyed->kms_key_id, key->arn);
  EXPECT_EQ(ReadVolume(rekeyed->id, kMiB + 2048), back);
  const std::string rekeyed_snap = Snap(rekeyed->id);
  EXPECT_EQ(ReadSnapshot(rekeyed_snap, kMiB + 2048), back);
  EXPECT_EQ(region_->DescribeSnapshot(rekeyed_snap)->kms_key_id, key->arn);
  // From an unencrypted snapshot, a volume may be encrypted; never the other way round.
  ASSERT_THAT((*region_->GetVolume(plain->id))->Write(0, Marker(64 * 1024)), IsOk());
  const std::string plain_snap = Snap(plain->id);
  auto upgraded = NewVolume({.snapshot_id = plain_snap, .encrypted = true});
  ASSERT_THAT(upgraded, IsOk());
  EXPECT_TRUE(upgraded->encrypted);
  const std::string upgraded_snap = Snap(upgraded->id);
  EXPECT_EQ(ReadSnapshot(upgraded_snap, 64 * 1024), Marker(64 * 1024));
  EXPECT_THAT(NewVolume({.kms_key_id = key->key_id}),
              StatusIs(absl::StatusCode::kInvalidArgument));  // A key without encryption.
  // CopySnapshot: with the same key O(1) and completed; with another key, or encrypting an
  // unencrypted source, a pending full copy under a new data key.
  auto same = region_->CopySnapshot(snap, {.owner = kAlice});
  ASSERT_THAT(same, IsOk());
  EXPECT_EQ(same->state, SnapshotState::kCompleted);
  EXPECT_EQ(same->kms_key_id, vol->kms_key_id);
  auto moved = region_->CopySnapshot(snap, {.owner = kAlice, .kms_key_id = key->arn});
  ASSERT_THAT(moved, IsOk());
  EXPECT_EQ(moved->state, SnapshotState::kPending);
  auto sealed = region_->CopySnapshot(plain_snap, {.owner = kAlice, .encrypted = true});
  ASSERT_THAT(sealed, IsOk());
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  EXPECT_EQ(region_->DescribeSnapshot(moved->id)->state, SnapshotState::kCompleted);
  EXPECT_EQ(region_->DescribeSnapshot(moved->id)->kms_key_id, key->arn);
  EXPECT_EQ(ReadSnapshot(moved->id, kMiB + 2048), back);
  EXPECT_TRUE(region_->DescribeSnapshot(sealed->id)->encrypted);
  EXPECT_EQ(ReadSnapshot(sealed->id, 64 * 1024), Marker(64 * 1024));
  // Bob may not use Alice's key: no volume from her shared snapshot without a grant.
  ASSERT_THAT(region_->SetSnapshotPermissions(snap, {kBob}), IsOk());
  EXPECT_THAT(NewVolume({.snapshot_id = snap, .owner = kBob}),
              StatusIs(absl::StatusCode::kPermissionDenied));  // Her key, not granted to him.
  const std::string arn = vol->kms_key_id;
  EXPECT_THAT(NewVolume({.snapshot_id = snap, .owner = kBob, .kms_key_id = arn}),
              StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST_F(EncryptionTest, AGrantLetsAnotherAccountUseASharedEncryptedSnapshot) {
  auto key = region_->kms().CreateKey(kAlice, "shared", {}, "");
  auto vol = NewVolume({.encrypted = true, .kms_key_id = key->key_id});
  ASSERT_THAT(vol, IsOk());
  ASSERT_THAT((*region_->GetVolume(vol->id))->Write(0, Marker(8192)), IsOk());
  const std::string snap = Snap(vol->id);
  ASSERT_THAT(region_->SetSnapshotPermissions(snap, {kBob}), IsOk());
  EXPECT_THAT(NewVolume({.snapshot_id = snap, .owner = kBob, .kms_key_id = key->arn}),
              StatusIs(absl::StatusCode::kPermissionDenied));
  // Without rights on her key, naming a key of his own is no way round it (AWS requires
  // kms:Decrypt on the source key to re-encrypt): no volume, no copy, no data out of the region.
  auto bob_key = region_->kms().CreateKey(kBob, "bob", {}, "");
  ASSERT_THAT(bob_key, IsOk());
  const size_t volumes = region_->ListVolumes()->size();
  EXPECT_THAT(NewVolume({.snapshot_id = snap, .owner = kBob, .kms_key_id = bob_key->key_id}),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(region_->CopySnapshot(snap, {.owner = kBob, .kms_key_id = bob_key->arn}),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(region_->CheckSnapshotKeyAccess(kBob, snap),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(region_->CheckSnapshotKeyAccess(kAlice, snap), IsOk());
  EXPECT_EQ(region_->ListVolumes()->size(), volumes);  // Nothing was made.
  ASSERT_THAT(region_->kms().CreateGrant(kAlice, key->key_id, kBob,
                                         {"Decrypt", "DescribeKey", "GenerateDataKey"}, "", ""),
              IsOk());
  auto bobs = NewVolume({.snapshot_id = snap, .owner = kBob, .kms_key_id = key->arn});
  ASSERT_THAT(bobs, IsOk());
  EXPECT_EQ(ReadVolume(bobs->id, 8192), Marker(8192));
  EXPECT_THAT(region_->CheckSnapshotKeyAccess(kBob, snap), IsOk());
  // With the grant, Bob re-encrypting under his own key works too: a new data key of his.
  auto own = NewVolume({.snapshot_id = snap, .owner = kBob, .kms_key_id = bob_key->key_id});
  ASSERT_THAT(own, IsOk());
  EXPECT_EQ(ReadVolume(own->id, 8192), Marker(8192));
}

TEST_F(EncryptionTest, DisabledKeysAndTheRootKey) {
  auto key = region_->kms().CreateKey(kAlice, "k", {}, "");
  auto vol = NewVolume({.encrypted = true, .kms_key_id = key->key_id});
  ASSERT_THAT(vol, IsOk());
  ASSERT_THAT((*region_->GetVolume(vol->id))->Write(0, Marker(4096)), IsOk());
  ASSERT_THAT(region_->kms().DisableKey(kAlice, key->key_id), IsOk());
  auto refused = NewVolume({.encrypted = true, .kms_key_id = key->key_id});
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(KmsErrorCode(refused.status()), "DisabledException");
  EXPECT_EQ(ReadVolume(vol->id, 4096), Marker(4096));  // Open data keeps working.
  ASSERT_THAT(region_->kms().EnableKey(kAlice, key->key_id), IsOk());
  // Reopened with the wrong root key, or none: the volume stays closed with a clear error.
  Open(RandomSecret(32));
  std::vector<std::byte> out(4096);
  absl::Status wrong = (*region_->GetVolume(vol->id))->Read(0, out);
  EXPECT_THAT(wrong, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(std::string(wrong.message()), ::testing::HasSubstr("wrong root key"));
  EXPECT_EQ(out, std::vector<std::byte>(4096));  // Never garbage.
  Open(SecretBytes());
  absl::Status none = (*region_->GetVolume(vol->id))->Read(0, out);
  EXPECT_THAT(std::string(none.message()), ::testing::HasSubstr("root key is not loaded"));
  Open(root_);
  EXPECT_EQ(ReadVolume(vol->id, 4096), Marker(4096));
}

// Dedup works within a domain (one data key) and never across domains.
TEST_F(EncryptionTest, DedupStaysWithinADomain) {
  auto chunks = [&] { return region_->GetStats()->chunk_count; };
  auto a = NewVolume({.encrypted = true});
  ASSERT_THAT((*region_->GetVolume(a->id))->Write(0, Marker(kMiB)), IsOk());
  const std::string snap = Snap(a->id);
  const uint64_t one = chunks();
  ASSERT_GT(one, 0u);
  // A clone (same data key) rewriting the same bytes adds nothing.
  auto clone = NewVolume({.snapshot_id = snap});
  ASSERT_THAT((*region_->GetVolume(clone->id))->Write(0, Marker(kMiB)), IsOk());
  Snap(clone->id);
  EXPECT_EQ(chunks(), one);
  // Another encrypted volume (its own data key) with the same bytes stores its own chunks, and
  // so does a plaintext one.
  auto b = NewVolume({.encrypted = true});
  ASSERT_THAT((*region_->GetVolume(b->id))->Write(0, Marker(kMiB)), IsOk());
  Snap(b->id);
  EXPECT_EQ(chunks(), 2 * one);
  auto plain = NewVolume({});
  ASSERT_THAT((*region_->GetVolume(plain->id))->Write(0, Marker(kMiB)), IsOk());
  Snap(plain->id);
  EXPECT_GE(chunks(), 2 * one + 1);
}

// Invariant 5, the scan: an encrypted volume, its snapshot, a copy and volumes made from them;
// then every byte of every file under the data directory is searched for the plaintext, the
// data key and the root key. The same on an unencrypted volume finds the plaintext, so the
// scan works.
TEST_F(EncryptionTest, NoPlaintextOrKeyReachesTheDataDirectory) {
  const std::vector<std::byte> data = Marker(2 * kMiB);
  auto vol = NewVolume({.encrypted = true});
  ASSERT_THAT(vol, IsOk());
  ASSERT_THAT((*region_->GetVolume(vol->id))->Write(0, data), IsOk());
  ASSERT_THAT((*region_->GetVolume(vol->id))->Flush(), IsOk());
  const std::string snap = Snap(vol->id);
  auto copy = region_->CopySnapshot(snap, {.owner = kAlice});
  ASSERT_THAT(copy, IsOk()) << copy.status();
  auto clone = NewVolume({.snapshot_id = snap});
  ASSERT_THAT(clone, IsOk());
  ASSERT_THAT(region_->StartHydration(clone->id, 0), IsOk());
  ASSERT_THAT(region_->RunBackgroundWork(), IsOk());
  auto other_key = region_->kms().CreateKey(kAlice, "k2", {}, "");
  auto rekeyed = NewVolume({.snapshot_id = copy->id, .kms_key_id = other_key->key_id});
  ASSERT_THAT(rekeyed, IsOk());
  Snap(rekeyed->id);
  EXPECT_EQ(ReadVolume(clone->id, 2 * kMiB), data);
  store_.reset();

  // The data keys, unwrapped outside the store, to look for them too.
  std::vector<std::string> data_keys;
  {
    const std::string region_dir = dir_.path() + "/regions/local-1";
    std::optional<CephBackendOptions> ceph = ::strata::testing::TestCeph(dir_.path());
    auto catalog = ceph.has_value()
                       ? meta::Catalog::OpenRados(::strata::testing::TestCluster()->IndexPool(
                                                      absl::StrCat(ceph->name_space, ".local-1")),
                                                  "catalog")
                       : meta::Catalog::OpenRocksDb(Env::Default(), region_dir + "/catalog");
    ASSERT_THAT(catalog, IsOk());
    class Storage : public crypto::KmsStorage {
     public:
      explicit Storage(meta::Catalog& c) : c_(c) {}
      absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadAll() override {
        std::vector<std::pair<std::string, std::string>> out;
        absl::Status s = c_.Scan("k/", "", [&](absl::string_view k, absl::string_view v) {
          out.emplace_back(std::string(k.substr(2)), std::string(v));
          return true;
        });
        if (!s.ok()) return s;
        return out;
      }
      absl::Status Put(const std::string&, const std::string&) override { return absl::OkStatus(); }
      absl::Status Delete(const std::string&) override { return absl::OkStatus(); }

     private:
      meta::Catalog& c_;
    } storage(**catalog);
    auto kms = crypto::KmsImpl::Open({.region = "local-1", .storage = &storage, .root_key = root_});
    ASSERT_THAT(kms, IsOk());
    // Volume records: "v/" id, or on RADOS "n/" node "/v/" id (node-scoped keys).
    ASSERT_THAT((*catalog)->Scan(ceph.has_value() ? "n/" : "v/", "",
                                 [&](absl::string_view key, absl::string_view value) {
                                   if (ceph.has_value() && !absl::StrContains(key, "/v/")) {
                                     return true;
                                   }
                                   auto r = meta::VolumeRecord::Decode(value);
                                   if (r.ok() && r->encryption.encrypted()) {
                                     auto key = (*kms)->Decrypt(
                                         r->owner, r->encryption.wrapped_key,
                                         {{"strata:domain", absl::StrCat(r->encryption.domain)}},
                                         "");
                                     EXPECT_THAT(key, IsOk());
                                     if (key.ok()) data_keys.push_back(key->plaintext.str());
                                   }
                                   return true;
                                 }),
                IsOk());
  }
  ASSERT_EQ(data_keys.size(), 3u);
  const std::string marker(reinterpret_cast<const char*>(data.data()), 64);
  EXPECT_THAT(FilesContaining(dir_.path(), marker), ::testing::IsEmpty());
  for (const std::string& key : data_keys) {
    EXPECT_THAT(FilesContaining(dir_.path(), key.substr(0, 32)), ::testing::IsEmpty());
    EXPECT_THAT(FilesContaining(dir_.path(), key.substr(32)), ::testing::IsEmpty());
  }
  EXPECT_THAT(FilesContaining(dir_.path(), root_.str()), ::testing::IsEmpty());

  // The control: the same data on an unencrypted volume is found (in its head and segments, or
  // its head and chunk objects).
  Open(root_);
  auto plain = NewVolume({});
  ASSERT_THAT((*region_->GetVolume(plain->id))->Write(0, data), IsOk());
  Snap(plain->id);
  store_.reset();
  EXPECT_GE(FilesContaining(dir_.path(), marker).size(), 2u);
}

}  // namespace
}  // namespace strata
