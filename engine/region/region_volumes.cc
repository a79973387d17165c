// RegionImpl: the volume table.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "region/region_impl.h"
#include "region/snapshot_records.h"
#include "strata/aws_error.h"
#include "util/log.h"
#include "util/status_macros.h"
#include "volume/head.h"
#include "volume/tags.h"

namespace strata::region {

using volume::ApplyTags;
using volume::Head;
using volume::ValidateTags;
using volume::VolumeDeps;

VolumeInfo RegionImpl::ToInfo(VolumeImpl& volume) const {
  VolumeInfo info = ToInfo(volume.record());
  if (!info.snapshot_id.empty()) {
    const uint64_t total = volume.chunk_count();
    info.hydration_percent =
        total == 0 ? 100 : static_cast<int>(volume.owned_count() * 100 / total);
  }
  if (shared_catalog_ != nullptr) info.node = shared_catalog_->node_id();
  return info;
}

VolumeInfo RegionImpl::ToInfo(const meta::VolumeRecord& r) {
  VolumeInfo info;
  info.id = r.id;
  info.size_bytes = r.size_bytes;
  info.snapshot_id = r.base_snapshot_id;
  info.create_time_micros = r.create_time_micros;
  info.tags = r.tags;
  info.hydrating = r.hydrating;
  info.fast_restored = r.fast_restored;
  info.owner = r.owner;
  info.volume_type = r.volume_type;
  info.iops = r.iops;
  info.throughput = r.throughput;
  info.attached_to = r.attached_to;
  info.device = r.device;
  info.attach_time_micros = r.attach_time_micros;
  info.encrypted = r.encryption.encrypted();
  info.kms_key_id = r.encryption.kms_key_arn;
  info.hydration_percent = r.hydrating ? 0 : 100;  // The serving node knows better.
  if (const meta::ModificationRecord& m = r.modification; m.start_time_micros != 0) {
    VolumeModification& out = info.modification.emplace();
    const auto now = static_cast<uint64_t>(absl::ToUnixMicros(absl::Now()));
    out.state = now < m.optimizing_time_micros ? "modifying"
                : now < m.end_time_micros      ? "optimizing"
                                               : "completed";
    // Progress runs with the optimizing phase (AWS shows it creeping up meanwhile).
    const uint64_t span = m.end_time_micros - m.optimizing_time_micros;
    out.progress = now >= m.end_time_micros ? 100
                   : now < m.optimizing_time_micros || span == 0
                       ? 0
                       : static_cast<int>((now - m.optimizing_time_micros) * 100 / span);
    out.start_time_micros = m.start_time_micros;
    out.end_time_micros = m.end_time_micros;
    out.original_size_bytes = m.original_size_bytes;
    out.original_type = m.original_type;
    out.original_iops = m.original_iops;
    out.original_throughput = m.original_throughput;
  }
  return info;
}

absl::StatusOr<VolumeImpl*> RegionImpl::FindVolumeLocked(const std::string& volume_id) {
  auto it = volumes_.find(volume_id);
  if (it == volumes_.end()) {
    STRATA_ASSIGN_OR_RETURN(std::optional<std::string> node, NodeServingVolume(volume_id));
    if (node.has_value()) {
      return absl::FailedPreconditionError(
          absl::StrCat("volume ", volume_id, " is served by node ", *node,
                       "; a volume stays with the node that made it (docs/ceph.md)"));
    }
    return absl::NotFoundError(absl::StrCat("volume ", volume_id, " does not exist"));
  }
  return it->second.get();
}

absl::Status RegionImpl::PersistVolume(VolumeImpl& volume) {
  meta::WriteBatch batch;
  batch.Put(meta::VolumeKey(volume.id()), volume.record().Encode());
  return catalog_->Write(batch);
}

absl::StatusOr<VolumeInfo> RegionImpl::CreateVolume(const CreateVolumeRequest& request) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  return CreateVolumeLocked(request, /*hidden=*/false);
}

