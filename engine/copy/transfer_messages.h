#pragma once
// The transfer protocol's messages and their payload encodings (docs/formats/transfer.md).
// Decoders reject anything malformed with kDataLoss; nothing is trusted from the wire.

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "strata/snapshot.h"
#include "strata/transfer.h"

namespace strata::copy {

struct Hello {
  uint16_t version = 0;
  std::string region;   // The source region asked for.
  std::string account;  // The account the copy is made for.
  LinkModel link;       // What the sender must simulate on this stream.
  // The copy's rate, shared by every stream that names the same copy (0: no limit).
  uint64_t copy_bytes_per_second = 0;
  std::string copy_key;  // Names the copy (destination region and snapshot).
  uint64_t seed = 0;     // Of the fault generator.
};
std::string EncodeHello(const Hello& m);
absl::StatusOr<Hello> DecodeHello(absl::string_view payload);

struct Open {
  std::string snapshot_id;
  std::vector<std::string> base_candidates;  // Source snapshots the destination holds copies of.
  // Count the chunks the base already has (Manifest::skipped_chunks): a walk over every chunk
  // the snapshot holds, so only a copy's first OPEN asks, not each stream's.
  bool count_skipped = false;
};
std::string EncodeOpen(const Open& m);
absl::StatusOr<Open> DecodeOpen(absl::string_view payload);

struct Manifest {
  std::string lineage;
  std::string base_snapshot_id;  // The candidate chosen; empty for a full copy.
  uint64_t volume_size_bytes = 0;
  uint64_t chunk_size_bytes = 0;
  bool encrypted = false;
  std::vector<ChunkListing::Chunk> chunks;
  // Chunks the snapshot holds that the base has already, when OPEN asked (else 0). A statistic:
  // it follows the digest and is not covered by it, so every stream sees the same digest.
  uint64_t skipped_chunks = 0;
};
// The payload is the manifest, the SHA-256 of it, then skipped_chunks; decoding checks the
// digest.
std::string EncodeManifest(const Manifest& m);
absl::StatusOr<Manifest> DecodeManifest(absl::string_view payload);
// The digest an encoded manifest carries, hex.
std::string ManifestDigest(absl::string_view payload);

std::string EncodeGet(const std::vector<uint64_t>& chunk_indexes);
absl::StatusOr<std::vector<uint64_t>> DecodeGet(absl::string_view payload);

struct ChunkFrame {
  uint64_t index = 0;
  uint32_t raw_bytes = 0;
  std::array<uint8_t, 16> digest{};  // XXH3-128 of the raw bytes.
  bool compressed = false;
  std::string data;
};
std::string EncodeChunk(const ChunkFrame& m);
absl::StatusOr<ChunkFrame> DecodeChunk(absl::string_view payload);

// Builds the frame for `raw` (zstd when it saves space) and checks one on arrival: the raw
// bytes when the digest matches, kDataLoss otherwise.
ChunkFrame PackChunk(uint64_t index, absl::string_view raw);
absl::StatusOr<std::string> UnpackChunk(const ChunkFrame& frame, uint64_t max_raw_bytes);

}  // namespace strata::copy
