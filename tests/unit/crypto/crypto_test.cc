// AES-256-XTS against IEEE 1619, AES-256-GCM sealing, and the KMS: envelope encryption with
// encryption contexts, key states, rotation, deletion, aliases, policies and grants, persistence,
// and what a wrong root key or a tampered blob does.

#include <cstdlib>
#include <map>
#include <random>
#include <string>

#include "absl/strings/escaping.h"
#include "crypto/aead.h"
#include "crypto/kms_impl.h"
#include "crypto/xts.h"
#include "test_util.h"

namespace strata::crypto {
namespace {

using ::strata::testing::IsOk;
using ::strata::testing::StatusIs;

std::string Hex(absl::string_view hex) { return absl::HexStringToBytes(hex); }

SecretBytes Key(absl::string_view hex) { return SecretBytes(Hex(hex)); }

// IEEE 1619-2007 vector 10 (XTS-AES-256, data unit 0xff): the first 256 bytes of its data unit
// (XTS enciphers each 16-byte block on its own, so a prefix of the unit is a valid vector).
constexpr char kVector10Key[] =
    "2718281828459045235360287471352662497757247093699959574966967627"
    "3141592653589793238462643383279502884197169399375105820974944592";
constexpr char kVector10Ciphertext[] =
    "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b"
    "5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd"
    "5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0"
    "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca"
    "2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0"
    "b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f"
    "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec"
    "583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a";

// Every XTS test runs on both implementations.
class XtsTest : public ::testing::TestWithParam<XtsBackend> {
 protected:
  std::unique_ptr<Xts> Make(const SecretBytes& key) {
    absl::StatusOr<std::unique_ptr<Xts>> xts = Xts::Create(key, GetParam());
    EXPECT_THAT(xts, IsOk());
    if (!xts.ok()) return nullptr;
    EXPECT_EQ((*xts)->backend(), GetParam());
    return *std::move(xts);
  }
};

TEST_P(XtsTest, MatchesIeee1619Vector10) {
  std::unique_ptr<Xts> xts = Make(Key(kVector10Key));
  ASSERT_NE(xts, nullptr);
  std::string plain(256, '\0');
  for (int i = 0; i < 256; ++i) plain[i] = static_cast<char>(i);
  std::string out(256, '\0');
  xts->Encrypt(0xff, std::as_bytes(std::span(plain)), std::as_writable_bytes(std::span(out)));
  EXPECT_EQ(absl::BytesToHexString(out), kVector10Ciphertext);
  std::string back(256, '\0');
  xts->Decrypt(0xff, std::as_bytes(std::span(out)), std::as_writable_bytes(std::span(back)));
  EXPECT_EQ(back, plain);
  // In place, as the volume's data path does it.
  xts->Encrypt(0xff, std::as_bytes(std::span(plain)), std::as_writable_bytes(std::span(plain)));
  EXPECT_EQ(absl::BytesToHexString(plain), kVector10Ciphertext);
}

TEST_P(XtsTest, RefusesKeysWithEqualHalvesOrWrongLength) {
  EXPECT_THAT(Xts::Create(SecretBytes(std::string(64, 'k')), GetParam()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Xts::Create(SecretBytes(std::string(32, 'k')), GetParam()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_P(XtsTest, EachUnitHasItsOwnTweakAndOddLengthsRoundTrip) {
  std::unique_ptr<Xts> xts = Make(Key(kVector10Key));
  ASSERT_NE(xts, nullptr);
  std::string plain(2 * kXtsUnitBytes, 'p');  // Two identical units.
  std::string out(plain.size(), '\0');
  xts->EncryptUnits(7, std::as_bytes(std::span(plain)), std::as_writable_bytes(std::span(out)));
  EXPECT_NE(out.substr(0, kXtsUnitBytes), out.substr(kXtsUnitBytes));  // Same data, new tweak.
  EXPECT_EQ(out.find(std::string(16, 'p')), std::string::npos);
  std::string back(plain.size(), '\0');
  xts->DecryptUnits(7, std::as_bytes(std::span(out)), std::as_writable_bytes(std::span(back)));
  EXPECT_EQ(back, plain);
  std::string odd = "thirty-seven bytes, not a multiple!!!";  // Ciphertext stealing.
  std::string odd_out(odd.size(), '\0');
  std::string odd_back(odd.size(), '\0');
  xts->Encrypt(1, std::as_bytes(std::span(odd)), std::as_writable_bytes(std::span(odd_out)));
  xts->Decrypt(1, std::as_bytes(std::span(odd_out)), std::as_writable_bytes(std::span(odd_back)));
  EXPECT_EQ(odd_back, odd);
}

INSTANTIATE_TEST_SUITE_P(Backends, XtsTest,
                         ::testing::Values(XtsBackend::kGcrypt, XtsBackend::kOpenSsl),
                         [](const ::testing::TestParamInfo<XtsBackend>& info) {
                           return std::string(XtsBackendName(info.param));
                         });

// Volumes written through one implementation read back through the other: for random keys,
// tweaks and lengths (16 bytes to 64 KiB + 15, whole and stolen blocks), libgcrypt and OpenSSL
// give the same ciphertext, and each deciphers the other's.
TEST(XtsBackendsTest, GiveIdenticalCiphertextForRandomKeysTweaksAndLengths) {
  const uint64_t seed = ::strata::testing::TestSeed();
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 200; ++round) {
    SecretBytes key = RandomSecret(kXtsKeyBytes);
    auto gcrypt = Xts::Create(key, XtsBackend::kGcrypt);
    auto openssl = Xts::Create(key, XtsBackend::kOpenSsl);
    ASSERT_THAT(gcrypt, IsOk());
    ASSERT_THAT(openssl, IsOk());
    const size_t length = round < 20 ? 16 + round : 16 + rng() % (64 * 1024);
    const uint64_t tweak = round % 3 == 0 ? rng() : rng() % 1024;
    std::string plain(length, '\0');
    for (char& c : plain) c = static_cast<char>(rng());
    std::string a(length, '\0');
    std::string b(length, '\0');
    (*gcrypt)->Encrypt(tweak, std::as_bytes(std::span(plain)),
                       std::as_writable_bytes(std::span(a)));
    (*openssl)->Encrypt(tweak, std::as_bytes(std::span(plain)),
                        std::as_writable_bytes(std::span(b)));
    ASSERT_EQ(a, b) << "length " << length << " tweak " << tweak << " seed " << seed;
    std::string back(length, '\0');
    (*openssl)->Decrypt(tweak, std::as_bytes(std::span(a)),
                        std::as_writable_bytes(std::span(back)));
    ASSERT_EQ(back, plain);
    (*gcrypt)->Decrypt(tweak, std::as_bytes(std::span(b)), std::as_writable_bytes(std::span(back)));
    ASSERT_EQ(back, plain);
  }
}

TEST(XtsBackendsTest, TheDefaultIsLibgcryptUnlessForced) {
  const char* forced = std::getenv("STRATA_XTS");
  const XtsBackend chosen = DefaultXtsBackend();
  EXPECT_NE(chosen, XtsBackend::kDefault);
  if (forced == nullptr || std::string(forced) == "gcrypt") {
    EXPECT_EQ(chosen, XtsBackend::kGcrypt);  // Debian 12's libgcrypt passes its self-test.
  } else if (std::string(forced) == "openssl") {
    EXPECT_EQ(chosen, XtsBackend::kOpenSsl);
  }
  auto xts = Xts::Create(Key(kVector10Key));
  ASSERT_THAT(xts, IsOk());
  EXPECT_EQ((*xts)->backend(), chosen);
}

TEST(AeadTest, TamperingOrAWrongContextIsDetected) {
  const SecretBytes key = RandomSecret(32);
  std::string sealed = Seal(key, "secret", "context");
  EXPECT_EQ(Open(key, sealed, "context")->str(), "secret");
  EXPECT_THAT(Open(key, sealed, "other"), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(Open(RandomSecret(32), sealed, "context"), StatusIs(absl::StatusCode::kDataLoss));
  sealed[14] ^= 1;
  EXPECT_THAT(Open(key, sealed, "context"), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(Open(key, "short", "context"), StatusIs(absl::StatusCode::kDataLoss));
}

class MemoryKmsStorage : public KmsStorage {
 public:
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> LoadAll() override {
    return std::vector<std::pair<std::string, std::string>>(data.begin(), data.end());
  }
  absl::Status Put(const std::string& key, const std::string& value) override {
    data[key] = value;
    return absl::OkStatus();
  }
  absl::Status Delete(const std::string& key) override {
    data.erase(key);
    return absl::OkStatus();
  }
  std::map<std::string, std::string> data;
};

constexpr char kAlice[] = "111111111111";
constexpr char kBob[] = "222222222222";
constexpr uint64_t kDay = 86400ull * 1000000;

class KmsTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(root_); }
  void Reopen(const SecretBytes& root) {
    KmsOptions options;
    options.region = "local-1";
    options.storage = &storage_;
    options.root_key = root;
    options.now_micros = [this] { return now_; };
    auto kms = KmsImpl::Open(std::move(options));
    ASSERT_THAT(kms, IsOk());
    kms_ = std::move(*kms);
  }
  std::string NewKey(const std::string& account = kAlice) {
    auto key = kms_->CreateKey(account, "test key", {{"team", "storage"}}, "");
    EXPECT_THAT(key, IsOk());
    return key.ok() ? key->key_id : "";
  }

  MemoryKmsStorage storage_;
  SecretBytes root_ = RandomSecret(32);
  uint64_t now_ = 1'800'000'000'000'000;
  std::unique_ptr<KmsImpl> kms_;
};

TEST_F(KmsTest, EnvelopeEncryptionBindsTheContext) {
  const std::string key = NewKey();
  auto blob =
      kms_->Encrypt(kAlice, key, SecretBytes(std::string("attack at dawn")), {{"volume", "vol-1"}});
  ASSERT_THAT(blob, IsOk());
  EXPECT_EQ(blob->find("attack at dawn"), std::string::npos);
  auto plain = kms_->Decrypt(kAlice, *blob, {{"volume", "vol-1"}}, "");
  ASSERT_THAT(plain, IsOk());
  EXPECT_EQ(plain->plaintext.str(), "attack at dawn");
  EXPECT_EQ(plain->key_arn, "arn:aws:kms:local-1:111111111111:key/" + key);
  auto wrong = kms_->Decrypt(kAlice, *blob, {{"volume", "vol-2"}}, "");
  EXPECT_THAT(wrong, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(KmsErrorCode(wrong.status()), "InvalidCiphertextException");
  std::string flipped = *blob;
  flipped[flipped.size() - 20] ^= 0x10;
  EXPECT_THAT(kms_->Decrypt(kAlice, flipped, {{"volume", "vol-1"}}, ""),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(kms_->Decrypt(kAlice, "garbage", {}, ""), StatusIs(absl::StatusCode::kDataLoss));
  auto data_key = kms_->GenerateDataKey(kAlice, key, 64, {{"lineage", "x"}});
  ASSERT_THAT(data_key, IsOk());
  EXPECT_EQ(data_key->plaintext.size(), 64u);
  EXPECT_EQ(kms_->Decrypt(kAlice, data_key->ciphertext, {{"lineage", "x"}}, key)->plaintext,
            data_key->plaintext);
  const std::string other = NewKey();
  auto moved = kms_->ReEncrypt(kAlice, data_key->ciphertext, {{"lineage", "x"}}, other, {});
  ASSERT_THAT(moved, IsOk());
  EXPECT_EQ(kms_->Decrypt(kAlice, *moved, {}, "")->key_arn,
            "arn:aws:kms:local-1:111111111111:key/" + other);
  EXPECT_THAT(kms_->Decrypt(kAlice, *moved, {}, key), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(KmsTest, DisabledAndPendingDeletionKeysCannotBeUsed) {
  const std::string key = NewKey();
  auto blob = kms_->Encrypt(kAlice, key, SecretBytes(std::string("x")), {});
  ASSERT_THAT(kms_->DisableKey(kAlice, key), IsOk());
  auto refused = kms_->Decrypt(kAlice, *blob, {}, "");
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(KmsErrorCode(refused.status()), "DisabledException");
  ASSERT_THAT(kms_->EnableKey(kAlice, key), IsOk());
  EXPECT_THAT(kms_->Decrypt(kAlice, *blob, {}, ""), IsOk());
  EXPECT_THAT(kms_->ScheduleKeyDeletion(kAlice, key, 6),
              StatusIs(absl::StatusCode::kInvalidArgument));
  auto when = kms_->ScheduleKeyDeletion(kAlice, key, 7);
  ASSERT_THAT(when, IsOk());
  EXPECT_EQ(*when, now_ + 7 * kDay);
  refused = kms_->Decrypt(kAlice, *blob, {}, "");
  EXPECT_EQ(KmsErrorCode(refused.status()), "KMSInvalidStateException");
  ASSERT_THAT(kms_->CancelKeyDeletion(kAlice, key), IsOk());
  EXPECT_EQ(kms_->DescribeKey(kAlice, key)->state, KmsKeyState::kDisabled);  // As on AWS.
  ASSERT_THAT(kms_->EnableKey(kAlice, key), IsOk());
  ASSERT_THAT(kms_->ScheduleKeyDeletion(kAlice, key, 30), IsOk());
  now_ += 31 * kDay;
  EXPECT_THAT(kms_->DescribeKey(kAlice, key), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(kms_->Decrypt(kAlice, *blob, {}, ""), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(KmsTest, RotationKeepsOldCiphertextsReadable) {
  const std::string key = NewKey();
  auto old_blob = kms_->Encrypt(kAlice, key, SecretBytes(std::string("v1")), {});
  ASSERT_THAT(kms_->RotateKeyOnDemand(kAlice, key), IsOk());
  auto new_blob = kms_->Encrypt(kAlice, key, SecretBytes(std::string("v2")), {});
  EXPECT_EQ(kms_->Decrypt(kAlice, *old_blob, {}, "")->plaintext.str(), "v1");
  EXPECT_EQ(kms_->Decrypt(kAlice, *new_blob, {}, "")->plaintext.str(), "v2");
  EXPECT_NE(old_blob->substr(40, 4), new_blob->substr(40, 4));  // Versions differ.
  EXPECT_THAT(kms_->SetKeyRotation(kAlice, key, true, 30),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(kms_->SetKeyRotation(kAlice, key, true, 90), IsOk());
  now_ += 91 * kDay;
  EXPECT_EQ(kms_->DescribeKey(kAlice, key)->rotation_micros.size(), 2u);  // Automatic.
  EXPECT_EQ(kms_->Decrypt(kAlice, *old_blob, {}, "")->plaintext.str(), "v1");
}

TEST_F(KmsTest, PoliciesAndGrantsDecideWhoMayUseAKey) {
  const std::string key = NewKey();
  const std::string arn = kms_->DescribeKey(kAlice, key)->arn;
  auto blob = kms_->Encrypt(kAlice, key, SecretBytes(std::string("shared")), {});
  EXPECT_THAT(kms_->Decrypt(kBob, *blob, {}, ""), StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(kms_->DescribeKey(kBob, key), StatusIs(absl::StatusCode::kNotFound));  // Not by id.
  auto grant = kms_->CreateGrant(kAlice, key, kBob, {"Decrypt"}, "", "bob-reads");
  ASSERT_THAT(grant, IsOk());
  EXPECT_EQ(kms_->Decrypt(kBob, *blob, {}, "")->plaintext.str(), "shared");
  EXPECT_THAT(kms_->Encrypt(kBob, arn, SecretBytes(std::string("x")), {}),
              StatusIs(absl::StatusCode::kPermissionDenied));  // Only Decrypt was granted.
  EXPECT_EQ(kms_->ListGrants(kAlice, key)->size(), 1u);
  ASSERT_THAT(kms_->RetireGrant(kBob, grant->grant_token, "", ""), IsOk());
  EXPECT_THAT(kms_->Decrypt(kBob, *blob, {}, ""), StatusIs(absl::StatusCode::kPermissionDenied));
  // A policy statement for Bob's account works the same way; a Deny wins.
  const std::string policy = R"({"Version":"2012-10-17","Statement":[
      {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111111111111:root"},"Action":"kms:*","Resource":"*"},
      {"Effect":"Allow","Principal":{"AWS":["222222222222"]},"Action":["kms:Decrypt","kms:DescribeKey"],"Resource":"*"}]})";
  ASSERT_THAT(kms_->PutKeyPolicy(kAlice, key, policy), IsOk());
  EXPECT_THAT(kms_->Decrypt(kBob, *blob, {}, ""), IsOk());
  EXPECT_THAT(kms_->DescribeKey(kBob, arn), IsOk());
  EXPECT_THAT(kms_->PutKeyPolicy(kAlice, key, "not json"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(kms_->PutKeyPolicy(kBob, arn, policy), StatusIs(absl::StatusCode::kPermissionDenied));
  auto g2 = kms_->CreateGrant(kAlice, key, kBob, {"Decrypt"}, "", "");
  ASSERT_THAT(kms_->RevokeGrant(kAlice, key, g2->grant_id), IsOk());
  EXPECT_THAT(kms_->CreateGrant(kAlice, key, kBob, {"Fly"}, "", ""),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(KmsTest, AliasesAndTheDefaultEbsKey) {
  const std::string key = NewKey();
  ASSERT_THAT(kms_->CreateAlias(kAlice, "alias/backups", key), IsOk());
  EXPECT_THAT(kms_->CreateAlias(kAlice, "alias/backups", key),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(kms_->CreateAlias(kAlice, "alias/aws/mine", key),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(kms_->CreateAlias(kAlice, "backups", key),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(kms_->DescribeKey(kAlice, "alias/backups")->key_id, key);
  const std::string other = NewKey();
  ASSERT_THAT(kms_->UpdateAlias(kAlice, "alias/backups", other), IsOk());
  EXPECT_EQ(kms_->DescribeKey(kAlice, "alias/backups")->key_id, other);
  EXPECT_THAT(kms_->DescribeKey(kBob, "alias/backups"), StatusIs(absl::StatusCode::kNotFound));
  auto ebs = kms_->DefaultEbsKey(kAlice);
  ASSERT_THAT(ebs, IsOk());
  EXPECT_EQ(ebs->manager, "AWS");
  EXPECT_EQ(kms_->DefaultEbsKey(kAlice)->key_id, ebs->key_id);  // Created once.
  EXPECT_NE(kms_->DefaultEbsKey(kBob)->key_id, ebs->key_id);    // One per account.
  EXPECT_EQ(kms_->ListAliases(kAlice, "")->size(), 2u);
  EXPECT_THAT(kms_->DisableKey(kAlice, ebs->key_id), StatusIs(absl::StatusCode::kPermissionDenied));
  ASSERT_THAT(kms_->DeleteAlias(kAlice, "alias/backups"), IsOk());
  EXPECT_THAT(kms_->DescribeKey(kAlice, "alias/backups"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(KmsTest, StateSurvivesReopenAndNeedsTheRightRootKey) {
  const std::string key = NewKey();
  ASSERT_THAT(kms_->CreateAlias(kAlice, "alias/keep", key), IsOk());
  auto blob = kms_->Encrypt(kAlice, "alias/keep", SecretBytes(std::string("persisted")), {});
  for (const auto& [k, v] : storage_.data) {
    EXPECT_EQ(v.find(root_.str()), std::string::npos);  // Only wrapped material is stored.
  }
  Reopen(root_);
  EXPECT_EQ(kms_->Decrypt(kAlice, *blob, {}, "")->plaintext.str(), "persisted");
  EXPECT_EQ(kms_->DescribeKey(kAlice, "alias/keep")->tags.at("team"), "storage");
  Reopen(RandomSecret(32));
  auto wrong = kms_->Decrypt(kAlice, *blob, {}, "");
  EXPECT_THAT(wrong, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(std::string(wrong.status().message()), ::testing::HasSubstr("wrong root key"));
  Reopen(SecretBytes());
  auto none = kms_->Decrypt(kAlice, *blob, {}, "");
  EXPECT_THAT(none, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(std::string(none.status().message()), ::testing::HasSubstr("root key is not loaded"));
  EXPECT_THAT(kms_->CreateKey(kAlice, "", {}, ""), StatusIs(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace strata::crypto
