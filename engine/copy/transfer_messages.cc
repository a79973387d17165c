#include "copy/transfer_messages.h"

#include <openssl/sha.h>
#include <xxhash.h>
#include <zstd.h>

#include <bit>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "util/coding.h"

namespace strata::copy {
namespace {

constexpr size_t kDigestBytes = SHA256_DIGEST_LENGTH;
constexpr uint32_t kMaxListed = 1u << 21;  // Chunk indexes in one message.

absl::Status Malformed(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("transfer: a malformed ", what, " message"));
}

void PutDouble(std::string& out, double v) { util::PutFixed64(out, std::bit_cast<uint64_t>(v)); }
bool GetDouble(util::Decoder& in, double& v) {
  uint64_t bits = 0;
  if (!in.GetFixed64(bits)) return false;
  v = std::bit_cast<double>(bits);
  return v >= 0 && v <= 1;
}

}  // namespace

std::string EncodeHello(const Hello& m) {
  std::string out;
  util::PutFixed16(out, m.version);
  util::PutLengthPrefixed(out, m.region);
  util::PutLengthPrefixed(out, m.account);
  util::PutFixed64(out, m.link.bandwidth_bytes_per_second);
  util::PutFixed32(out, m.link.rtt_ms);
  util::PutFixed32(out, m.link.jitter_ms);
  PutDouble(out, m.link.corrupt_rate);
  PutDouble(out, m.link.drop_rate);
  util::PutFixed32(out, m.link.streams);
  util::PutFixed64(out, m.copy_bytes_per_second);
  util::PutLengthPrefixed(out, m.copy_key);
  util::PutFixed64(out, m.seed);
  return out;
}

absl::StatusOr<Hello> DecodeHello(absl::string_view payload) {
  util::Decoder in(payload);
  Hello m;
  if (!in.GetFixed16(m.version) || !in.GetLengthPrefixed(m.region) ||
      !in.GetLengthPrefixed(m.account) || !in.GetFixed64(m.link.bandwidth_bytes_per_second) ||
      !in.GetFixed32(m.link.rtt_ms) || !in.GetFixed32(m.link.jitter_ms) ||
      !GetDouble(in, m.link.corrupt_rate) || !GetDouble(in, m.link.drop_rate) ||
      !in.GetFixed32(m.link.streams) || !in.GetFixed64(m.copy_bytes_per_second) ||
      !in.GetLengthPrefixed(m.copy_key) || !in.GetFixed64(m.seed) || !in.done()) {
    return Malformed("hello");
  }
  return m;
}

std::string EncodeOpen(const Open& m) {
  std::string out;
  util::PutLengthPrefixed(out, m.snapshot_id);
  util::PutFixed32(out, static_cast<uint32_t>(m.base_candidates.size()));
  for (const std::string& b : m.base_candidates) util::PutLengthPrefixed(out, b);
  out.push_back(m.count_skipped ? 1 : 0);
  return out;
}

absl::StatusOr<Open> DecodeOpen(absl::string_view payload) {
  util::Decoder in(payload);
  Open m;
  uint32_t n = 0;
  if (!in.GetLengthPrefixed(m.snapshot_id) || !in.GetFixed32(n) || n > 1024) {
    return Malformed("open");
  }
  m.base_candidates.resize(n);
  for (std::string& b : m.base_candidates) {
    if (!in.GetLengthPrefixed(b)) return Malformed("open");
  }
  if (!in.GetBool(m.count_skipped) || !in.done()) return Malformed("open");
  return m;
}

std::string EncodeManifest(const Manifest& m) {
  std::string out;
  util::PutLengthPrefixed(out, m.lineage);
  util::PutLengthPrefixed(out, m.base_snapshot_id);
  util::PutFixed64(out, m.volume_size_bytes);
  util::PutFixed64(out, m.chunk_size_bytes);
  out.push_back(m.encrypted ? 1 : 0);
  util::PutFixed32(out, static_cast<uint32_t>(m.chunks.size()));
  for (const ChunkListing::Chunk& c : m.chunks) {
    util::PutFixed64(out, c.index);
    out.push_back(c.zero ? 1 : 0);
  }
  unsigned char digest[kDigestBytes];
  SHA256(reinterpret_cast<const unsigned char*>(out.data()), out.size(), digest);
  out.append(reinterpret_cast<const char*>(digest), kDigestBytes);
  util::PutFixed64(out, m.skipped_chunks);
  return out;
}