absl::StatusOr<VolumeInfo> RegionImpl::CreateVolumeLocked(const CreateVolumeRequest& request,
                                                          bool hidden) {
  STRATA_RETURN_IF_ERROR(ValidateTags(request.tags));
  meta::VolumeRecord r;
  r.hidden = hidden;
  r.size_bytes = request.size_bytes;
  meta::EncryptionRecord base_encryption;
  if (!request.snapshot_id.empty()) {
    STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord snap,
                            FindUsableSnapshotLocked(request.snapshot_id));
    base_encryption = snap.encryption;
    if (r.size_bytes == 0) r.size_bytes = snap.volume_size_bytes;
    if (r.size_bytes < snap.volume_size_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("size ", r.size_bytes,
                                                     " is smaller than snapshot ", snap.id, " (",
                                                     snap.volume_size_bytes, " bytes)"));
    }
    r.base_snapshot_id = r.last_snapshot_id = snap.id;
    r.tree = snap.tree;
  } else {
    r.tree = NewTreeId();
  }
  if (r.size_bytes == 0 || r.size_bytes % kVolumeSizeAlignBytes != 0 ||
      r.size_bytes > kMaxVolumeSizeBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("volume size ", r.size_bytes, " must be a non-zero multiple of ",
                     kVolumeSizeAlignBytes, " bytes, at most ", kMaxVolumeSizeBytes));
  }
  // A hidden builder (EBS direct snapshots, up to 64 TiB whatever the type) is never exported:
  // only visible volumes keep to their type's rules.
  qos::VolumeSpec type{request.volume_type.empty() ? "gp3" : request.volume_type, 0, request.iops,
                       request.throughput};
  if (!hidden) {
    STRATA_ASSIGN_OR_RETURN(
        type, qos::NormalizeForBytes(type.type, r.size_bytes, type.iops, type.throughput));
  }
  STRATA_ASSIGN_OR_RETURN(r.encryption, encryption_->Choose(request, base_encryption));
  r.id = NewId("vol");
  r.create_time_micros = env_->NowMicros();
  r.tags = request.tags;
  r.owner = request.owner;
  r.volume_type = type.type;
  r.iops = type.iops;
  r.throughput = type.throughput;
  // Builders of direct snapshots are this node's own work: their heads stay local.
  r.head = head_pool_.has_value() && options_.volume_heads_in_rados && !hidden
               ? meta::HeadStore::kRados
               : meta::HeadStore::kFiles;
  STRATA_RETURN_IF_ERROR(LockHead(r, false));
  absl::StatusOr<std::unique_ptr<Head>> head = OpenHead(r, true);
  meta::WriteBatch batch;
  batch.Put(meta::VolumeKey(r.id), r.Encode());
  absl::Status written = head.ok() ? catalog_->Write(batch) : head.status();
  if (!written.ok()) {
    if (head.ok()) head->reset();
    (void)DeleteHead(r);
    return written;
  }
  const std::string id = r.id;
  const meta::EncryptionRecord encryption = r.encryption;
  const bool new_domain =
      !r.last_snapshot_id.empty() && encryption.domain != base_encryption.domain;
  std::unique_ptr<VolumeImpl> volume = MakeVolume(std::move(r), *std::move(head));
  // Another domain than its snapshot's: its first snapshot must hold every chunk in the new
  // domain (nothing of the old key or of plaintext may stay in its lineage's new data).
  if (new_domain) volume->MarkAllChanged();
  VolumeImpl* raw = volume.get();
  volumes_[id] = std::move(volume);
  if (!hidden && !request.snapshot_id.empty()) {
    // The volume exists from here on: a failure of fast restore leaves it reading through its
    // snapshot (restoring lazily), never a volume the caller was told failed.
    absl::StatusOr<bool> fast = TakeFastRestoreCreditLocked(request.snapshot_id, request.owner);
    absl::Status s = fast.status();
    if (s.ok() && *fast) s = HydrateNowLocked(*raw);
    if (!s.ok()) {
      STRATA_LOG(kWarning, "volume ", id, ": fast snapshot restore failed (", s.ToString(),
                 "); it restores lazily");
    }
  }
  return ToInfo(*raw);
}

std::unique_ptr<VolumeImpl> RegionImpl::MakeVolume(meta::VolumeRecord record,
                                                   std::unique_ptr<Head> head) {
  const meta::EncryptionRecord encryption = record.encryption;
  auto volume =
      std::make_unique<VolumeImpl>(VolumeDeps{env_, catalog_.get(), chunks_.get(), tree_.get(),
                                              &domain_keys_, chunk_size_bytes_, options_.qos},
                                   std::move(record), std::move(head));
  if (encryption.encrypted()) {
    absl::StatusOr<std::shared_ptr<const DomainKeys::Key>> key =
        domain_keys_.Get(encryption.domain);
    volume->set_encryption(key.ok() ? *key : nullptr, key.status());
  }
  return volume;
}

