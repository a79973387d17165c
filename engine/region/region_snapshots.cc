// RegionImpl: the snapshot catalog (create, copy, describe, tag, share, delete, read).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "region/region_impl.h"
#include "region/snapshot_reader.h"
#include "region/snapshot_records.h"
#include "util/coding.h"
#include "util/log.h"
#include "util/status_macros.h"
#include "volume/tags.h"

namespace strata::region {

using volume::ApplyTags;
using volume::ValidateTags;

absl::Status RegionImpl::SetSnapshotPermissions(const std::string& snapshot_id,
                                                const std::vector<std::string>& shared_with) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(*tree_, snapshot_id));
  r.shared_with = shared_with;
  if (auto it = pending_.find(snapshot_id); it != pending_.end()) {
    it->second->record.shared_with = shared_with;
  }
  meta::WriteBatch batch;
  batch.Put(meta::SnapshotKey(r.id), r.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(r);
  return absl::OkStatus();
}

SnapshotInfo RegionImpl::ToInfo(const meta::SnapshotRecord& r) const {
  SnapshotInfo info;
  info.id = r.id;
  info.volume_id = r.volume_id;
  info.parent_id = r.parent_id;
  info.state = ToState(r.state);
  info.state_message = r.state_message;
  info.volume_size_bytes = r.volume_size_bytes;
  info.incremental_bytes = r.incremental_bytes;
  info.changed_chunk_count = r.changed_chunk_count;
  info.start_time_micros = r.start_time_micros;
  info.description = r.description;
  info.tags = r.tags;
  info.owner = r.owner;
  info.shared_with = r.shared_with;
  info.encrypted = r.encryption.encrypted();
  info.kms_key_id = r.encryption.kms_key_arn;
  info.progress_percent = r.state == meta::SnapshotRecordState::kCompleted ? 100 : 0;
  info.lock = ToLock(r.lock);
  if (info.lock.has_value()) info.lock_state = info.lock->StateAt(env_->NowMicros());
  if (r.recycled_micros != 0) {
    info.recycle_bin = RecycleBinEntry{r.recycled_micros, r.recycle_until_micros};
  }
  if (auto it = pending_.find(r.id); it != pending_.end()) {
    const uint64_t total = it->second->frozen_count.load();
    const uint64_t done = it->second->ingested_count.load();
    info.progress_percent =
        total == 0 ? 0 : static_cast<int>(std::min<uint64_t>(99, done * 100 / total));
    if (it->second->direct && !it->second->frozen_yet) {
      info.progress_percent = it->second->writer_percent.load();
    }
  }
  return info;
}

absl::StatusOr<std::shared_ptr<PendingSnapshot>> RegionImpl::NewPending(
    VolumeImpl& volume, const CreateSnapshotRequest& request, uint64_t seq) {
  STRATA_RETURN_IF_ERROR(ValidateTags(request.tags));
  if (request.description.size() > 255) {
    return absl::InvalidArgumentError("a description is at most 255 characters");
  }
  const meta::VolumeRecord vr = volume.record();
  auto pending = std::make_shared<PendingSnapshot>();
  meta::SnapshotRecord& r = pending->record;
  r.id = NewId("snap");
  r.seq = seq;
  r.volume_id = vr.id;
  r.tree = vr.tree;
  r.parent_id = vr.last_snapshot_id;
  r.volume_size_bytes = vr.size_bytes;
  r.start_time_micros = env_->NowMicros();
  r.description = request.description;
  r.tags = request.tags;
  r.owner = request.owner;
  r.encryption = vr.encryption;  // A snapshot is encrypted as its volume, with its data key.
  if (!r.parent_id.empty()) {
    STRATA_ASSIGN_OR_RETURN(pending->parent_ancestry, tree_->Ancestors(r.parent_id));
    const meta::SnapshotRecord parent = *tree_->Get(r.parent_id);
    pending->parent_seq = parent.seq;
    pending->compare_with_parent = parent.state == meta::SnapshotRecordState::kCompleted;
  }
  return pending;
}

