// The EC2 calls about volumes: create, describe, delete, modify, attach, detach, and the
// modifications DescribeVolumesModifications reports.

#include <algorithm>
#include <functional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ec2_call.h"
#include "strata/aws_error.h"
#include "strata/volume_types.h"

namespace strata::api {
namespace {

constexpr int64_t kMaxVolumeGiB = 65536;

class VolumeCalls : public Ec2CallBase {
 public:
  explicit VolumeCalls(const Ec2CallContext& c) : Ec2CallBase(c) {}

  std::optional<Result> Run(const std::string& action) {
    static const std::map<std::string, Result (VolumeCalls::*)()> kActions = {
        {"CreateVolume", &VolumeCalls::CreateVolume},
        {"DescribeVolumes", &VolumeCalls::DescribeVolumes},
        {"DeleteVolume", &VolumeCalls::DeleteVolume},
        {"ModifyVolume", &VolumeCalls::ModifyVolume},
        {"AttachVolume", &VolumeCalls::AttachVolume},
        {"DetachVolume", &VolumeCalls::DetachVolume},
        {"DescribeVolumesModifications", &VolumeCalls::DescribeVolumesModifications},
        {"TakeOverVolume", &VolumeCalls::TakeOverVolume},
    };
    return Dispatch(*this, kActions, action);
  }

 private:
  Result CreateVolume() {
    absl::StatusOr<std::optional<int64_t>> size = p_.GetInt("Size");
    if (!size.ok()) return Invalid(std::string(size.status().message()));
    const std::string snapshot = p_.GetOr("SnapshotId", "");
    if (!size->has_value() && snapshot.empty()) return Missing("Size or SnapshotId");
    if (size->has_value() && (**size < 1 || **size > kMaxVolumeGiB)) {
      return Invalid(absl::StrCat("Size must be from 1 to ", kMaxVolumeGiB, " GiB"));
    }
    const std::string type = p_.GetOr("VolumeType", "gp3");
    static const std::set<std::string> kTypes = {"gp2", "gp3", "io1",     "io2",
                                                 "st1", "sc1", "standard"};
    if (!kTypes.contains(type)) {
      return Invalid(absl::StrCat("VolumeType \"", type,
                                  "\" is not one of gp2, gp3, io1, io2, st1, sc1, standard"));
    }
    absl::StatusOr<std::optional<int64_t>> iops = p_.GetInt("Iops");
    absl::StatusOr<std::optional<int64_t>> throughput = p_.GetInt("Throughput");
    if (!iops.ok() || !throughput.ok()) return Invalid("Iops and Throughput must be integers");
    absl::StatusOr<std::map<std::string, std::string>> tags = TagSpecs(p_, "volume");
    if (!tags.ok()) return Invalid(std::string(tags.status().message()));
    const std::string token = p_.GetOr("ClientToken", "");
    if (!token.empty()) {
      if (std::optional<std::string> id = tokens_.Find(account_.id + "/" + token); id.has_value()) {
        absl::StatusOr<VolumeInfo> v = region_.DescribeVolume(*id);
        if (v.ok()) {
          WriteVolume(x_, *v, Zone());
          return x_.Finish();
        }
      }
    }
    if (!snapshot.empty()) {
      absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(snapshot, false);
      if (!s.ok()) return FromStatus(s.status(), "Snapshot");
    }
    CreateVolumeRequest request;
    request.size_bytes = size->has_value() ? static_cast<uint64_t>(**size) * kGiB : 0;
    request.snapshot_id = snapshot;
    request.tags = *tags;
    request.owner = account_.id;
    request.volume_type = type;
    request.encrypted = p_.GetOr("Encrypted", "false") == "true";
    request.kms_key_id = p_.GetOr("KmsKeyId", "");
    if (!request.kms_key_id.empty() && !request.encrypted) {
      return Ec2Error{400, "InvalidParameterDependency",
                      "The parameter KmsKeyId requires the parameter Encrypted to be set."};
    }
    request.iops = static_cast<uint64_t>(iops->value_or(0));
    request.throughput = static_cast<uint64_t>(throughput->value_or(0));
    absl::StatusOr<VolumeInfo> v = region_.CreateVolume(request);
    if (!v.ok()) return FromStatus(v.status(), snapshot.empty() ? "Volume" : "Snapshot");
    if (!token.empty()) tokens_.Remember(account_.id + "/" + token, v->id);
    WriteVolume(x_, *v, Zone());
    return x_.Finish();
  }