absl::StatusOr<Manifest> DecodeManifest(absl::string_view payload) {
  constexpr size_t kTrailer = kDigestBytes + 8;
  if (payload.size() < kTrailer) return Malformed("manifest");
  const absl::string_view body = payload.substr(0, payload.size() - kTrailer);
  unsigned char digest[kDigestBytes];
  SHA256(reinterpret_cast<const unsigned char*>(body.data()), body.size(), digest);
  if (std::memcmp(digest, payload.data() + body.size(), kDigestBytes) != 0) {
    return absl::DataLossError("transfer: the manifest does not match its digest");
  }
  Manifest m;
  util::Decoder skipped(payload.substr(body.size() + kDigestBytes));
  skipped.GetFixed64(m.skipped_chunks);  // Present: the size was checked.
  util::Decoder in(body);
  uint32_t n = 0;
  if (!in.GetLengthPrefixed(m.lineage) || !in.GetLengthPrefixed(m.base_snapshot_id) ||
      !in.GetFixed64(m.volume_size_bytes) || !in.GetFixed64(m.chunk_size_bytes) ||
      !in.GetBool(m.encrypted) || !in.GetFixed32(n) || n > kMaxListed || n > body.size() / 9 ||
      m.chunk_size_bytes == 0 || m.chunk_size_bytes > (64u << 20)) {
    return Malformed("manifest");  // (An entry takes 9 bytes: no allocation beyond the input.)
  }
  m.chunks.resize(n);
  const uint64_t chunk_count = (m.volume_size_bytes + m.chunk_size_bytes - 1) / m.chunk_size_bytes;
  for (ChunkListing::Chunk& c : m.chunks) {
    if (!in.GetFixed64(c.index) || !in.GetBool(c.zero) || c.index >= chunk_count) {
      return Malformed("manifest");
    }
  }
  if (!in.done()) return Malformed("manifest");
  return m;
}

std::string ManifestDigest(absl::string_view payload) {
  if (payload.size() < kDigestBytes + 8) return "";
  return absl::BytesToHexString(payload.substr(payload.size() - kDigestBytes - 8, kDigestBytes));
}

std::string EncodeGet(const std::vector<uint64_t>& chunk_indexes) {
  std::string out;
  util::PutFixed32(out, static_cast<uint32_t>(chunk_indexes.size()));
  for (uint64_t c : chunk_indexes) util::PutFixed64(out, c);
  return out;
}

absl::StatusOr<std::vector<uint64_t>> DecodeGet(absl::string_view payload) {
  util::Decoder in(payload);
  uint32_t n = 0;
  if (!in.GetFixed32(n) || n > 4096) return Malformed("get");
  std::vector<uint64_t> out(n);
  for (uint64_t& c : out) {
    if (!in.GetFixed64(c)) return Malformed("get");
  }
  if (!in.done()) return Malformed("get");
  return out;
}

std::string EncodeChunk(const ChunkFrame& m) {
  std::string out;
  util::PutFixed64(out, m.index);
  util::PutFixed32(out, m.raw_bytes);
  out.append(reinterpret_cast<const char*>(m.digest.data()), m.digest.size());
  out.push_back(m.compressed ? 1 : 0);
  out += m.data;
  return out;
}

absl::StatusOr<ChunkFrame> DecodeChunk(absl::string_view payload) {
  util::Decoder in(payload);
  ChunkFrame m;
  std::string digest;
  if (!in.GetFixed64(m.index) || !in.GetFixed32(m.raw_bytes) || !in.GetBytes(16, digest) ||
      !in.GetBool(m.compressed)) {
    return Malformed("chunk");
  }
  std::memcpy(m.digest.data(), digest.data(), 16);
  m.data = std::string(payload.substr(8 + 4 + 16 + 1));
  return m;
}

ChunkFrame PackChunk(uint64_t index, absl::string_view raw) {
  ChunkFrame f;
  f.index = index;
  f.raw_bytes = static_cast<uint32_t>(raw.size());
  const XXH128_hash_t h = XXH3_128bits(raw.data(), raw.size());
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, h);
  std::memcpy(f.digest.data(), canonical.digest, 16);
  std::string packed(ZSTD_compressBound(raw.size()), '\0');
  const size_t n = ZSTD_compress(packed.data(), packed.size(), raw.data(), raw.size(), 1);
  if (!ZSTD_isError(n) && n < raw.size()) {
    packed.resize(n);
    f.compressed = true;
    f.data = std::move(packed);
  } else {
    f.data = std::string(raw);
  }
  return f;
}

absl::StatusOr<std::string> UnpackChunk(const ChunkFrame& frame, uint64_t max_raw_bytes) {
  if (frame.raw_bytes > max_raw_bytes) {
    return absl::DataLossError(
        absl::StrCat("chunk ", frame.index, ": ", frame.raw_bytes, " bytes, more than a chunk"));
  }
  std::string raw;
  if (frame.compressed) {
    raw.resize(frame.raw_bytes);
    const size_t n = ZSTD_decompress(raw.data(), raw.size(), frame.data.data(), frame.data.size());
    if (ZSTD_isError(n) || n != frame.raw_bytes) {
      return absl::DataLossError(absl::StrCat("chunk ", frame.index, " does not decompress"));
    }
  } else {
    if (frame.data.size() != frame.raw_bytes) {
      return absl::DataLossError(absl::StrCat("chunk ", frame.index, " has the wrong length"));
    }
    raw = frame.data;
  }
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits(raw.data(), raw.size()));
  if (std::memcmp(canonical.digest, frame.digest.data(), 16) != 0) {
    return absl::DataLossError(absl::StrCat("chunk ", frame.index, " does not match its digest"));
  }
  return raw;
}

}  // namespace strata::copy