absl::StatusOr<SnapshotInfo> RegionImpl::CreateSnapshot(const CreateSnapshotRequest& request) {
  STRATA_ASSIGN_OR_RETURN(std::vector<SnapshotInfo> infos, CreateSnapshots({request}));
  return infos.front();
}

absl::StatusOr<std::vector<SnapshotInfo>> RegionImpl::CreateSnapshots(
    const std::vector<CreateSnapshotRequest>& requests) {
  if (requests.empty()) return absl::InvalidArgumentError("no volumes to snapshot");
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  // Ordered by volume id: the gates are taken in this order, so two calls cannot deadlock.
  std::map<std::string, std::pair<VolumeImpl*, std::shared_ptr<PendingSnapshot>>> plan;
  for (size_t i = 0; i < requests.size(); ++i) {
    STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(requests[i].volume_id));
    if (plan.contains(volume->id())) {
      return absl::InvalidArgumentError(absl::StrCat("volume ", volume->id(), " is listed twice"));
    }
    STRATA_ASSIGN_OR_RETURN(std::shared_ptr<PendingSnapshot> pending,
                            NewPending(*volume, requests[i], next_seq_ + i));
    plan[volume->id()] = {volume, std::move(pending)};
  }
  // In the tree before the freeze makes them the volumes' bases: a write racing with this call
  // resolves chunks it does not hold through its volume's base (a copy-up) once the gates open,
  // before the catalog write below is done.
  for (auto& [id, entry] : plan) tree_->Put(entry.second->record);
  // The point in time: every volume's writes are paused together for the O(1) swaps.
  for (auto& [id, entry] : plan) entry.first->LockGate();
  for (auto& [id, entry] : plan) entry.first->FreezeLocked(entry.second);
  for (auto it = plan.rbegin(); it != plan.rend(); ++it) it->second.first->UnlockGate();
  meta::WriteBatch batch;
  for (auto& [id, entry] : plan) {
    batch.Put(meta::SnapshotKey(entry.second->record.id), entry.second->record.Encode());
    batch.Put(meta::VolumeKey(id), entry.first->record().Encode());
  }
  PutNextSeq(batch, next_seq_ + requests.size());
  if (absl::Status s = catalog_->Write(batch); !s.ok()) {
    for (auto& [id, entry] : plan) {
      entry.first->Unfreeze(entry.second);
      tree_->Erase(entry.second->record.id);
    }
    return s;
  }
  next_seq_ += requests.size();
  std::vector<SnapshotInfo> infos;
  for (const CreateSnapshotRequest& request : requests) {
    const std::shared_ptr<PendingSnapshot>& pending = plan[request.volume_id].second;
    pending_[pending->record.id] = pending;
    tasks_.Push({Task::Kind::kIngest, pending->record.id, pending, 0});
    infos.push_back(ToInfo(pending->record));
  }
  return infos;
}

absl::StatusOr<SnapshotInfo> RegionImpl::CopySnapshot(const std::string& source_snapshot_id,
                                                      const CreateSnapshotRequest& request) {
  STRATA_RETURN_IF_ERROR(ValidateTags(request.tags));
  if (request.description.size() > 255) {
    return absl::InvalidArgumentError("a description is at most 255 characters");
  }
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord source,
                          FindUsableSnapshotLocked(source_snapshot_id));
  if (request.encrypted || !request.kms_key_id.empty() || source.encryption.encrypted()) {
    // Which key the copy gets decides whether it can share the source's data.
    CreateVolumeRequest as_volume;
    as_volume.snapshot_id = source.id;
    as_volume.owner = request.owner;
    as_volume.encrypted = true;
    as_volume.kms_key_id = request.kms_key_id;
    bool same_key = false;
    if (source.encryption.encrypted()) {
      const std::string key_ref =
          request.kms_key_id.empty() ? source.encryption.kms_key_arn : request.kms_key_id;
      STRATA_ASSIGN_OR_RETURN(KmsKeyInfo key, kms_->DescribeKey(request.owner, key_ref));
      same_key = key.arn == source.encryption.kms_key_arn;
    }
    if (!same_key) return CopyIntoNewDomainLocked(as_volume, request);
    // Same key: the copy shares the source's data key, if the caller may use it.
    STRATA_RETURN_IF_ERROR(encryption_->Choose(as_volume, source.encryption).status());
  }
  meta::SnapshotRecord r;
  r.encryption = source.encryption;
  r.id = NewId("snap");
  r.seq = next_seq_;
  r.volume_id = source.volume_id;
  r.tree = source.tree;
  r.parent_id = source.id;
  r.state = meta::SnapshotRecordState::kCompleted;
  r.volume_size_bytes = source.volume_size_bytes;
  r.start_time_micros = env_->NowMicros();
  r.description = request.description;
  r.tags = request.tags;
  r.owner = request.owner;
  STRATA_RETURN_IF_ERROR(CommitNewSnapshotRecord(r));
  return ToInfo(r);
}