absl::StatusOr<Volume*> RegionImpl::GetVolume(const std::string& volume_id) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  return volume;
}

namespace {

class Pin final : public Region::VolumePin {
 public:
  explicit Pin(VolumeImpl& volume) : volume_(volume) { volume_.pins().fetch_add(1); }
  ~Pin() override { volume_.pins().fetch_sub(1); }
  Volume& volume() override { return volume_; }

 private:
  VolumeImpl& volume_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Region::VolumePin>> RegionImpl::PinVolume(
    const std::string& volume_id) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  return std::make_unique<Pin>(*volume);
}

absl::StatusOr<VolumeInfo> RegionImpl::DescribeVolume(const std::string& volume_id) {
  {
    absl::MutexLock lock(&mu_);
    if (auto it = volumes_.find(volume_id); it != volumes_.end()) return ToInfo(*it->second);
  }
  STRATA_ASSIGN_OR_RETURN(auto others, OtherNodesVolumes());
  for (const auto& [node, record] : others) {
    if (record.id == volume_id && !record.hidden) return ToOtherNodesInfo(node, record);
  }
  return absl::NotFoundError(absl::StrCat("volume ", volume_id, " does not exist"));
}

absl::StatusOr<std::vector<VolumeInfo>> RegionImpl::ListVolumes() {
  STRATA_ASSIGN_OR_RETURN(auto others, OtherNodesVolumes());
  absl::MutexLock lock(&mu_);
  std::vector<VolumeInfo> out;
  for (const auto& [id, volume] : volumes_) {
    if (!volume->record().hidden) out.push_back(ToInfo(*volume));
  }
  for (const auto& [node, record] : others) {
    if (!record.hidden) out.push_back(ToOtherNodesInfo(node, record));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

VolumeInfo RegionImpl::ToOtherNodesInfo(const std::string& node, const meta::VolumeRecord& r) {
  VolumeInfo info = ToInfo(r);
  info.node = node;
  info.elsewhere = true;
  return info;
}

absl::Status RegionImpl::GrowVolume(const std::string& volume_id, uint64_t new_size_bytes) {
  if (new_size_bytes % kVolumeSizeAlignBytes != 0 || new_size_bytes > kMaxVolumeSizeBytes) {
    return absl::InvalidArgumentError(absl::StrCat("volume size ", new_size_bytes,
                                                   " must be a multiple of ", kVolumeSizeAlignBytes,
                                                   ", at most ", kMaxVolumeSizeBytes));
  }
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  if (new_size_bytes == volume->size_bytes()) return absl::OkStatus();
  // The type's rules hold at the new size too (gp2's and st1/sc1's rates grow with it).
  const meta::VolumeRecord r = volume->record();
  const uint64_t iops = qos::ProvisionedIops(r.volume_type, r.iops);
  STRATA_RETURN_IF_ERROR(
      qos::NormalizeForBytes(r.volume_type, new_size_bytes, iops, r.throughput).status());
  STRATA_RETURN_IF_ERROR(volume->Grow(new_size_bytes));
  STRATA_RETURN_IF_ERROR(SetTypeLocked(*volume, r.volume_type, iops, r.throughput));
  return PersistVolume(*volume);
}

absl::Status RegionImpl::DeleteVolume(const std::string& volume_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  return DeleteVolumeLocked(volume_id);
}

absl::Status RegionImpl::DeleteVolumeLocked(const std::string& volume_id) {
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  if (volume->HasPending()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume ", volume_id, " has a pending snapshot; delete it once the snapshot completes"));
  }
  const meta::VolumeRecord record = volume->record();
  if (const int pins = volume->pins().load(); pins > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", volume_id, " is open by ", pins,
                     " client connection(s); disconnect them first"));
  }
  if (!record.attached_to.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("volume ", volume_id, " is attached to ",
                                                      record.attached_to, "; detach it first"));
  }
  meta::WriteBatch batch;
  batch.Delete(meta::VolumeKey(volume_id));
  for (const std::string& prefix : {meta::OwnedPrefix(volume_id), meta::DirtyPrefix(volume_id)}) {
    STRATA_RETURN_IF_ERROR(
        catalog_->Scan(prefix, "", [&](absl::string_view key, absl::string_view) {
          batch.Delete(std::string(key));
          return true;
        }));
  }
  // The record goes first: a crash before the head is deleted leaves an orphan head, which the
  // next open deletes, never a volume without its head.
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  volumes_.erase(volume_id);
  if (absl::Status s = DeleteHead(record); !s.ok()) {
    STRATA_LOG(kWarning, "volume ", volume_id, ": head not deleted yet: ", s.ToString());
  }
  if (!record.last_snapshot_id.empty()) {
    tasks_.Push({Task::Kind::kPrune, record.last_snapshot_id, nullptr, 0});
  }
  return absl::OkStatus();
}

