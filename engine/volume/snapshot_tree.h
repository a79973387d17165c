#pragma once
// The snapshot tree of a region: every snapshot record mirrored in memory, and chunk resolution
// through the "r/" index. A snapshot's manifest holds only its delta; the content of chunk c in
// snapshot S is the entry for c of S's nearest ancestor-or-self that has one, found with one
// index seek (entries are ordered newest first) and an in-memory ancestor test, never by walking
// manifests.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "chunk/chunk_key.h"
#include "meta/catalog.h"
#include "meta/schema.h"

namespace strata::volume {

// The resolved content of one chunk: a stored chunk, or zeros (nullopt).
using ChunkEntry = std::optional<chunk::ChunkKey>;
std::string EncodeEntry(const ChunkEntry& entry);
absl::StatusOr<ChunkEntry> DecodeEntry(absl::string_view bytes);

// Thread-safe. `catalog` must outlive it.
class SnapshotTree {
 public:
  using Ancestry = std::shared_ptr<const absl::flat_hash_set<uint64_t>>;

  explicit SnapshotTree(meta::Catalog* catalog) : catalog_(catalog) {}

  // Loads every snapshot record from the catalog.
  [[nodiscard]] absl::Status Load();

  std::optional<meta::SnapshotRecord> Get(const std::string& id) const;
  std::vector<meta::SnapshotRecord> All() const;
  // Snapshots whose parent is `id` (error snapshots are not part of the tree).
  std::vector<meta::SnapshotRecord> Children(const std::string& id) const;
  // Records an inserted or changed snapshot (after its catalog write).
  void Put(const meta::SnapshotRecord& record);
  void Erase(const std::string& id);

  // The seqs of `id` and all its ancestors. kNotFound for an unknown snapshot.
  [[nodiscard]] absl::StatusOr<Ancestry> Ancestors(const std::string& id) const;
  // Resolves chunk `chunk_index` of snapshot `id`.
  [[nodiscard]] absl::StatusOr<ChunkEntry> Resolve(const std::string& id,
                                                   uint64_t chunk_index) const;
  // Resolves chunks [first_chunk, first_chunk + count): by key (GetMany) when the range times
  // the line's length is at most kResolveByKeysLimit, else with one index scan.
  static constexpr uint64_t kResolveByKeysLimit = 2048;
  [[nodiscard]] absl::StatusOr<std::vector<ChunkEntry>> ResolveRange(uint64_t tree,
                                                                     const Ancestry& ancestry,
                                                                     uint64_t first_chunk,
                                                                     uint64_t count) const;
  // As Resolve, with the snapshot's tree, seq and ancestry already at hand.
  [[nodiscard]] absl::StatusOr<ChunkEntry> Resolve(uint64_t tree, uint64_t seq,
                                                   const Ancestry& ancestry,
                                                   uint64_t chunk_index) const;

 private:
  meta::Catalog* const catalog_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, meta::SnapshotRecord> records_ ABSL_GUARDED_BY(mu_);
  // Ancestry cache; cleared whenever a parent link changes.
  mutable absl::flat_hash_map<std::string, Ancestry> ancestry_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::volume