absl::Status RegionImpl::CheckSnapshotKeyAccess(const std::string& account,
                                                const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(*tree_, snapshot_id));
  return encryption_->CheckDecrypt(account, r.encryption);
}

absl::Status RegionImpl::CommitNewSnapshotRecord(const meta::SnapshotRecord& record) {
  meta::WriteBatch batch;
  batch.Put(meta::SnapshotKey(record.id), record.Encode());
  PutNextSeq(batch, next_seq_ + 1);
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  ++next_seq_;
  tree_->Put(record);
  return absl::OkStatus();
}

absl::StatusOr<SnapshotInfo> RegionImpl::DescribeSnapshot(const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::StatusOr<meta::SnapshotRecord> r = FindSnapshot(*tree_, snapshot_id);
  absl::MutexLock lock(&mu_);
  if (!r.ok()) {
    STRATA_ASSIGN_OR_RETURN(std::optional<SnapshotInfo> archived,
                            DescribeArchivedLocked(snapshot_id));
    if (archived.has_value()) return *std::move(archived);
    return r.status();
  }
  SnapshotInfo info = ToInfo(*r);
  STRATA_ASSIGN_OR_RETURN(std::optional<ArchiveRecord> a, GetArchiveRecord(snapshot_id));
  if (a.has_value()) AnnotateTier(info, *a);
  return info;
}

absl::StatusOr<std::vector<SnapshotInfo>> RegionImpl::ListSnapshots() {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::vector<ListedSnapshot> listed, ListedSnapshots());
  std::vector<SnapshotInfo> out;
  for (const ListedSnapshot& l : listed) {
    out.push_back(ToInfo(l.record));
    if (l.archive.has_value()) AnnotateTier(out.back(), *l.archive);
  }
  return out;
}

absl::StatusOr<SnapshotInfo> RegionImpl::WaitForSnapshot(const std::string& snapshot_id,
                                                         uint64_t timeout_ms) {
  const absl::Time deadline = absl::Now() + absl::Milliseconds(timeout_ms);
  for (;;) {
    STRATA_ASSIGN_OR_RETURN(SnapshotInfo info, DescribeSnapshot(snapshot_id));
    if (info.state != SnapshotState::kPending || absl::Now() >= deadline) return info;
    absl::SleepFor(absl::Milliseconds(2));
  }
}

absl::Status RegionImpl::CommitWithSnapshots(const std::vector<std::string>& snapshot_ids,
                                             const meta::WriteBatch& batch) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  for (const std::string& id : snapshot_ids) {
    STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(*tree_, id));
    if (r.state == meta::SnapshotRecordState::kError) {
      return absl::FailedPreconditionError(
          absl::StrCat("snapshot ", id, " failed: ", r.state_message));
    }
  }
  return catalog_->Write(batch);
}