absl::Status RegionImpl::TagVolume(const std::string& volume_id,
                                   const std::map<std::string, std::string>& set,
                                   const std::vector<std::string>& remove) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  meta::VolumeRecord r = volume->record();
  ApplyTags(r.tags, set, remove);
  STRATA_RETURN_IF_ERROR(ValidateTags(r.tags));
  meta::WriteBatch batch;
  batch.Put(meta::VolumeKey(volume_id), r.Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  volume->set_record_fields(r.tags, r.hydrating, r.hydrate_bytes_per_second);
  volume->ConfigureLimiter();  // The strata:qos tag.
  return absl::OkStatus();
}

absl::StatusOr<VolumeInfo> RegionImpl::ModifyVolume(const std::string& volume_id,
                                                    const VolumeChange& change) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  const meta::VolumeRecord before = volume->record();
  const uint64_t now = env_->NowMicros();
  if (before.modification.start_time_micros != 0 && now < before.modification.end_time_micros) {
    return AwsError(absl::StatusCode::kFailedPrecondition, "IncorrectModificationState",
                    absl::StrCat("volume ", volume_id,
                                 " is being modified; modify it again once DescribeVolumes"
                                 "Modifications shows the modification completed"));
  }
  const uint64_t size = change.size_bytes == 0 ? before.size_bytes : change.size_bytes;
  if (size < before.size_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("volume ", volume_id, " is ", before.size_bytes,
                                                   " bytes: volumes never shrink"));
  }
  if (size % kVolumeSizeAlignBytes != 0 || size > kMaxVolumeSizeBytes) {
    return absl::InvalidArgumentError(absl::StrCat("volume size ", size, " must be a multiple of ",
                                                   kVolumeSizeAlignBytes, ", at most ",
                                                   kMaxVolumeSizeBytes));
  }
  // The whole change is checked before any of it is made.
  STRATA_ASSIGN_OR_RETURN(
      const qos::VolumeSpec type,
      qos::NormalizeForBytes(change.volume_type, size, change.iops, change.throughput));
  if (size != before.size_bytes) STRATA_RETURN_IF_ERROR(volume->Grow(size));
  volume->set_type(type.type, type.iops, type.throughput);
  const StoreOptions::ModificationTiming& timing = options_.volume_modification;
  meta::ModificationRecord m;
  m.start_time_micros = now;
  m.optimizing_time_micros = now + timing.modifying_ms * 1000;
  m.end_time_micros =
      m.optimizing_time_micros +
      (timing.optimize_bytes_per_second == 0
           ? 0
           : static_cast<uint64_t>(static_cast<double>(size) /
                                   static_cast<double>(timing.optimize_bytes_per_second) * 1e6));
  m.original_size_bytes = before.size_bytes;
  m.original_type = before.volume_type;
  m.original_iops = before.iops;
  m.original_throughput = before.throughput;
  volume->set_modification(m);
  volume->ConfigureLimiter();  // At once: the volume's connections keep going at the new rates.
  STRATA_RETURN_IF_ERROR(PersistVolume(*volume));
  return ToInfo(*volume);
}

absl::Status RegionImpl::SetTypeLocked(VolumeImpl& volume, const std::string& volume_type,
                                       uint64_t iops, uint64_t throughput) {
  STRATA_ASSIGN_OR_RETURN(
      const qos::VolumeSpec type,
      qos::NormalizeForBytes(volume_type, volume.size_bytes(), iops, throughput));
  volume.set_type(type.type, type.iops, type.throughput);
  volume.ConfigureLimiter();  // At once: the volume's connections keep going at the new rates.
  return absl::OkStatus();
}

}  // namespace strata::region
