#pragma once
// AES-256-GCM sealing for envelope encryption: a random 96-bit nonce per message, the
// additional authenticated data bound to the ciphertext. Sealed = nonce(12) | ciphertext | tag(16).

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "strata/secret.h"

namespace strata::crypto {

inline constexpr size_t kAeadKeyBytes = 32;
inline constexpr size_t kAeadOverheadBytes = 12 + 16;

// REQUIRES: key.size() == kAeadKeyBytes.
std::string Seal(const SecretBytes& key, absl::string_view plaintext, absl::string_view aad);
// kDataLoss when the ciphertext, its tag or the AAD do not match (tampering or a wrong key).
absl::StatusOr<SecretBytes> Open(const SecretBytes& key, absl::string_view sealed,
                                 absl::string_view aad);

}  // namespace strata::crypto
