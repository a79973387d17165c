// RegionImpl: volumes whose heads live in RADOS, served by one node at a time (their writer
// locks, hand-over between live nodes, takeover from a dead one). docs/ceph.md, "Volumes on
// RADOS".
#include <cerrno>
#include <set>

#include "absl/strings/str_cat.h"
#include "region/region_impl.h"
#include "strata/aws_error.h"
#include "util/log.h"
#include "util/status_macros.h"
#include "volume/rados_head.h"

namespace strata::region {

using volume::FileHead;
using volume::Head;
using volume::RadosHead;

namespace {

// How long a node waits for another live node to hand a volume over.
inline constexpr uint32_t kHandOverTimeoutMs = 10'000;

}  // namespace

absl::StatusOr<std::unique_ptr<Head>> RegionImpl::OpenHead(const meta::VolumeRecord& record,
                                                           bool create) {
  if (record.head != meta::HeadStore::kRados) {
    return FileHead::Open(env_, HeadPath(record.id), record.size_bytes, create);
  }
  if (!head_pool_.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume ", record.id, " keeps its head in RADOS, but this store is not on RADOS"));
  }
  return std::unique_ptr<Head>(new RadosHead(*head_pool_, record.id));
}

absl::Status RegionImpl::DeleteHead(const meta::VolumeRecord& record) {
  if (record.head != meta::HeadStore::kRados) return FileHead::Delete(env_, HeadPath(record.id));
  STRATA_RETURN_IF_ERROR(RadosHead::Delete(*head_pool_, record.id, record.size_bytes));
  return rados::FromRados(volume_locks_->Remove(record.id),
                          absl::StrCat("removing the lock of volume ", record.id));
}

absl::Status RegionImpl::LockHead(const meta::VolumeRecord& record, bool force) {
  if (record.head != meta::HeadStore::kRados) return absl::OkStatus();
  rados::VolumeLocks::Owner holder;
  const int rc = volume_locks_->Acquire(record.id, force, &holder);
  if (rc == -EBUSY) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", record.id, " is in use on node ", holder.node,
                     ", which holds its writer lock (docs/ceph.md, \"Volumes on RADOS\")"));
  }
  return rados::FromRados(rc, absl::StrCat("taking the writer lock of volume ", record.id));
}

absl::StatusOr<VolumeInfo> RegionImpl::TakeOverVolume(const std::string& volume_id, bool force) {
  if (!force) AskForVolume(volume_id);
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, AdoptVolumeLocked(volume_id, force));
  return ToInfo(*volume);
}

void RegionImpl::AskForVolume(const std::string& volume_id) {
  if (volume_locks_ == nullptr) return;
  {
    absl::MutexLock lock(&mu_);
    if (volumes_.contains(volume_id)) return;
  }
  // Only a live holder of an unattached volume with its head in RADOS is asked; every other
  // case is AdoptVolumeLocked's to answer.
  absl::StatusOr<std::optional<std::string>> node = NodeServingVolume(volume_id);
  if (!node.ok() || !node->has_value()) return;
  absl::StatusOr<std::optional<std::string>> value =
      catalog_->Get(meta::SharedCatalog::NodeKey(**node, meta::VolumeKey(volume_id)));
  if (!value.ok() || !value->has_value()) return;
  absl::StatusOr<meta::VolumeRecord> r = meta::VolumeRecord::Decode(**value);
  if (!r.ok() || r->head != meta::HeadStore::kRados || r->hidden || !r->attached_to.empty()) {
    return;
  }
  rados::VolumeLocks::Owner owner;
  if (volume_locks_->GetOwner(volume_id, &owner) < 0 || !owner.live) return;
  // Waits (up to kHandOverTimeoutMs) holding nothing: other calls of this node and the other
  // nodes' go on meanwhile.
  (void)volume_locks_->RequestRelease(volume_id, kHandOverTimeoutMs);
}

