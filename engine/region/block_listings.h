#pragma once
// The EBS direct API's listings of a region's snapshots: ListSnapshotBlocks, ListChangedBlocks
// (in kApiBlockBytes blocks with tokens that name their content) and ListChunks (in chunks, for
// cross-region copy). Read-only over the catalog's manifests and resolve index.

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "meta/catalog.h"
#include "strata/snapshot.h"
#include "volume/snapshot_tree.h"

namespace strata::region {

// Thread-safe as the catalog and tree are. `catalog` and `tree` must outlive it.
class BlockListings {
 public:
  BlockListings(meta::Catalog& catalog, const volume::SnapshotTree& tree, uint64_t chunk_size_bytes,
                std::string region_name)
      : catalog_(catalog),
        tree_(tree),
        chunk_size_bytes_(chunk_size_bytes),
        region_name_(std::move(region_name)) {}

  // The blocks of a completed snapshot that hold data, from `next_token`, at most `max_results`
  // (1 to kMaxListResults).
  [[nodiscard]] absl::StatusOr<BlockListing> ListSnapshotBlocks(const std::string& snapshot_id,
                                                                const std::string& next_token,
                                                                uint64_t max_results);
  // The blocks that differ between two completed snapshots of one lineage: O(chunks changed
  // between them), from the deltas on the two paths below their common ancestor.
  [[nodiscard]] absl::StatusOr<BlockListing> ListChangedBlocks(
      const std::string& first_snapshot_id, const std::string& second_snapshot_id,
      const std::string& next_token, uint64_t max_results);
  // The chunks of `snapshot_id` that hold data, or those that differ from `base_snapshot_id`.
  [[nodiscard]] absl::StatusOr<ChunkListing> ListChunks(const std::string& snapshot_id,
                                                        const std::string& base_snapshot_id);

 private:
  // The token of block `block_index`: a digest of the chunk keys it resolves to.
  absl::StatusOr<std::string> BlockToken(const meta::SnapshotRecord& record,
                                         const volume::SnapshotTree::Ancestry& ancestry,
                                         uint64_t block_index) const;

  meta::Catalog& catalog_;
  const volume::SnapshotTree& tree_;
  const uint64_t chunk_size_bytes_;
  const std::string region_name_;
};

}  // namespace strata::region
