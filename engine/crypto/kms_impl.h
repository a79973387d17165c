#pragma once
// The region's KMS: keys, aliases and grants as JSON records in a KmsStorage (the region's
// catalog), key material wrapped by the root key (AES-256-GCM, bound to key id and version).
// Ciphertext blobs: "SKC1" | key id (36) | version (4, big-endian) | nonce | ciphertext | tag,
// authenticated with the key id, version and the encryption context. docs/encryption.md.

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "strata/kms.h"
#include "util/shared_section.h"

namespace strata::crypto {

// Where the KMS keeps its records. Keys are opaque strings; Put and Delete are durable when
// they return.
class KmsStorage {
 public:
  virtual ~KmsStorage() = default;
  [[nodiscard]] virtual absl::StatusOr<std::vector<std::pair<std::string, std::string>>>
  LoadAll() = 0;
  [[nodiscard]] virtual absl::Status Put(const std::string& key, const std::string& value) = 0;
  [[nodiscard]] virtual absl::Status Delete(const std::string& key) = 0;
};

struct KmsOptions {
  std::string region;
  KmsStorage* storage = nullptr;  // Not owned; outlives the KMS.
  // Where other processes share the storage (nodes on RADOS): each call runs in the section and
  // reloads the records when another process changed them. Null: this process alone.
  util::SharedSection* shared = nullptr;
  SecretBytes root_key;  // 32 bytes; empty: no key can be used (clear errors say so).
  std::function<uint64_t()> now_micros;  // Default: the wall clock.
};

class KmsImpl final : public Kms {
 public:
  static absl::StatusOr<std::unique_ptr<KmsImpl>> Open(KmsOptions options);
  ~KmsImpl() override;

  absl::StatusOr<KmsKeyInfo> CreateKey(const std::string& caller, const std::string& description,
                                       const std::map<std::string, std::string>& tags,
                                       const std::string& policy) override;
  absl::StatusOr<KmsKeyInfo> DescribeKey(const std::string& caller,
                                         const std::string& key_ref) override;
  absl::StatusOr<std::vector<KmsKeyInfo>> ListKeys(const std::string& caller) override;
  absl::Status EnableKey(const std::string& caller, const std::string& key_ref) override;
  absl::Status DisableKey(const std::string& caller, const std::string& key_ref) override;
  absl::StatusOr<uint64_t> ScheduleKeyDeletion(const std::string& caller,
                                               const std::string& key_ref,
                                               int pending_days) override;
  absl::Status CancelKeyDeletion(const std::string& caller, const std::string& key_ref) override;
  absl::Status SetKeyRotation(const std::string& caller, const std::string& key_ref, bool enabled,
                              int period_days) override;
  absl::Status RotateKeyOnDemand(const std::string& caller, const std::string& key_ref) override;
  absl::Status CreateAlias(const std::string& caller, const std::string& alias,
                           const std::string& key_ref) override;
  absl::Status UpdateAlias(const std::string& caller, const std::string& alias,
                           const std::string& key_ref) override;
  absl::Status DeleteAlias(const std::string& caller, const std::string& alias) override;
  absl::StatusOr<std::vector<KmsAlias>> ListAliases(const std::string& caller,
                                                    const std::string& key_ref) override;
  absl::Status PutKeyPolicy(const std::string& caller, const std::string& key_ref,
                            const std::string& policy) override;
  absl::StatusOr<std::string> GetKeyPolicy(const std::string& caller,
                                           const std::string& key_ref) override;
  absl::StatusOr<KmsGrant> CreateGrant(const std::string& caller, const std::string& key_ref,
                                       const std::string& grantee,
                                       const std::vector<std::string>& operations,
                                       const std::string& retiring,
                                       const std::string& name) override;
  absl::StatusOr<std::vector<KmsGrant>> ListGrants(const std::string& caller,
                                                   const std::string& key_ref) override;
  absl::Status RetireGrant(const std::string& caller, const std::string& grant_token,
                           const std::string& key_ref, const std::string& grant_id) override;
  absl::Status RevokeGrant(const std::string& caller, const std::string& key_ref,
                           const std::string& grant_id) override;
  absl::StatusOr<std::string> Encrypt(const std::string& caller, const std::string& key_ref,
                                      const SecretBytes& plaintext,
                                      const EncryptionContext& context) override;
  absl::StatusOr<Decrypted> Decrypt(const std::string& caller, const std::string& ciphertext,
                                    const EncryptionContext& context,
                                    const std::string& key_ref) override;
  absl::StatusOr<std::string> ReEncrypt(const std::string& caller, const std::string& ciphertext,
                                        const EncryptionContext& source_context,
                                        const std::string& destination_key_ref,
                                        const EncryptionContext& destination_context) override;
  absl::StatusOr<DataKey> GenerateDataKey(const std::string& caller, const std::string& key_ref,
                                          size_t bytes, const EncryptionContext& context) override;
  absl::StatusOr<KmsKeyInfo> DefaultEbsKey(const std::string& account) override;
  // OK when `caller` may decrypt with the key and it is enabled; else the KMS error.
  absl::Status CheckUsable(const std::string& caller, const std::string& key_ref);

  struct Record;  // A key: its info, policy, wrapped material per version, grants.

 private:
  explicit KmsImpl(KmsOptions options);
  uint64_t Now() const;
  std::string Arn(const std::string& account, const std::string& key_id) const;
  // Finds a key by reference as `caller` sees it (its own by id or alias; others' by ARN).
  absl::StatusOr<Record*> Find(const std::string& caller, const std::string& key_ref)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Checks that `caller` may do `operation` ("kms:Decrypt", ...) on the key.
  absl::Status Authorize(const std::string& caller, const Record& key,
                         const std::string& operation) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Usable(const Record& key) const;
  absl::Status Save(const Record& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Record*> NewKey(const std::string& account, const std::string& description,
                                 const std::map<std::string, std::string>& tags,
                                 const std::string& policy, const std::string& manager)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status AddVersion(Record& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<SecretBytes> Material(const Record& key, uint32_t version) const;
  absl::StatusOr<std::string> EncryptLocked(const std::string& caller, const std::string& key_ref,
                                            const SecretBytes& plaintext,
                                            const EncryptionContext& context,
                                            const std::string& operation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Decrypted> DecryptLocked(const std::string& caller, const std::string& ciphertext,
                                          const EncryptionContext& context,
                                          const std::string& key_ref, const std::string& operation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Changes a customer key's state, and its deletion time (0 unless pending deletion).
  absl::Status SetState(const std::string& caller, const std::string& key_ref, KmsKeyState state,
                        const std::string& operation, uint64_t deletion_micros);
  // Enters the shared section (before mu_), reloading the records if another process changed
  // them since they were loaded.
  absl::StatusOr<util::SharedHold> EnterShared() ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Load() ABSL_LOCKS_EXCLUDED(mu_);
  util::SharedSection& Section() const;  // options_.shared, or this process alone.
  // Drops keys whose deletion time has passed and rotates keys that are due.
  void Maintain() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SaveAlias(const KmsAlias& alias) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Creates the account's alias/aws/ebs key if it has none.
  absl::Status EnsureEbsKey(const std::string& account) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const KmsOptions options_;
  mutable absl::Mutex mu_;
  uint64_t loaded_changes_ ABSL_GUARDED_BY(mu_) = 0;  // The section's foreign_changes() at Load.
  std::map<std::string, std::unique_ptr<Record>> keys_ ABSL_GUARDED_BY(mu_);  // By key id.
  // (account, alias name) -> key id.
  std::map<std::pair<std::string, std::string>, std::string> aliases_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::crypto
