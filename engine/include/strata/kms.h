#pragma once
// A region's key management service (the AWS KMS subset Strata needs): symmetric AES-256 keys per
// account, aliases, key states, rotation, key policies and grants, and envelope encryption with
// encryption contexts. Key material exists on disk only wrapped by the store's root key.
// Every call names the calling account; the key policy and grants decide what it may do.
// Thread-safe. Errors: kNotFound (no such key/alias/grant, or not visible to the caller),
// kPermissionDenied (policy), kFailedPrecondition (key disabled or pending deletion; the message
// says which), kInvalidArgument (bad input), kAlreadyExists (alias taken), kDataLoss (a
// ciphertext that does not authenticate: tampered, wrong key or wrong encryption context).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "strata/secret.h"

namespace strata {

enum class KmsKeyState { kEnabled, kDisabled, kPendingDeletion };
const char* KmsKeyStateName(KmsKeyState state);  // "Enabled", "Disabled", "PendingDeletion"

struct KmsGrant {
  std::string grant_id;
  std::string grant_token;
  std::string key_id;
  std::string name;
  std::string grantee;          // Account id.
  std::string retiring;         // Account id that may retire it (besides the grantee), or "".
  std::string issuing_account;  // Account id.
  std::vector<std::string> operations;  // "Decrypt", "Encrypt", "GenerateDataKey", ...
  uint64_t creation_micros = 0;
};

struct KmsKeyInfo {
  std::string key_id;  // A UUID.
  std::string arn;     // arn:aws:kms:REGION:ACCOUNT:key/KEY_ID
  std::string account;
  std::string description;
  std::string manager = "CUSTOMER";  // "AWS" for alias/aws/ebs default keys.
  KmsKeyState state = KmsKeyState::kEnabled;
  uint64_t creation_micros = 0;
  uint64_t deletion_micros = 0;  // When a key pending deletion goes.
  bool rotation_enabled = false;
  uint32_t rotation_period_days = 365;
  std::vector<uint64_t> rotation_micros;  // When each rotation happened (versions 2..n).
  std::map<std::string, std::string> tags;
};

struct KmsAlias {
  std::string name;  // "alias/..."
  std::string key_id;
  std::string account;
};

using EncryptionContext = std::map<std::string, std::string>;

struct DataKey {
  SecretBytes plaintext;
  std::string ciphertext;  // A self-describing blob: Decrypt needs no key id.
  std::string key_arn;
};

struct Decrypted {
  SecretBytes plaintext;
  std::string key_arn;
};

// The AWS error code a KMS status stands for ("DisabledException", "NotFoundException", ...),
// or "" when it carries none.
std::string KmsErrorCode(const absl::Status& status);

class Kms {
 public:
  virtual ~Kms() = default;

  // A key reference is a key id, key ARN, "alias/NAME" or alias ARN.
  [[nodiscard]] virtual absl::StatusOr<KmsKeyInfo> CreateKey(
      const std::string& caller, const std::string& description,
      const std::map<std::string, std::string>& tags, const std::string& policy) = 0;
  [[nodiscard]] virtual absl::StatusOr<KmsKeyInfo> DescribeKey(const std::string& caller,
                                                               const std::string& key_ref) = 0;
  // The caller's keys.
  [[nodiscard]] virtual absl::StatusOr<std::vector<KmsKeyInfo>> ListKeys(
      const std::string& caller) = 0;
  [[nodiscard]] virtual absl::Status EnableKey(const std::string& caller,
                                               const std::string& key_ref) = 0;
  [[nodiscard]] virtual absl::Status DisableKey(const std::string& caller,
                                                const std::string& key_ref) = 0;
  // 7 to 30 days; returns the deletion time.
  [[nodiscard]] virtual absl::StatusOr<uint64_t> ScheduleKeyDeletion(const std::string& caller,
                                                                     const std::string& key_ref,
                                                                     int pending_days) = 0;
  // The key comes back disabled, as on AWS.
  [[nodiscard]] virtual absl::Status CancelKeyDeletion(const std::string& caller,
                                                       const std::string& key_ref) = 0;
  [[nodiscard]] virtual absl::Status SetKeyRotation(const std::string& caller,
                                                    const std::string& key_ref, bool enabled,
                                                    int period_days) = 0;
  // New key material now; ciphertexts under older material still decrypt.
  [[nodiscard]] virtual absl::Status RotateKeyOnDemand(const std::string& caller,
                                                       const std::string& key_ref) = 0;

  [[nodiscard]] virtual absl::Status CreateAlias(const std::string& caller,
                                                 const std::string& alias,
                                                 const std::string& key_ref) = 0;
  [[nodiscard]] virtual absl::Status UpdateAlias(const std::string& caller,
                                                 const std::string& alias,
                                                 const std::string& key_ref) = 0;
  [[nodiscard]] virtual absl::Status DeleteAlias(const std::string& caller,
                                                 const std::string& alias) = 0;
  // The caller's aliases, of one key when key_ref is not empty.
  [[nodiscard]] virtual absl::StatusOr<std::vector<KmsAlias>> ListAliases(
      const std::string& caller, const std::string& key_ref) = 0;

  [[nodiscard]] virtual absl::Status PutKeyPolicy(const std::string& caller,
                                                  const std::string& key_ref,
                                                  const std::string& policy) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::string> GetKeyPolicy(const std::string& caller,
                                                                 const std::string& key_ref) = 0;
  [[nodiscard]] virtual absl::StatusOr<KmsGrant> CreateGrant(
      const std::string& caller, const std::string& key_ref, const std::string& grantee,
      const std::vector<std::string>& operations, const std::string& retiring,
      const std::string& name) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<KmsGrant>> ListGrants(
      const std::string& caller, const std::string& key_ref) = 0;
  // By token, or by key and grant id.
  [[nodiscard]] virtual absl::Status RetireGrant(const std::string& caller,
                                                 const std::string& grant_token,
                                                 const std::string& key_ref,
                                                 const std::string& grant_id) = 0;
  [[nodiscard]] virtual absl::Status RevokeGrant(const std::string& caller,
                                                 const std::string& key_ref,
                                                 const std::string& grant_id) = 0;

  [[nodiscard]] virtual absl::StatusOr<std::string> Encrypt(const std::string& caller,
                                                            const std::string& key_ref,
                                                            const SecretBytes& plaintext,
                                                            const EncryptionContext& context) = 0;
  // `key_ref`, when not empty, must name the key the blob was made with.
  [[nodiscard]] virtual absl::StatusOr<Decrypted> Decrypt(const std::string& caller,
                                                          const std::string& ciphertext,
                                                          const EncryptionContext& context,
                                                          const std::string& key_ref) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::string> ReEncrypt(
      const std::string& caller, const std::string& ciphertext,
      const EncryptionContext& source_context, const std::string& destination_key_ref,
      const EncryptionContext& destination_context) = 0;
  [[nodiscard]] virtual absl::StatusOr<DataKey> GenerateDataKey(
      const std::string& caller, const std::string& key_ref, size_t bytes,
      const EncryptionContext& context) = 0;
  // The account's default EBS key (alias/aws/ebs), created on first use.
  [[nodiscard]] virtual absl::StatusOr<KmsKeyInfo> DefaultEbsKey(const std::string& account) = 0;
};

}  // namespace strata