absl::Status RegionImpl::DeleteSnapshot(const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  absl::StatusOr<meta::SnapshotRecord> found = FindSnapshot(*tree_, snapshot_id);
  if (absl::IsNotFound(found.status())) {
    STRATA_ASSIGN_OR_RETURN(const bool archived, DeleteArchivedLocked(snapshot_id));
    if (archived) return absl::OkStatus();
  }
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, std::move(found));
  std::string image_id;
  STRATA_RETURN_IF_ERROR(
      catalog_->Scan(meta::ImageRefPrefix(snapshot_id), "", [&](absl::string_view key, auto) {
        image_id = std::string(key.substr(meta::ImageRefPrefix(snapshot_id).size()));
        return false;
      }));
  if (!image_id.empty()) {
    return WithAwsErrorCode(
        absl::FailedPreconditionError(
            absl::StrCat("the snapshot ", snapshot_id, " is currently in use by ", image_id)),
        "InvalidSnapshot.InUse");
  }
  STRATA_RETURN_IF_ERROR(CheckNotLocked(r));
  meta::WriteBatch batch;
  if (r.state == meta::SnapshotRecordState::kPending) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot ", snapshot_id, " is pending; delete it once it completes"));
  }
  // Refused while it is being archived or restored; a finished tiering's archive goes with it.
  STRATA_RETURN_IF_ERROR(DeleteArchivedLocked(snapshot_id).status());
  if (r.state == meta::SnapshotRecordState::kCompleted) {
    STRATA_ASSIGN_OR_RETURN(bool recycled, RecycleSnapshotLocked(r));
    if (recycled) return absl::OkStatus();
  }
  STRATA_RETURN_IF_ERROR(DropFastRestores(r.id, batch));  // Deleting disables them, as on EBS.
  if (r.state == meta::SnapshotRecordState::kError) {     // Holds no data.
    batch.Delete(meta::SnapshotKey(r.id));
    STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
    tree_->Erase(r.id);
    return absl::OkStatus();
  }
  r.deleted = true;
  batch.Put(meta::SnapshotKey(r.id), r.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(r);
  tasks_.Push({Task::Kind::kPrune, r.id, nullptr, 0});
  return absl::OkStatus();
}

absl::Status RegionImpl::TagSnapshot(const std::string& snapshot_id,
                                     const std::map<std::string, std::string>& set,
                                     const std::vector<std::string>& remove) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindSnapshot(*tree_, snapshot_id));
  ApplyTags(r.tags, set, remove);
  STRATA_RETURN_IF_ERROR(ValidateTags(r.tags));
  if (auto it = pending_.find(snapshot_id); it != pending_.end()) {
    // The completion writes the pending copy of the record: keep it current.
    it->second->record.tags = r.tags;
  }
  meta::WriteBatch batch;
  batch.Put(meta::SnapshotKey(r.id), r.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(r);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Snapshot>> RegionImpl::OpenSnapshot(const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());  // A fresh snapshot tree.
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindCompletedSnapshot(*tree_, snapshot_id));
  STRATA_ASSIGN_OR_RETURN(SnapshotTree::Ancestry ancestry, tree_->Ancestors(snapshot_id));
  auto reader = std::make_unique<SnapshotReader>(*tree_, *chunks_, domain_keys_, std::move(r),
                                                 std::move(ancestry), chunk_size_bytes_);
  {
    absl::MutexLock lock(&readers_mu_);
    ++open_readers_[snapshot_id];
  }
  reader->set_on_close([this, snapshot_id] {
    absl::MutexLock lock(&readers_mu_);
    if (--open_readers_[snapshot_id] == 0) open_readers_.erase(snapshot_id);
  });
  return reader;
}

absl::StatusOr<std::string> RegionImpl::GetSnapshotBlock(const std::string& snapshot_id,
                                                         uint64_t block_index) {
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Snapshot> snapshot, OpenSnapshot(snapshot_id));
  const uint64_t offset = block_index * kApiBlockBytes;
  if (block_index >= snapshot->size_bytes() / kApiBlockBytes + 1 ||
      offset >= snapshot->size_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("block ", block_index, " is past the end of ", snapshot_id));
  }
  std::string out(std::min<uint64_t>(kApiBlockBytes, snapshot->size_bytes() - offset), '\0');
  STRATA_RETURN_IF_ERROR(
      snapshot->Read(offset, std::as_writable_bytes(std::span(out.data(), out.size()))));
  return out;
}

}  // namespace strata::region