absl::StatusOr<VolumeImpl*> RegionImpl::AdoptVolumeLocked(const std::string& volume_id,
                                                          bool force) {
  if (auto it = volumes_.find(volume_id); it != volumes_.end()) return it->second.get();
  if (volume_locks_ == nullptr) {
    return absl::NotFoundError(absl::StrCat("volume ", volume_id, " does not exist"));
  }
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> node, NodeServingVolume(volume_id));
  if (!node.has_value()) {
    return absl::NotFoundError(absl::StrCat("volume ", volume_id, " does not exist"));
  }
  const std::string old_key = meta::SharedCatalog::NodeKey(*node, meta::VolumeKey(volume_id));
  auto read_record = [&]() -> absl::StatusOr<std::pair<std::string, meta::VolumeRecord>> {
    STRATA_ASSIGN_OR_RETURN(std::optional<std::string> value, catalog_->Get(old_key));
    if (!value.has_value()) {
      return absl::AbortedError(
          absl::StrCat("volume ", volume_id, " moved off node ", *node, " meanwhile; retry"));
    }
    STRATA_ASSIGN_OR_RETURN(meta::VolumeRecord r, meta::VolumeRecord::Decode(*value));
    return std::pair{*std::move(value), std::move(r)};
  };
  STRATA_ASSIGN_OR_RETURN(auto found, read_record());
  if (found.second.head != meta::HeadStore::kRados || found.second.hidden) {
    return AwsError(absl::StatusCode::kFailedPrecondition, "IncorrectState",
                    absl::StrCat("volume ", volume_id, " is served by node ", *node,
                                 " and keeps its head in that node's data directory; only "
                                 "volumes with heads in RADOS move between nodes (docs/ceph.md)"));
  }
  rados::VolumeLocks::Owner owner;
  STRATA_RETURN_IF_ERROR(rados::FromRados(volume_locks_->GetOwner(volume_id, &owner),
                                          absl::StrCat("reading the lock of ", volume_id)));
  if (owner.live && !force) {
    // AskForVolume asked the holder to hand it over, before this call took any lock.
    if (!found.second.attached_to.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("volume ", volume_id, " is attached to ",
                                                        found.second.attached_to, " on node ",
                                                        owner.node, "; detach it there first"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", volume_id, " is in use on node ", owner.node,
                     " (a client connection, a pending snapshot or hydration) and was not "
                     "handed over"));
  }
  // A holder that released cleanly left no owner behind, and its dirty bitmap in the catalog.
  const bool handed_over = owner.node.empty();
  STRATA_RETURN_IF_ERROR(LockHead(found.second, force));
  auto unlock = [&] { (void)volume_locks_->Release(volume_id); };
  absl::StatusOr<std::pair<std::string, meta::VolumeRecord>> current = read_record();
  if (!current.ok()) {
    unlock();
    return current.status();
  }
  const std::string& value = current->first;
  meta::VolumeRecord& r = current->second;
  if (!handed_over) {
    STRATA_LOG(kWarning, "volume ", volume_id, ": taken over from node ", *node,
               force && owner.live ? " (forced)" : " (its lease lapsed)");
  }
  // Its records move here in one write, guarded by the record as read: the volume, its owned
  // bitmap, and its dirty bitmap when the holder handed it over (otherwise the rescan of an
  // unclean stop applies).
  meta::WriteBatch batch;
  batch.Expect(old_key, value);
  batch.Delete(old_key);
  absl::Status scanned;
  for (const std::string& prefix : {meta::OwnedPrefix(volume_id), meta::DirtyPrefix(volume_id)}) {
    const bool keep = handed_over || prefix == meta::OwnedPrefix(volume_id);
    const std::string from = meta::SharedCatalog::NodeKey(*node, prefix);
    scanned.Update(catalog_->Scan(from, "", [&](absl::string_view key, absl::string_view v) {
      batch.Delete(std::string(key));
      if (keep) batch.Put(absl::StrCat(prefix, key.substr(from.size())), std::string(v));
      return true;
    }));
  }
  if (!scanned.ok()) {
    unlock();
    return scanned;
  }
  // The old node's attachment ends with it (a hand-over had none).
  r.attached_to.clear();
  r.device.clear();
  r.attach_time_micros = 0;
  // Snapshots of the volume the old node left pending cannot finish: their frozen chunks were
  // that node's to ingest.
  std::vector<meta::SnapshotRecord> failed;
  std::set<std::string> failed_ids;
  for (meta::SnapshotRecord s : tree_->All()) {
    if (s.volume_id != volume_id || s.state != meta::SnapshotRecordState::kPending) continue;
    s.state = meta::SnapshotRecordState::kError;
    s.state_message = absl::StrCat("node ", *node,
                                   " stopped serving the volume before the "
                                   "snapshot completed");
    batch.Put(meta::SnapshotKey(s.id), s.Encode());
    failed_ids.insert(s.id);
    failed.push_back(std::move(s));
  }
  r.last_snapshot_id = LastUsableSnapshot(r.last_snapshot_id, failed_ids);
  batch.Put(meta::VolumeKey(volume_id), r.Encode());
  if (absl::Status s = catalog_->Write(batch); !s.ok()) {
    unlock();
    return s;
  }
  for (const meta::SnapshotRecord& s : failed) {
    tree_->Put(s);
    if (absl::Status dropped = DropManifest(s); !dropped.ok()) {
      STRATA_LOG(kWarning, "snapshot ", s.id, ": ", dropped.ToString());
    }
  }
  // From here the volume is this node's: a failure to open it is one to retry here.
  STRATA_ASSIGN_OR_RETURN(std::unique_ptr<Head> head, OpenHead(r, false));
  if (r.encryption.encrypted()) {
    if (absl::Status unwrapped = encryption_->LoadDomainKey(r.encryption, r.owner);
        !unwrapped.ok()) {
      STRATA_LOG(kWarning, "volume ", volume_id, " stays closed: ", unwrapped.message());
    }
  }
  const bool hydrating = r.hydrating;
  std::unique_ptr<VolumeImpl> volume = MakeVolume(std::move(r), std::move(head));
  STRATA_RETURN_IF_ERROR(volume->LoadBitmaps(handed_over));
  VolumeImpl* raw = volume.get();
  volumes_[volume_id] = std::move(volume);
  if (hydrating) tasks_.Push({Task::Kind::kHydrate, volume_id, nullptr, 0});
  STRATA_LOG(kInfo, "volume ", volume_id, ": now served by this node (from node ", *node, ")");
  return raw;
}

