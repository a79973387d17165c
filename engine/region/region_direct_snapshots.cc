// RegionImpl: EBS direct snapshots and the hidden builder volumes they (and copies into a new data
// key) are written into.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "region/region_impl.h"
#include "region/snapshot_records.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata::region {

absl::Status RegionImpl::ReopenResumableDirectSnapshots() {
  meta::WriteBatch batch;
  for (const std::string& id : resumable_) {
    meta::SnapshotRecord r = *tree_->Get(id);
    if (!volumes_.contains(r.volume_id)) {  // The builder is gone: the snapshot cannot finish.
      r.state = meta::SnapshotRecordState::kError;
      r.state_message = "the snapshot's builder volume is gone";
      batch.Put(meta::SnapshotKey(r.id), r.Encode());
      batch.Delete(meta::ResumableDirectKey(r.id));
      tree_->Put(r);
      continue;
    }
    auto pending = std::make_shared<PendingSnapshot>();
    pending->record = r;
    pending->direct = true;
    pending->frozen_yet = false;  // Frozen by CompleteDirectSnapshot, as before the stop.
    if (!r.parent_id.empty()) {
      STRATA_ASSIGN_OR_RETURN(pending->parent_ancestry, tree_->Ancestors(r.parent_id));
      const meta::SnapshotRecord parent = *tree_->Get(r.parent_id);
      pending->parent_seq = parent.seq;
      pending->compare_with_parent = parent.state == meta::SnapshotRecordState::kCompleted;
    }
    pending_[r.id] = pending;
    STRATA_LOG(kInfo, "region ", name_, ": direct snapshot ", r.id, " reopened");
  }
  resumable_.clear();
  return catalog_->Write(batch);
}

std::vector<std::string> RegionImpl::OpenDirectSnapshots() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  for (const auto& [id, pending] : pending_) {
    if (pending->direct) ids.push_back(id);
  }
  return ids;
}

absl::StatusOr<std::pair<std::shared_ptr<PendingSnapshot>, VolumeImpl*>>
RegionImpl::StartBuilderSnapshotLocked(const CreateVolumeRequest& builder_request,
                                       const CreateSnapshotRequest& request) {
  STRATA_ASSIGN_OR_RETURN(VolumeInfo builder, CreateVolumeLocked(builder_request, /*hidden=*/true));
  VolumeImpl* volume = volumes_.at(builder.id).get();
  absl::StatusOr<std::shared_ptr<PendingSnapshot>> pending =
      NewPending(*volume, request, next_seq_);
  if (!pending.ok()) {
    (void)DeleteVolumeLocked(builder.id);
    return pending.status();
  }
  (*pending)->direct = true;  // The builder goes when the snapshot completes or fails.
  if (absl::Status s = CommitNewSnapshotRecord((*pending)->record); !s.ok()) {
    (void)DeleteVolumeLocked(builder.id);
    return s;
  }
  pending_[(*pending)->record.id] = *pending;
  return std::make_pair(*pending, volume);
}

absl::StatusOr<SnapshotInfo> RegionImpl::CopyIntoNewDomainLocked(
    const CreateVolumeRequest& as_volume, const CreateSnapshotRequest& request) {
  // A hidden builder volume of the source in the new domain, frozen at once: its ingest reads
  // every chunk through the source and stores it under the new data key.
  STRATA_ASSIGN_OR_RETURN(auto started, StartBuilderSnapshotLocked(as_volume, request));
  auto& [pending, volume] = started;
  volume->Freeze(pending);
  tasks_.Push({Task::Kind::kIngest, pending->record.id, pending, 0});
  return ToInfo(pending->record);
}

absl::StatusOr<Region::DirectSnapshot> RegionImpl::StartDirectSnapshot(
    uint64_t size_bytes, const std::string& parent_snapshot_id,
    const CreateSnapshotRequest& request) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  CreateVolumeRequest builder_request;
  builder_request.size_bytes = size_bytes;
  builder_request.snapshot_id = parent_snapshot_id;
  builder_request.owner = request.owner;
  builder_request.encrypted = request.encrypted;
  builder_request.kms_key_id = request.kms_key_id;
  STRATA_ASSIGN_OR_RETURN(auto started, StartBuilderSnapshotLocked(builder_request, request));
  auto& [pending, volume] = started;
  pending->frozen_yet = false;  // Frozen by CompleteDirectSnapshot, once the blocks are in.
  if (request.survive_restart) {
    meta::WriteBatch batch;
    batch.Put(meta::ResumableDirectKey(pending->record.id), "");
    STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  }
  return DirectSnapshot{ToInfo(pending->record), volume->id()};
}

absl::StatusOr<std::shared_ptr<PendingSnapshot>> RegionImpl::FindOpenDirectLocked(
    const std::string& snapshot_id) {
  auto it = pending_.find(snapshot_id);
  if (it == pending_.end() || !it->second->direct || it->second->frozen_yet) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", snapshot_id, " is not a direct snapshot in progress"));
  }
  return it->second;
}

absl::Status RegionImpl::CompleteDirectSnapshot(const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<PendingSnapshot> pending,
                          FindOpenDirectLocked(snapshot_id));
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * builder, FindVolumeLocked(pending->record.volume_id));
  STRATA_RETURN_IF_ERROR(builder->Flush());
  builder->Freeze(pending);
  pending->frozen_yet = true;
  tasks_.Push({Task::Kind::kIngest, snapshot_id, pending, 0});
  return absl::OkStatus();
}

void RegionImpl::ReportDirectSnapshotProgress(const std::string& snapshot_id, int percent) {
  absl::MutexLock lock(&mu_);
  auto it = pending_.find(snapshot_id);
  if (it != pending_.end() && it->second->direct) {
    it->second->writer_percent.store(std::clamp(percent, 0, 99));
  }
}

absl::Status RegionImpl::AbortDirectSnapshot(const std::string& snapshot_id,
                                             const std::string& reason) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::shared_ptr<PendingSnapshot> pending,
                          FindOpenDirectLocked(snapshot_id));
  pending_.erase(snapshot_id);
  meta::SnapshotRecord r = *tree_->Get(snapshot_id);
  r.state = meta::SnapshotRecordState::kError;
  r.state_message = reason;
  meta::WriteBatch batch;
  batch.Put(meta::SnapshotKey(r.id), r.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(r);
  return DeleteVolumeLocked(pending->record.volume_id);
}

}  // namespace strata::region
