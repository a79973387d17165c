// Who may open NBD exports (strata/export.h): accounts their own exports, the operator every
// export; connections capped per export and per account; the accounts' derived TLS keys.

#include "absl/strings/str_cat.h"
#include "strata/export.h"
#include "strata/store.h"
#include "test_backend.h"
#include "test_util.h"

namespace strata {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::StatusIs;

constexpr uint64_t kMiB = 1 << 20;

class ExportCatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options = ::strata::testing::TestStoreOptions(dir_.path());
    options.background_work = false;
    auto store = Store::Open(dir_.path(), options);
    ASSERT_THAT(store, IsOk());
    store_ = std::move(*store);
    auto alice = store_->CreateAccount("alice");
    auto bob = store_->CreateAccount("bob");
    ASSERT_THAT(alice, IsOk());
    ASSERT_THAT(bob, IsOk());
    alice_ = *alice;
    bob_ = *bob;
    catalog_ = NewStoreExportCatalog(*store_);
  }

  // A volume of `owner`'s, attached (so exported).
  std::string AttachedVolume(const Account& owner) {
    Region* region = store_->DefaultRegion();
    auto info = region->CreateVolume({.size_bytes = 4 * kMiB, .owner = owner.id});
    EXPECT_THAT(info, IsOk());
    EXPECT_THAT(region->AttachVolume(info->id, "i-0000000000000000a",
                                     std::string("/dev/sd") + static_cast<char>('f' + devices_++)),
                IsOk());
    return info->id;
  }

  ::strata::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  Account alice_, bob_;
  std::unique_ptr<ExportCatalog> catalog_;
  int devices_ = 0;
};

TEST_F(ExportCatalogTest, AnAccountOpensItsOwnExportsOnlyAndTheOperatorEvery) {
  const std::string alices = AttachedVolume(alice_);
  const std::string bobs = AttachedVolume(bob_);
  EXPECT_THAT(catalog_->Open(alices, alice_.id), IsOk());
  EXPECT_THAT(catalog_->Open(bobs, alice_.id), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(catalog_->Open(bobs, std::nullopt), IsOk());
  EXPECT_EQ(catalog_->List(alice_.id), std::vector<std::string>{alices});
  EXPECT_EQ(catalog_->List(std::nullopt).size(), 2u);
}

TEST_F(ExportCatalogTest, ConnectionsAreCappedPerExportAndPerAccount) {
  std::vector<std::string> volumes;
  for (int i = 0; i < 3; ++i) volumes.push_back(AttachedVolume(alice_));
  std::vector<std::unique_ptr<Export>> held;
  // The per-export cap first.
  for (int i = 0; i < kMaxConnectionsPerExport; ++i) {
    auto e = catalog_->Open(volumes[0], alice_.id);
    ASSERT_THAT(e, IsOk());
    held.push_back(std::move(*e));
  }
  EXPECT_THAT(catalog_->Open(volumes[0], alice_.id),
              StatusIs(absl::StatusCode::kResourceExhausted));
  // Then the account's, over its other exports.
  while (static_cast<int>(held.size()) < kMaxConnectionsPerAccount) {
    auto e = catalog_->Open(volumes[held.size() < 2 * kMaxConnectionsPerExport ? 1 : 2], alice_.id);
    ASSERT_THAT(e, IsOk());
    held.push_back(std::move(*e));
  }
  auto refused = catalog_->Open(volumes[2], alice_.id);
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(refused.status().message(), ::testing::HasSubstr(alice_.id));
  // Others are not starved: another account, and the operator.
  const std::string bobs = AttachedVolume(bob_);
  EXPECT_THAT(catalog_->Open(bobs, bob_.id), IsOk());
  EXPECT_THAT(catalog_->Open(volumes[2], std::nullopt), IsOk());
  // A refused open took no slot, and a closed connection gives its slot back.
  held.pop_back();
  EXPECT_THAT(catalog_->Open(volumes[2], alice_.id), IsOk());
}

TEST_F(ExportCatalogTest, TlsIdentitiesAndDerivedKeys) {
  EXPECT_EQ(catalog_->AccountFor(alice_.name), alice_.id);
  EXPECT_EQ(catalog_->AccountFor(alice_.id), alice_.id);
  EXPECT_EQ(catalog_->AccountFor(alice_.access_key_id), alice_.id);
  EXPECT_EQ(catalog_->AccountFor("nobody"), std::nullopt);
  // Keys are derived from access keys only: names and ids have none unless a PSK file says so.
  const std::optional<std::string> key = catalog_->NbdKeyFor(alice_.access_key_id);
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->size(), 32u);
  EXPECT_EQ(*key, DeriveNbdKey(alice_.secret_access_key));
  EXPECT_NE(*key, DeriveNbdKey(bob_.secret_access_key));
  EXPECT_EQ(catalog_->NbdKeyFor(alice_.name), std::nullopt);
  EXPECT_EQ(catalog_->NbdKeyFor("AKIANOSUCHKEY0000000"), std::nullopt);
}

}  // namespace
}  // namespace strata
