#pragma once
// ResolveWindows: a reader's cache of what a snapshot's chunks resolve to, by windows of
// kWindow chunks, so that a sequential reader (a restore, a snapshot export) looks the resolve
// index up once per window (one round trip on RADOS) instead of once per request. Entries are
// kept for one snapshot at a time; asking for another drops them.
//
// Why entries can be kept: what a chunk of snapshot S resolves to changes only if S itself is
// pruned. Pruning an ancestor moves its entries along the line unchanged (MergeIntoChild), and
// a snapshot a volume reads through is not pruned (RegionImpl::Prune). A reader of a snapshot
// that may be deleted under it checks afterwards (SnapshotReader).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "volume/snapshot_tree.h"

namespace strata::volume {

// Thread-safe.
class ResolveWindows {
 public:
  static constexpr uint64_t kWindow = 128;  // Chunks per index lookup.
  static constexpr size_t kWindowsKept = 32;

  // The entries of chunks [first, first + count) of snapshot `snapshot_id` (tree `tree_id`,
  // line `ancestry`).
  [[nodiscard]] absl::StatusOr<std::vector<ChunkEntry>> Resolve(
      const SnapshotTree& tree, const std::string& snapshot_id, uint64_t tree_id,
      const SnapshotTree::Ancestry& ancestry, uint64_t first, uint64_t count);

 private:
  absl::Mutex mu_;
  std::string snapshot_id_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, std::shared_ptr<const std::vector<ChunkEntry>>> windows_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::volume