  Result DescribeVolumes() {
    const std::vector<std::string> ids = p_.List("VolumeId");
    const std::vector<Filter> filters = ParseFilters(p_);
    if (!ids.empty() && p_.Get("MaxResults").has_value()) {
      return Ec2Error{400, "InvalidParameterCombination",
                      "MaxResults cannot be used with VolumeId"};
    }
    absl::StatusOr<std::vector<VolumeInfo>> all = region_.ListVolumes();
    if (!all.ok()) return FromStatus(all.status(), "Volume");
    std::vector<VolumeInfo> mine;
    for (const VolumeInfo& v : *all) {
      if (!Owns(account_, v.owner, store_)) continue;
      if (!ids.empty() && std::find(ids.begin(), ids.end(), v.id) == ids.end()) continue;
      const Facets facets = {{"volume-id", v.id},
                             {"status", v.attached_to.empty() ? "available" : "in-use"},
                             {"attachment.instance-id", v.attached_to},
                             {"attachment.device", v.device},
                             {"size", absl::StrCat(GiBCeil(v.size_bytes))},
                             {"snapshot-id", v.snapshot_id},
                             {"volume-type", v.volume_type},
                             {"availability-zone", Zone()},
                             {"encrypted", v.encrypted ? "true" : "false"}};
      absl::StatusOr<bool> keep = MatchesFilters(filters, facets, v.tags);
      if (!keep.ok()) return Invalid(std::string(keep.status().message()));
      if (*keep) mine.push_back(v);
    }
    for (const std::string& id : ids) {
      if (std::none_of(mine.begin(), mine.end(), [&](const VolumeInfo& v) { return v.id == id; }) &&
          filters.empty()) {
        return Ec2Error{400, "InvalidVolume.NotFound",
                        absl::StrCat("The volume '", id, "' does not exist.")};
      }
    }
    std::sort(mine.begin(), mine.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    absl::StatusOr<Page> page = Paginate(p_, mine.size(), 5, 500);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("volumeSet");
    for (size_t i = page->begin; i < page->end; ++i) {
      x_.Open("item");
      WriteVolume(x_, mine[i], Zone());
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result DeleteVolume() {
    const std::string id = p_.GetOr("VolumeId", "");
    if (id.empty()) return Missing("VolumeId");
    absl::StatusOr<VolumeInfo> v = ServedVolume(id);
    if (!v.ok()) return FromStatus(v.status(), "Volume");
    if (absl::Status s = region_.DeleteVolume(id); !s.ok()) {
      Ec2Error e = FromStatus(s, "Volume");
      if (s.code() == absl::StatusCode::kFailedPrecondition) e.code = "VolumeInUse";
      return e;
    }
    x_.Bool("return", true);
    return x_.Finish();
  }

  Result ModifyVolume() {
    const std::string id = p_.GetOr("VolumeId", "");
    if (id.empty()) return Missing("VolumeId");
    absl::StatusOr<VolumeInfo> v = ServedVolume(id);
    if (!v.ok()) return FromStatus(v.status(), "Volume");
    absl::StatusOr<std::optional<int64_t>> size = p_.GetInt("Size");
    absl::StatusOr<std::optional<int64_t>> iops = p_.GetInt("Iops");
    absl::StatusOr<std::optional<int64_t>> throughput = p_.GetInt("Throughput");
    if (!size.ok() || !iops.ok() || !throughput.ok())
      return Invalid("Size, Iops and Throughput must be integers");
    const uint64_t original = GiBCeil(v->size_bytes);
    // AWS's defaults: the same type keeps its IOPS and throughput; another type takes 3,000
    // IOPS where it has provisioned IOPS (gp3, io1, io2) and gp3's 125 MiB/s.
    const std::string type = p_.GetOr("VolumeType", v->volume_type);
    const bool same = type == v->volume_type;
    const bool provisioned = type == "gp3" || type == "io1" || type == "io2";
    const int64_t default_iops = same && type != "gp2" ? v->iops : provisioned ? 3000 : 0;
    const auto new_iops = static_cast<uint64_t>(iops->value_or(default_iops));
    const auto new_throughput =
        static_cast<uint64_t>(throughput->value_or(same ? v->throughput : 0));
    if (size->has_value()) {
      if (**size < static_cast<int64_t>(original)) {
        return Invalid(absl::StrCat("the new size (", **size,
                                    ") cannot be smaller than the current size (", original,
                                    "): volumes never shrink"));
      }
      if (**size > kMaxVolumeGiB) return Invalid(absl::StrCat("Size is at most ", kMaxVolumeGiB));
    }
    Region::VolumeChange change;
    change.size_bytes = size->has_value() ? static_cast<uint64_t>(**size) * kGiB : 0;
    change.volume_type = type;
    change.iops = new_iops;
    change.throughput = new_throughput;
    absl::StatusOr<VolumeInfo> now = region_.ModifyVolume(id, change);
    if (!now.ok()) return FromStatus(now.status(), "Volume");
    x_.Open("volumeModification");
    WriteModification(x_, *now);
    x_.Close();
    return x_.Finish();
  }

  Result AttachVolume() {
    const std::string id = p_.GetOr("VolumeId", "");
    const std::string instance = p_.GetOr("InstanceId", "");
    const std::string device = p_.GetOr("Device", "");
    if (id.empty()) return Missing("VolumeId");
    if (instance.empty()) return Missing("InstanceId");
    if (device.empty()) return Missing("Device");
    // A volume another node serves comes to this one if its head is in RADOS.
    absl::StatusOr<VolumeInfo> v = OwnedVolume(id);
    if (!v.ok()) return FromStatus(v.status(), "Volume");
    if (absl::Status s = region_.AttachVolume(id, instance, device); !s.ok()) {
      Ec2Error e = FromStatus(s, "Volume");
      if (s.code() == absl::StatusCode::kFailedPrecondition && KmsErrorCode(s).empty() &&
          AwsErrorCode(s).empty()) {
        e.code = "VolumeInUse";
      }
      if (s.code() == absl::StatusCode::kAlreadyExists) e.code = "InvalidParameterValue";
      return e;
    }
    absl::StatusOr<VolumeInfo> now = region_.DescribeVolume(id);
    if (!now.ok()) return FromStatus(now.status(), "Volume");
    WriteAttachment(x_, *now, "attached");
    return x_.Finish();
  }

  // Strata's own action (AWS has no verb for it; `strata volume takeover`): this node serves a
  // volume whose head is in RADOS from now on (docs/ceph.md, "Volumes on RADOS"). Force=true
  // fences the node that holds it (the admin account only): for a node that died or hangs.
  Result TakeOverVolume() {
    const std::string id = p_.GetOr("VolumeId", "");
    if (id.empty()) return Missing("VolumeId");
    const std::string force = p_.GetOr("Force", "false");
    if (force != "true" && force != "false") return Invalid("Force must be true or false");
    absl::StatusOr<VolumeInfo> v = OwnedVolume(id);
    if (!v.ok()) return FromStatus(v.status(), "Volume");
    std::vector<Account> all = store_.ListAccounts();
    if (force == "true" && (all.empty() || all.front().id != account_.id)) {
      return Ec2Error{403, "UnauthorizedOperation",
                      "only the admin account may force a takeover (it fences another node)"};
    }
    absl::StatusOr<VolumeInfo> taken = region_.TakeOverVolume(id, force == "true");
    if (!taken.ok()) {
      Ec2Error e = FromStatus(taken.status(), "Volume");
      if (taken.status().code() == absl::StatusCode::kFailedPrecondition &&
          AwsErrorCode(taken.status()).empty()) {
        e.code = "VolumeInUse";
      }
      return e;
    }
    WriteVolume(x_, *taken, Zone());
    return x_.Finish();
  }

  Result DetachVolume() {
    const std::string id = p_.GetOr("VolumeId", "");
    if (id.empty()) return Missing("VolumeId");
    absl::StatusOr<VolumeInfo> v = ServedVolume(id);
    if (!v.ok()) return FromStatus(v.status(), "Volume");
    if (v->attached_to.empty()) {
      return Ec2Error{400, "IncorrectState",
                      absl::StrCat("Volume '", id, "' is in the 'available' state.")};
    }
    const std::string instance = p_.GetOr("InstanceId", "");
    if (absl::Status s = region_.DetachVolume(id, instance); !s.ok()) {
      Ec2Error e = FromStatus(s, "Volume");
      if (s.code() == absl::StatusCode::kFailedPrecondition) e.code = "InvalidAttachment.NotFound";
      return e;
    }
    WriteAttachment(x_, *v, "detached");
    return x_.Finish();
  }

  Result DescribeVolumesModifications() {
    const std::vector<std::string> ids = p_.List("VolumeId");
    for (const std::string& id : ids) {
      if (absl::StatusOr<VolumeInfo> v = OwnedVolume(id); !v.ok())
        return FromStatus(v.status(), "Volume");
    }
    absl::StatusOr<std::vector<VolumeInfo>> volumes = region_.ListVolumes();
    if (!volumes.ok()) return FromStatus(volumes.status(), "Volume");
    std::vector<VolumeInfo> out;
    for (const VolumeInfo& v : *volumes) {
      if (!v.modification.has_value() || !Owns(account_, v.owner, store_)) continue;
      if (!ids.empty() && std::find(ids.begin(), ids.end(), v.id) == ids.end()) continue;
      out.push_back(v);
    }
    absl::StatusOr<Page> page = Paginate(p_, out.size(), 5, 500);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("volumeModificationSet");
    for (size_t i = page->begin; i < page->end; ++i) {
      x_.Open("item");
      WriteModification(x_, out[i]);
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }
};

}  // namespace

std::optional<Result> RunVolumeCall(const Ec2CallContext& c, const std::string& action) {
  return VolumeCalls(c).Run(action);
}

}  // namespace strata::api
