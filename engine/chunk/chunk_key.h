#pragma once
// A chunk's identity: dedup domain, fingerprint of its plaintext, and a variant number that
// tells apart chunks whose fingerprints collide (bytes are compared on every match).

#include <array>
#include <compare>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"

namespace strata::chunk {

using Fingerprint = std::array<uint8_t, 16>;

// Encoded: domain(4, big-endian) | fingerprint(16) | variant(2, big-endian).
inline constexpr size_t kChunkKeyBytes = 4 + 16 + 2;

struct ChunkKey {
  uint32_t domain = 0;
  Fingerprint fingerprint{};
  uint16_t variant = 0;

  auto operator<=>(const ChunkKey&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const ChunkKey& k) {
    return H::combine(std::move(h), k.domain, k.fingerprint, k.variant);
  }

  std::string Encode() const;
  static std::optional<ChunkKey> Decode(absl::string_view bytes);
  // "d<domain>:<32 hex digits>.<variant>", for logs and error messages.
  std::string ToString() const;
};

// The dedup domain of unencrypted volumes. Encrypted lineages get their own.
inline constexpr uint32_t kPlaintextDomain = 0;

// Computes the fingerprint of a chunk's plaintext (XXH3-128 seeded per domain).
Fingerprint FingerprintOf(uint32_t domain, std::span<const std::byte> data);

// Test-only hook: replaces FingerprintOf for the whole process (nullptr restores it), so tests
// can force collisions.
using FingerprintFn = Fingerprint (*)(uint32_t domain, std::span<const std::byte> data);
void SetFingerprintFnForTesting(FingerprintFn fn);

}  // namespace strata::chunk
