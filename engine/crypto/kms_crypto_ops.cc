// The KMS's cryptographic operations: Encrypt, Decrypt, ReEncrypt and GenerateDataKey, over
// self-describing ciphertext blobs:
//   "SKC1" | key id (36) | version (4, big-endian) | nonce | ciphertext | tag,
// authenticated with the key id, version and the encryption context (docs/encryption.md).

#include <algorithm>
#include <chrono>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "crypto/aead.h"
#include "crypto/kms_internal.h"
#include "nlohmann/json.hpp"
#include "strata/aws_error.h"
#include "util/status_macros.h"

namespace strata::crypto {
namespace {

using kms::Invalid;
using kms::NotFound;

constexpr char kBlobMagic[] = "SKC1";
constexpr size_t kKeyIdBytes = 36;
constexpr size_t kBlobHeaderBytes = 4 + kKeyIdBytes + 4;

std::string BlobAad(const std::string& key_id, uint32_t version, const EncryptionContext& context) {
  std::string aad = absl::StrCat("strata-kms-v1\n", key_id, "\n", version, "\n");
  for (const auto& [k, v] : context) {  // std::map: sorted, so the order is canonical.
    absl::StrAppend(&aad, k.size(), ":", k, "=", v.size(), ":", v, "\n");
  }
  return aad;
}

}  // namespace

absl::StatusOr<std::string> KmsImpl::EncryptLocked(const std::string& caller,
                                                   const std::string& key_ref,
                                                   const SecretBytes& plaintext,
                                                   const EncryptionContext& context,
                                                   const std::string& operation) {
  absl::StatusOr<Record*> r = Find(caller, key_ref);
  if (!r.ok()) return r.status();
  if (absl::Status s = Authorize(caller, **r, operation); !s.ok()) return s;
  if (absl::Status s = Usable(**r); !s.ok()) return s;
  const uint32_t version = static_cast<uint32_t>((*r)->material.size());
  absl::StatusOr<SecretBytes> material = Material(**r, version);
  if (!material.ok()) return material.status();
  std::string blob = kBlobMagic;
  blob += (*r)->info.key_id;
  for (int i = 3; i >= 0; --i) blob.push_back(static_cast<char>(version >> (8 * i)));
  blob += Seal(*material, plaintext.str(), BlobAad((*r)->info.key_id, version, context));
  return blob;
}

absl::StatusOr<Decrypted> KmsImpl::DecryptLocked(const std::string& caller,
                                                 const std::string& ciphertext,
                                                 const EncryptionContext& context,
                                                 const std::string& key_ref,
                                                 const std::string& operation) {
  if (ciphertext.size() < kBlobHeaderBytes + kAeadOverheadBytes ||
      ciphertext.compare(0, 4, kBlobMagic) != 0) {
    return AwsError(absl::StatusCode::kDataLoss, "InvalidCiphertextException",
                    "the ciphertext is not a Strata KMS ciphertext blob");
  }
  const std::string key_id = ciphertext.substr(4, kKeyIdBytes);
  uint32_t version = 0;
  for (int i = 0; i < 4; ++i) {
    version = (version << 8) | static_cast<uint8_t>(ciphertext[4 + kKeyIdBytes + i]);
  }
  // The blob names the key; its owner's account is looked up rather than assumed.
  auto it = keys_.find(key_id);
  if (it == keys_.end()) {
    Maintain();
    return AwsError(absl::StatusCode::kNotFound, "NotFoundException",
                    absl::StrCat("the key of this ciphertext (", key_id, ") does not exist"));
  }
  Record& key = *it->second;
  if (!key_ref.empty()) {
    absl::StatusOr<Record*> named = Find(caller, key_ref);
    if (!named.ok()) return named.status();
    if (*named != &key) {
      return AwsError(absl::StatusCode::kInvalidArgument, "IncorrectKeyException",
                      "the ciphertext was not made with the KeyId given");
    }
  }
  Maintain();
  if (keys_.find(key_id) == keys_.end()) return NotFound("the key of this ciphertext is gone");
  if (absl::Status s = Authorize(caller, key, operation); !s.ok()) return s;
  if (absl::Status s = Usable(key); !s.ok()) return s;
  absl::StatusOr<SecretBytes> material = Material(key, version);
  if (!material.ok()) return material.status();
  absl::StatusOr<SecretBytes> plain =
      crypto::Open(*material, absl::string_view(ciphertext).substr(kBlobHeaderBytes),
                   BlobAad(key_id, version, context));
  if (!plain.ok()) {
    return AwsError(absl::StatusCode::kDataLoss, "InvalidCiphertextException",
                    "the ciphertext does not authenticate: it was altered, or the encryption "
                    "context differs from the one it was made with");
  }
  return Decrypted{std::move(*plain), key.info.arn};
}

absl::StatusOr<std::string> KmsImpl::Encrypt(const std::string& caller, const std::string& key_ref,
                                             const SecretBytes& plaintext,
                                             const EncryptionContext& context) {
  if (plaintext.empty() || plaintext.size() > 4096) {
    return Invalid("Plaintext must be 1 to 4096 bytes");
  }
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  return EncryptLocked(caller, key_ref, plaintext, context, "kms:Encrypt");
}

absl::StatusOr<Decrypted> KmsImpl::Decrypt(const std::string& caller, const std::string& ciphertext,
                                           const EncryptionContext& context,
                                           const std::string& key_ref) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  return DecryptLocked(caller, ciphertext, context, key_ref, "kms:Decrypt");
}

absl::StatusOr<std::string> KmsImpl::ReEncrypt(const std::string& caller,
                                               const std::string& ciphertext,
                                               const EncryptionContext& source_context,
                                               const std::string& destination_key_ref,
                                               const EncryptionContext& destination_context) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  absl::StatusOr<Decrypted> plain =
      DecryptLocked(caller, ciphertext, source_context, "", "kms:ReEncryptFrom");
  if (!plain.ok()) return plain.status();
  return EncryptLocked(caller, destination_key_ref, plain->plaintext, destination_context,
                       "kms:ReEncryptTo");
}

absl::StatusOr<DataKey> KmsImpl::GenerateDataKey(const std::string& caller,
                                                 const std::string& key_ref, size_t bytes,
                                                 const EncryptionContext& context) {
  if (bytes == 0 || bytes > 1024) return Invalid("NumberOfBytes must be 1 to 1024");
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  DataKey key;
  key.plaintext = RandomSecret(bytes);
  absl::StatusOr<std::string> blob =
      EncryptLocked(caller, key_ref, key.plaintext, context, "kms:GenerateDataKey");
  if (!blob.ok()) return blob.status();
  key.ciphertext = std::move(*blob);
  key.key_arn = keys_.at(key.ciphertext.substr(4, kKeyIdBytes))->info.arn;
  return key;
}

}  // namespace strata::crypto
