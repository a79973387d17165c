#pragma once
// The chunk store: content-addressed, refcounted, checksummed chunks. This header is the narrow
// interface the rest of the engine uses; SegmentChunkStore (segment files plus an index in the
// catalog) and RadosChunkStore (an object per chunk, the index in the catalog) implement it.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "chunk/chunk_key.h"
#include "meta/catalog.h"
#include "strata/env.h"

namespace strata::chunk {

// Where a chunk's record is and how many manifest entries reference it.
// Catalog value of "c/<key>": segment_id(8) | offset(8) | stored_length(4) | raw_length(4) |
// flags(1) | refcount(8), little-endian. docs/formats/catalog.md.
struct ChunkLocation {
  uint64_t segment_id = 0;
  uint64_t offset_bytes = 0;
  uint32_t stored_length = 0;
  uint32_t raw_length = 0;
  uint8_t flags = 0;
  uint64_t refcount = 0;

  std::string Encode() const;
  static std::optional<ChunkLocation> Decode(absl::string_view bytes);
};
inline constexpr size_t kChunkLocationBytes = 8 + 8 + 4 + 4 + 1 + 8;

struct ChunkStoreOptions {
  bool compression = false;  // zstd before storing. Default: false.
  bool read_only = false;    // Open for checking only: no new segment. Default: false.
  // RADOS only: an unreferenced chunk is freed once untouched this long (other nodes may hold
  // it for a snapshot they have not committed). Default: 1 h.
  uint64_t gc_grace_seconds = 3600;
  // Segment files only: how many may be open at once (the least recently used close first; the
  // active segment and unsynced ones stay open). One descriptor per 64 MiB segment would pass
  // the process's limit at a few TB. Default: 64.
  uint64_t max_open_segments = 64;
};

struct ChunkStoreStats {
  uint64_t chunk_count = 0;
  uint64_t referenced_chunk_count = 0;
  uint64_t stored_bytes = 0;
  uint64_t segment_file_bytes = 0;
  uint64_t segment_count = 0;
};

// Thread-safe.
class ChunkStore {
 public:
  virtual ~ChunkStore() = default;

  // Opens the segment files in `dir` (created if missing). `env` and `catalog` must outlive it.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ChunkStore>> OpenSegmentStore(
      Env* env, const std::string& dir, meta::Catalog* catalog, const ChunkStoreOptions& options);

  // Opens the chunk store of the RADOS backend: one object per chunk in `data` (a pool and
  // namespace), the index in `catalog`. docs/formats/rados.md.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ChunkStore>> OpenRadosStore(
      rados::Pool data, meta::Catalog* catalog, const ChunkStoreOptions& options);

  // Stores `data` (not all zeros) in `domain`: returns the key of a stored chunk with the same
  // bytes (compared, not just fingerprinted), or appends a new record. The key is pinned (safe
  // from garbage collection) until Commit adds a reference for it or Unpin releases it.
  [[nodiscard]] virtual absl::StatusOr<ChunkKey> Put(uint32_t domain,
                                                     std::span<const std::byte> data) = 0;
  // Fills `out` (exactly the chunk's size) with a chunk. A record that fails its checksum or
  // format is kDataLoss naming the chunk; an unknown key is kNotFound.
  [[nodiscard]] virtual absl::Status Read(const ChunkKey& key, std::span<std::byte> out) = 0;
  // Reads chunks keys[i] into outs[i], as Read does for each; on RADOS all at once (the reads
  // of a large request overlap). The first error is returned; the other outputs are unspecified.
  [[nodiscard]] virtual absl::Status ReadMany(std::span<const ChunkKey> keys,
                                              std::span<const std::span<std::byte>> outs) = 0;
  // Atomically writes `batch` together with refcount changes: +1 per entry of `add_refs` (each
  // pinned by a Put; the pin is released) and -1 per entry of `drop_refs`. New chunks' records
  // are synced first. On failure nothing changes and pins stay.
  [[nodiscard]] virtual absl::Status Commit(meta::WriteBatch batch,
                                            std::span<const ChunkKey> add_refs,
                                            std::span<const ChunkKey> drop_refs) = 0;
  // How many Puts callers should keep in flight at once: 1 for segment files (appends are
  // serialized; the caller's hashing is the cost), more on RADOS (each Put waits a round trip).
  virtual int PutConcurrency() const = 0;
  // True when reads wait on the network (RADOS): callers gain from running several at once.
  virtual bool reads_wait_on_network() const = 0;
  // Releases pins taken by Put for keys that will not be committed.
  virtual void Unpin(std::span<const ChunkKey> keys) = 0;
  // Drops unreferenced chunks and compacts segments whose live share is below half; returns
  // the bytes given back to the file system.
  [[nodiscard]] virtual absl::StatusOr<uint64_t> CollectGarbage() = 0;
  [[nodiscard]] virtual absl::StatusOr<ChunkStoreStats> GetStats() = 0;

  // For fsck: visits every index entry.
  using ChunkVisitor = std::function<void(const ChunkKey&, const ChunkLocation&)>;
  [[nodiscard]] virtual absl::Status ForEachChunk(const ChunkVisitor& visit) = 0;
  // For fsck: counts stored chunks the index does not name (RADOS: objects of uncommitted or
  // crashed ingests), as those still within the grace period and those past it (leaks).
  // Segment files have no such count (dead records are compaction's): {0, 0}.
  struct Unindexed {
    uint64_t recent = 0;
    uint64_t leaked = 0;
  };
  [[nodiscard]] virtual absl::StatusOr<Unindexed> CountUnindexed() = 0;
  // For fsck: reads and verifies the record at `location` (checksum, key, length).
  [[nodiscard]] virtual absl::Status VerifyRecord(const ChunkKey& key,
                                                  const ChunkLocation& location) = 0;
  // For tests: the path of a segment file (empty on RADOS).
  virtual std::string SegmentPath(uint64_t segment_id) const = 0;
};

}  // namespace strata::chunk
