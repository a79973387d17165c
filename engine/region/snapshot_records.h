#pragma once
// Lookups of a region's snapshot records (in its SnapshotTree) that every part of the region
// shares: by id, completed or not, and the public state of a record.

#include <string>

#include "absl/status/statusor.h"
#include "meta/catalog.h"
#include "meta/schema.h"
#include "strata/snapshot.h"
#include "volume/snapshot_tree.h"

namespace strata::region {

SnapshotState ToState(meta::SnapshotRecordState state);

// Adds the region's next snapshot sequence number to `batch`.
void PutNextSeq(meta::WriteBatch& batch, uint64_t next_seq);

// The snapshot `snapshot_id` unless it is unknown, deleted or in the Recycle Bin (kNotFound).
[[nodiscard]] absl::StatusOr<meta::SnapshotRecord> FindSnapshot(const volume::SnapshotTree& tree,
                                                                const std::string& snapshot_id);

// The snapshot `snapshot_id` when it is completed; kFailedPrecondition when pending or failed.
[[nodiscard]] absl::StatusOr<meta::SnapshotRecord> FindCompletedSnapshot(
    const volume::SnapshotTree& tree, const std::string& snapshot_id);

}  // namespace strata::region
