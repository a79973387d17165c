#include "region/snapshot_records.h"

#include "absl/strings/str_cat.h"
#include "util/coding.h"
#include "util/status_macros.h"

namespace strata {

const char* SnapshotStateName(SnapshotState state) {
  switch (state) {
    case SnapshotState::kPending:
      return "pending";
    case SnapshotState::kCompleted:
      return "completed";
    case SnapshotState::kError:
      return "error";
  }
  return "error";
}

}  // namespace strata

namespace strata::region {

SnapshotState ToState(meta::SnapshotRecordState state) {
  switch (state) {
    case meta::SnapshotRecordState::kPending:
      return SnapshotState::kPending;
    case meta::SnapshotRecordState::kCompleted:
      return SnapshotState::kCompleted;
    case meta::SnapshotRecordState::kError:
      return SnapshotState::kError;
  }
  return SnapshotState::kError;
}

void PutNextSeq(meta::WriteBatch& batch, uint64_t next_seq) {
  std::string value;
  util::PutFixed64(value, next_seq);
  batch.Put(meta::NextSeqKey(), value);
}

absl::StatusOr<meta::SnapshotRecord> FindSnapshot(const volume::SnapshotTree& tree,
                                                  const std::string& snapshot_id) {
  std::optional<meta::SnapshotRecord> r = tree.Get(snapshot_id);
  if (!r.has_value() || r->deleted || r->recycled_micros != 0) {  // Deleted, or in the bin.
    return absl::NotFoundError(absl::StrCat("snapshot ", snapshot_id, " does not exist"));
  }
  return *r;
}

absl::StatusOr<meta::SnapshotRecord> FindCompletedSnapshot(const volume::SnapshotTree& tree,
                                                           const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(tree, snapshot_id));
  if (r.state != meta::SnapshotRecordState::kCompleted) {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot ", snapshot_id, " is ", SnapshotStateName(ToState(r.state)), ", not completed"));
  }
  return r;
}

}  // namespace strata::region
