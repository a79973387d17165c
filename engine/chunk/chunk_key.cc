#include "chunk/chunk_key.h"

#include <atomic>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "xxhash.h"

namespace strata::chunk {
namespace {

std::atomic<FingerprintFn> g_fingerprint_override{nullptr};

}  // namespace

std::string ChunkKey::Encode() const {
  std::string out(kChunkKeyBytes, '\0');
  out[0] = static_cast<char>(domain >> 24);
  out[1] = static_cast<char>(domain >> 16);
  out[2] = static_cast<char>(domain >> 8);
  out[3] = static_cast<char>(domain);
  std::memcpy(out.data() + 4, fingerprint.data(), fingerprint.size());
  out[20] = static_cast<char>(variant >> 8);
  out[21] = static_cast<char>(variant);
  return out;
}

std::optional<ChunkKey> ChunkKey::Decode(absl::string_view bytes) {
  if (bytes.size() != kChunkKeyBytes) return std::nullopt;
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  ChunkKey key;
  key.domain = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
  std::memcpy(key.fingerprint.data(), p + 4, key.fingerprint.size());
  key.variant = static_cast<uint16_t>((p[20] << 8) | p[21]);
  return key;
}

std::string ChunkKey::ToString() const {
  return absl::StrCat("d", domain, ":",
                      absl::BytesToHexString(absl::string_view(
                          reinterpret_cast<const char*>(fingerprint.data()), fingerprint.size())),
                      ".", variant);
}

Fingerprint FingerprintOf(uint32_t domain, std::span<const std::byte> data) {
  if (FingerprintFn fn = g_fingerprint_override.load(); fn != nullptr) return fn(domain, data);
  const XXH128_hash_t h =
      XXH3_128bits_withSeed(data.data(), data.size(), 0x5354524154410000ull ^ domain);
  Fingerprint fp;
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, h);
  std::memcpy(fp.data(), canonical.digest, fp.size());
  return fp;
}

void SetFingerprintFnForTesting(FingerprintFn fn) { g_fingerprint_override.store(fn); }

}  // namespace strata::chunk