void RegionImpl::HandOverVolume(const std::string& volume_id) {
  absl::MutexLock lock(&mu_);
  auto it = volumes_.find(volume_id);
  if (it == volumes_.end()) return;
  VolumeImpl& volume = *it->second;
  const meta::VolumeRecord r = volume.record();
  if (!r.attached_to.empty() || volume.pins().load() > 0 || volume.HasPending() || r.hidden) {
    STRATA_LOG(kInfo, "volume ", volume_id, ": another node asked for it; kept (in use here)");
    return;
  }
  // Flushed, with its dirty bitmap recorded, so the next node tracks changes exactly.
  absl::Status status = volume.Flush();
  meta::WriteBatch batch;
  if (status.ok()) status = volume.SaveDirtyBitmap(batch);
  if (status.ok()) status = catalog_->Write(batch);
  if (!status.ok()) {
    STRATA_LOG(kWarning, "volume ", volume_id, ": not handed over: ", status.ToString());
    return;
  }
  volumes_.erase(it);  // Waits for its head's writes.
  if (int rc = volume_locks_->Release(volume_id); rc < 0) {
    STRATA_LOG(kWarning, "volume ", volume_id,
               ": releasing its lock: ", rados::FromRados(rc, "unlock").ToString());
    return;
  }
  STRATA_LOG(kInfo, "volume ", volume_id, ": handed over to another node");
}

void RegionImpl::ReleaseVolumeLocks() {
  if (volume_locks_ == nullptr) return;
  for (const auto& [id, volume] : volumes_) {
    if (volume->record().head != meta::HeadStore::kRados) continue;
    if (int rc = volume_locks_->Release(id); rc < 0) {
      STRATA_LOG(kWarning, "volume ", id, ": its lock stays until its lease lapses: ",
                 rados::FromRados(rc, "unlock").ToString());
    }
  }
}

}  // namespace strata::region
