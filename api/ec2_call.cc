#include "ec2_call.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace strata::api {

void Ec2CallBase::WriteModification(XmlWriter& x, const VolumeInfo& v) {
  const VolumeModification& m = *v.modification;
  x.Text("volumeId", v.id);
  x.Text("modificationState", m.state);
  x.Number("targetSize", GiBCeil(v.size_bytes));
  if (v.iops != 0) x.Number("targetIops", v.iops);
  x.Text("targetVolumeType", v.volume_type);
  if (v.throughput != 0) x.Number("targetThroughput", v.throughput);
  x.Number("originalSize", GiBCeil(m.original_size_bytes));
  if (m.original_iops != 0) x.Number("originalIops", m.original_iops);
  x.Text("originalVolumeType", m.original_type);
  if (m.original_throughput != 0) x.Number("originalThroughput", m.original_throughput);
  x.Number("progress", m.progress);
  x.Text("startTime", IsoTime(m.start_time_micros));
  if (m.state == "completed") x.Text("endTime", IsoTime(m.end_time_micros));
}

bool Ec2CallBase::CanUseSnapshot(const Account& account, const SnapshotInfo& s, Store& store) {
  if (Owns(account, s.owner, store)) return true;
  return std::find(s.shared_with.begin(), s.shared_with.end(), account.id) != s.shared_with.end() ||
         std::find(s.shared_with.begin(), s.shared_with.end(), "all") != s.shared_with.end();
}

void Ec2CallBase::WriteAttachment(XmlWriter& x, const VolumeInfo& v, const std::string& state) {
  x.Text("volumeId", v.id);
  x.Text("instanceId", v.attached_to);
  x.Text("device", v.device);
  x.Text("status", state);
  x.Text("attachTime", IsoTime(v.attach_time_micros));
  x.Bool("deleteOnTermination", false);
}

void Ec2CallBase::WriteVolume(XmlWriter& x, const VolumeInfo& v, const std::string& zone) {
  x.Text("volumeId", v.id);
  x.Number("size", GiBCeil(v.size_bytes));
  x.Text("snapshotId", v.snapshot_id);
  x.Text("availabilityZone", zone);
  x.Text("status", v.attached_to.empty() ? "available" : "in-use");
  x.Text("createTime", IsoTime(v.create_time_micros));
  x.Open("attachmentSet");
  if (!v.attached_to.empty()) {
    x.Open("item");
    WriteAttachment(x, v, "attached");
    x.Close();
  }
  x.Close();
  WriteTags(x, v.tags);
  x.Text("volumeType", v.volume_type);
  if (v.iops != 0) x.Number("iops", v.iops);
  if (v.throughput != 0) x.Number("throughput", v.throughput);
  x.Bool("encrypted", v.encrypted);
  if (v.encrypted) x.Text("kmsKeyId", v.kms_key_id);
  x.Bool("multiAttachEnabled", false);
  if (!v.snapshot_id.empty()) x.Bool("fastRestored", v.fast_restored);
}

void Ec2CallBase::WriteSnapshot(XmlWriter& x, const SnapshotInfo& s, const std::string& owner) {
  x.Text("snapshotId", s.id);
  x.Text("volumeId", s.volume_id);
  x.Text("status", SnapshotStateName(s.state));
  if (!s.state_message.empty()) x.Text("statusMessage", s.state_message);
  x.Text("startTime", IsoTime(s.start_time_micros));
  x.Text("progress", absl::StrCat(s.progress_percent, "%"));
  x.Text("ownerId", owner);
  x.Text("description", s.description);
  x.Number("volumeSize", GiBCeil(s.volume_size_bytes));
  x.Bool("encrypted", s.encrypted);
  if (s.encrypted) x.Text("kmsKeyId", s.kms_key_id);
  x.Text("storageTier", s.storage_tier);
  if (s.restore_expiry_micros != 0) x.Text("restoreExpiryTime", IsoTime(s.restore_expiry_micros));
  if (s.state == SnapshotState::kCompleted) {
    x.Number("fullSnapshotSizeInBytes", s.volume_size_bytes);
  }
  WriteTags(x, s.tags);
}

absl::StatusOr<VolumeInfo> Ec2CallBase::OwnedVolume(const std::string& id) {
  absl::StatusOr<VolumeInfo> v = region_.DescribeVolume(id);
  if (!v.ok() || !Owns(account_, v->owner, store_)) {
    return absl::NotFoundError(absl::StrCat("The volume '", id, "' does not exist."));
  }
  return v;
}

absl::StatusOr<VolumeInfo> Ec2CallBase::ServedVolume(const std::string& id) {
  absl::StatusOr<VolumeInfo> v = OwnedVolume(id);
  if (v.ok() && v->elsewhere) {
    return absl::FailedPreconditionError(absl::StrCat(
        "The volume '", id, "' is served by node ", v->node,
        " of this region; call that node (a volume stays with the node that made it)."));
  }
  return v;
}

absl::StatusOr<SnapshotInfo> Ec2CallBase::VisibleSnapshot(const std::string& id, bool must_own) {
  absl::StatusOr<SnapshotInfo> s = region_.DescribeSnapshot(id);
  if (!s.ok() ||
      !(must_own ? Owns(account_, s->owner, store_) : CanUseSnapshot(account_, *s, store_))) {
    return absl::NotFoundError(absl::StrCat("The snapshot '", id, "' does not exist."));
  }
  return s;
}

std::string Ec2CallBase::OwnerOf(const std::string& owner) {
  if (!owner.empty()) return owner;
  std::vector<Account> all = store_.ListAccounts();
  return all.empty() ? "" : all.front().id;
}

}  // namespace strata::api
