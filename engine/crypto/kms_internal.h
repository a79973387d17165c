#pragma once
// What the KMS's source files share (kms_impl.cc: opening, storage and the key lifecycle;
// kms_access.cc: aliases, key policies, grants and authorization; kms_crypto_ops.cc: Encrypt,
// Decrypt, ReEncrypt and GenerateDataKey): a key's record and its JSON form, and the error
// and naming helpers.

#include <optional>
#include <string>
#include <vector>

#include "crypto/kms_impl.h"

namespace strata::crypto {

struct KmsImpl::Record {
  KmsKeyInfo info;
  std::string policy;
  std::vector<std::string> material;  // Wrapped, version i + 1 at index i.
  std::vector<KmsGrant> grants;
  uint64_t last_rotation_micros = 0;

  // The record as stored (JSON; material base64).
  std::string Encode() const;
  // A stored record, or nullopt when it is not one.
  static std::optional<Record> Decode(const std::string& bytes);
};

namespace kms {

absl::Status NotFound(const std::string& what);
absl::Status Invalid(const std::string& what);
std::string NewUuid();
// What a key version's wrapped material is authenticated with.
std::string MaterialAad(const std::string& key_id, uint32_t version);
// A new key's policy: the account's root may do anything with it.
std::string DefaultPolicy(const std::string& account);
// kInvalidArgument unless `policy` is a JSON policy document this KMS can evaluate.
absl::Status ValidatePolicy(const std::string& policy);

}  // namespace kms
}  // namespace strata::crypto
