#include "ec2_service.h"

#include <algorithm>
#include <ctime>
#include <functional>
#include <random>
#include <set>
#include <variant>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ec2_common.h"

namespace strata::api {
namespace {

using Tags = std::map<std::string, std::string>;

constexpr int64_t kMaxVolumeGiB = 65536;

void WriteModification(XmlWriter& x, const Modification& m) {
  x.Text("volumeId", m.volume_id);
  x.Text("modificationState", "completed");
  x.Number("targetSize", m.target_size_gib);
  if (m.target_iops != 0) x.Number("targetIops", m.target_iops);
  x.Text("targetVolumeType", m.target_type);
  if (m.target_throughput != 0) x.Number("targetThroughput", m.target_throughput);
  x.Number("originalSize", m.original_size_gib);
  if (m.original_iops != 0) x.Number("originalIops", m.original_iops);
  x.Text("originalVolumeType", m.original_type);
  if (m.original_throughput != 0) x.Number("originalThroughput", m.original_throughput);
  x.Number("progress", 100);
  x.Text("startTime", IsoTime(m.time_micros));
  x.Text("endTime", IsoTime(m.time_micros));
}

bool CanUseSnapshot(const Account& account, const SnapshotInfo& s, Store& store) {
  if (Owns(account, s.owner, store)) return true;
  return std::find(s.shared_with.begin(), s.shared_with.end(), account.id) != s.shared_with.end() ||
         std::find(s.shared_with.begin(), s.shared_with.end(), "all") != s.shared_with.end();
}

void WriteAttachment(XmlWriter& x, const VolumeInfo& v, const std::string& state) {
  x.Text("volumeId", v.id);
  x.Text("instanceId", v.attached_to);
  x.Text("device", v.device);
  x.Text("status", state);
  x.Text("attachTime", IsoTime(v.attach_time_micros));
  x.Bool("deleteOnTermination", false);
}

void WriteVolume(XmlWriter& x, const VolumeInfo& v, const std::string& zone) {
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
}

void WriteSnapshot(XmlWriter& x, const SnapshotInfo& s, const std::string& owner) {
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
  x.Text("storageTier", "standard");
  if (s.state == SnapshotState::kCompleted) {
    x.Number("fullSnapshotSizeInBytes", s.volume_size_bytes);
  }
  WriteTags(x, s.tags);
}

class Call {
 public:
  Call(Store& store, Region& region, const Account& account, const QueryParams& p,
       const std::string& action, ClientTokens& tokens, Modifications& modifications,
       const Ec2Options& options, StoreImageTasks& store_tasks, std::string host)
      : store_(store),
        region_(region),
        account_(account),
        p_(p),
        action_(action),
        tokens_(tokens),
        modifications_(modifications),
        options_(options),
        store_tasks_(store_tasks),
        host_(std::move(host)) {
    x_.Open(absl::StrCat(action, "Response"));
    x_.Attribute("xmlns", kXmlns);
    x_.Text("requestId", RequestId());
  }

  Result Run() {
    static const std::map<std::string, Result (Call::*)()> kActions = {
        {"CreateVolume", &Call::CreateVolume},
        {"DescribeVolumes", &Call::DescribeVolumes},
        {"DeleteVolume", &Call::DeleteVolume},
        {"ModifyVolume", &Call::ModifyVolume},
        {"CreateSnapshot", &Call::CreateSnapshot},
        {"DescribeSnapshots", &Call::DescribeSnapshots},
        {"DeleteSnapshot", &Call::DeleteSnapshot},
        {"CreateTags", &Call::CreateTags},
        {"DeleteTags", &Call::DeleteTags},
        {"ModifySnapshotAttribute", &Call::ModifySnapshotAttribute},
        {"DescribeSnapshotAttribute", &Call::DescribeSnapshotAttribute},
        {"ResetSnapshotAttribute", &Call::ResetSnapshotAttribute},
        {"AttachVolume", &Call::AttachVolume},
        {"DetachVolume", &Call::DetachVolume},
        {"CreateSnapshots", &Call::CreateSnapshots},
        {"CopySnapshot", &Call::CopySnapshot},
        {"DescribeTags", &Call::DescribeTags},
        {"DescribeVolumesModifications", &Call::DescribeVolumesModifications},
        {"CreateAccount", &Call::CreateAccount},
        {"EnableEbsEncryptionByDefault", &Call::EnableEbsEncryptionByDefault},
        {"DisableEbsEncryptionByDefault", &Call::DisableEbsEncryptionByDefault},
        {"GetEbsEncryptionByDefault", &Call::GetEbsEncryptionByDefault},
        {"ModifyEbsDefaultKmsKeyId", &Call::ModifyEbsDefaultKmsKeyId},
        {"GetEbsDefaultKmsKeyId", &Call::GetEbsDefaultKmsKeyId},
        {"ResetEbsDefaultKmsKeyId", &Call::ResetEbsDefaultKmsKeyId},
        {"DescribeRegions", &Call::DescribeRegions},
    };
    if (p_.GetOr("DryRun", "false") == "true") {
      return Ec2Error{412, "DryRunOperation",
                      "Request would have succeeded, but DryRun flag is set."};
    }
    auto it = kActions.find(action_);
    if (it != kActions.end()) return (this->*(it->second))();
    std::optional<Result> image_call =
        RunImageCall(store_, region_, account_, p_, action_, options_, store_tasks_, x_);
    if (image_call.has_value()) return *std::move(image_call);
    return Ec2Error{
        400, "InvalidAction",
        absl::StrCat("the action \"", action_, "\" is not supported by Strata (see docs/api.md)")};
  }

 private:
  std::string Zone() const { return region_.name() + "a"; }

  absl::StatusOr<VolumeInfo> OwnedVolume(const std::string& id) {
    absl::StatusOr<VolumeInfo> v = region_.DescribeVolume(id);
    if (!v.ok() || !Owns(account_, v->owner, store_)) {
      return absl::NotFoundError(absl::StrCat("The volume '", id, "' does not exist."));
    }
    return v;
  }
  absl::StatusOr<SnapshotInfo> VisibleSnapshot(const std::string& id, bool must_own) {
    absl::StatusOr<SnapshotInfo> s = region_.DescribeSnapshot(id);
    if (!s.ok() ||
        !(must_own ? Owns(account_, s->owner, store_) : CanUseSnapshot(account_, *s, store_))) {
      return absl::NotFoundError(absl::StrCat("The snapshot '", id, "' does not exist."));
    }
    return s;
  }
  std::string OwnerOf(const std::string& owner) {
    if (!owner.empty()) return owner;
    std::vector<Account> all = store_.ListAccounts();
    return all.empty() ? "" : all.front().id;
  }

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
    absl::StatusOr<VolumeInfo> v = OwnedVolume(id);
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
    absl::StatusOr<VolumeInfo> v = OwnedVolume(id);
    if (!v.ok()) return FromStatus(v.status(), "Volume");
    absl::StatusOr<std::optional<int64_t>> size = p_.GetInt("Size");
    absl::StatusOr<std::optional<int64_t>> iops = p_.GetInt("Iops");
    absl::StatusOr<std::optional<int64_t>> throughput = p_.GetInt("Throughput");
    if (!size.ok() || !iops.ok() || !throughput.ok())
      return Invalid("Size, Iops and Throughput must be integers");
    const uint64_t original = GiBCeil(v->size_bytes);
    if (size->has_value()) {
      if (**size < static_cast<int64_t>(original)) {
        return Invalid(absl::StrCat("the new size (", **size,
                                    ") cannot be smaller than the current size (", original,
                                    "): volumes never shrink"));
      }
      if (**size > kMaxVolumeGiB) return Invalid(absl::StrCat("Size is at most ", kMaxVolumeGiB));
      if (absl::Status s = region_.GrowVolume(id, static_cast<uint64_t>(**size) * kGiB); !s.ok()) {
        return FromStatus(s, "Volume");
      }
    }
    const std::string type = p_.GetOr("VolumeType", v->volume_type);
    if (absl::Status s =
            region_.SetVolumeType(id, type, static_cast<uint64_t>(iops->value_or(v->iops)),
                                  static_cast<uint64_t>(throughput->value_or(v->throughput)));
        !s.ok()) {
      return FromStatus(s, "Volume");
    }
    absl::StatusOr<VolumeInfo> now = region_.DescribeVolume(id);
    if (!now.ok()) return FromStatus(now.status(), "Volume");
    Modification m{id,
                   original,
                   GiBCeil(now->size_bytes),
                   v->volume_type,
                   now->volume_type,
                   v->iops,
                   now->iops,
                   v->throughput,
                   now->throughput,
                   NowMicros()};
    modifications_.Record(m);
    x_.Open("volumeModification");
    WriteModification(x_, m);
    x_.Close();
    return x_.Finish();
  }

  Result CreateSnapshot() {
    const std::string id = p_.GetOr("VolumeId", "");
    if (id.empty()) return Missing("VolumeId");
    absl::StatusOr<VolumeInfo> v = OwnedVolume(id);
    if (!v.ok()) return FromStatus(v.status(), "Volume");
    absl::StatusOr<std::map<std::string, std::string>> tags = TagSpecs(p_, "snapshot");
    if (!tags.ok()) return Invalid(std::string(tags.status().message()));
    absl::StatusOr<SnapshotInfo> s =
        region_.CreateSnapshot({id, p_.GetOr("Description", ""), *tags, account_.id});
    if (!s.ok()) return FromStatus(s.status(), "Volume");
    WriteSnapshot(x_, *s, account_.id);
    return x_.Finish();
  }

  Result DescribeSnapshots() {
    const std::vector<std::string> ids = p_.List("SnapshotId");
    const std::vector<std::string> owners = p_.List("Owner");
    const std::vector<std::string> restorable = p_.List("RestorableBy");
    const std::vector<Filter> filters = ParseFilters(p_);
    absl::StatusOr<std::vector<SnapshotInfo>> all = region_.ListSnapshots();
    if (!all.ok()) return FromStatus(all.status(), "Snapshot");
    std::vector<SnapshotInfo> out;
    for (const SnapshotInfo& s : *all) {
      if (!CanUseSnapshot(account_, s, store_)) continue;
      const std::string owner = OwnerOf(s.owner);
      if (!ids.empty() && std::find(ids.begin(), ids.end(), s.id) == ids.end()) continue;
      if (!owners.empty()) {
        bool any = false;
        for (const std::string& o : owners)
          any |= (o == "self" && owner == account_.id) || o == owner;
        if (!any) continue;
      }
      if (!restorable.empty()) {
        bool any = false;
        for (const std::string& r : restorable) {
          const std::string who = r == "self" ? account_.id : r;
          any |=
              owner == who ||
              std::find(s.shared_with.begin(), s.shared_with.end(), who) != s.shared_with.end() ||
              (r == "all" &&
               std::find(s.shared_with.begin(), s.shared_with.end(), "all") != s.shared_with.end());
        }
        if (!any) continue;
      }
      const Facets facets = {{"snapshot-id", s.id},
                             {"volume-id", s.volume_id},
                             {"status", SnapshotStateName(s.state)},
                             {"owner-id", owner},
                             {"description", s.description},
                             {"progress", absl::StrCat(s.progress_percent, "%")},
                             {"volume-size", absl::StrCat(GiBCeil(s.volume_size_bytes))},
                             {"encrypted", s.encrypted ? "true" : "false"}};
      absl::StatusOr<bool> keep = MatchesFilters(filters, facets, s.tags);
      if (!keep.ok()) return Invalid(std::string(keep.status().message()));
      if (*keep) out.push_back(s);
    }
    for (const std::string& id : ids) {
      if (std::none_of(out.begin(), out.end(), [&](const SnapshotInfo& s) { return s.id == id; }) &&
          filters.empty() && owners.empty() && restorable.empty()) {
        return Ec2Error{400, "InvalidSnapshot.NotFound",
                        absl::StrCat("The snapshot '", id, "' does not exist.")};
      }
    }
    absl::StatusOr<Page> page = Paginate(p_, out.size(), 5, 1000);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("snapshotSet");
    for (size_t i = page->begin; i < page->end; ++i) {
      x_.Open("item");
      WriteSnapshot(x_, out[i], OwnerOf(out[i].owner));
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result DeleteSnapshot() {
    const std::string id = p_.GetOr("SnapshotId", "");
    if (id.empty()) return Missing("SnapshotId");
    absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(id, true);
    if (!s.ok()) return FromStatus(s.status(), "Snapshot");
    if (absl::Status st = region_.DeleteSnapshot(id); !st.ok()) return FromStatus(st, "Snapshot");
    x_.Bool("return", true);
    return x_.Finish();
  }

  // Tags on volumes and snapshots the caller owns. All resources are checked before any
  // changes, so a bad id changes nothing.
  Result Tag(bool add) {
    const std::vector<std::string> ids = p_.List("ResourceId");
    if (ids.empty()) return Missing("ResourceId");
    std::map<std::string, std::string> set;
    // DeleteTags: a key alone deletes the tag; a key with a value deletes it only on a match.
    std::vector<std::pair<std::string, std::optional<std::string>>> remove;
    for (const std::string& tag : p_.StructList("Tag")) {
      const std::string key = p_.GetOr(tag + "Key", "");
      if (add) {
        set[key] = p_.GetOr(tag + "Value", "");
      } else {
        remove.emplace_back(key, p_.Get(tag + "Value"));
      }
    }
    if (add && set.empty()) return Missing("Tag");
    for (const std::string& id : ids) {
      if (absl::StartsWith(id, "vol-")) {
        if (absl::StatusOr<VolumeInfo> v = OwnedVolume(id); !v.ok())
          return FromStatus(v.status(), "Volume");
      } else if (absl::StartsWith(id, "snap-")) {
        if (absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(id, true); !s.ok()) {
          return FromStatus(s.status(), "Snapshot");
        }
      } else if (absl::StartsWith(id, "ami-")) {
        absl::StatusOr<ImageInfo> image = region_.images().DescribeImage(id);
        if (!image.ok() || image->owner != account_.id) {
          return Ec2Error{400, "InvalidAMIID.NotFound",
                          absl::StrCat("The image id '[", id, "]' does not exist")};
        }
      } else if (absl::StartsWith(id, "i-")) {
        absl::StatusOr<InstanceInfo> instance = region_.images().DescribeInstance(id);
        if (!instance.ok() || instance->owner != account_.id) {
          return Ec2Error{400, "InvalidInstanceID.NotFound",
                          absl::StrCat("The instance ID '", id, "' does not exist")};
        }
      } else {
        return Ec2Error{400, "InvalidID", absl::StrCat("The ID '", id, "' is not valid")};
      }
    }
    for (const std::string& id : ids) {
      // The keys DeleteTags removes: a key alone, or a key whose value matches.
      auto keys_to_remove = [&](const std::map<std::string, std::string>& current) {
        std::vector<std::string> keys;
        for (const auto& [key, value] : remove) {
          auto it = current.find(key);
          if (it != current.end() && (!value.has_value() || *value == it->second))
            keys.push_back(key);
        }
        return keys;
      };
      absl::Status s;
      std::string kind;
      if (absl::StartsWith(id, "vol-")) {
        kind = "Volume";
        absl::StatusOr<VolumeInfo> v = region_.DescribeVolume(id);
        s = region_.TagVolume(id, set, keys_to_remove(v.ok() ? v->tags : Tags{}));
      } else if (absl::StartsWith(id, "snap-")) {
        kind = "Snapshot";
        absl::StatusOr<SnapshotInfo> sn = region_.DescribeSnapshot(id);
        s = region_.TagSnapshot(id, set, keys_to_remove(sn.ok() ? sn->tags : Tags{}));
      } else if (absl::StartsWith(id, "ami-")) {
        kind = "AMIID";
        s = region_.images()
                .UpdateImage(id,
                             [&](ImageInfo& image) {
                               for (const auto& [k, v] : set) image.tags[k] = v;
                               for (const std::string& k : keys_to_remove(image.tags))
                                 image.tags.erase(k);
                               return absl::OkStatus();
                             })
                .status();
      } else {
        kind = "InstanceID";
        absl::StatusOr<InstanceInfo> i = region_.images().DescribeInstance(id);
        s = region_.images().TagInstance(id, set, keys_to_remove(i.ok() ? i->tags : Tags{}));
      }
      if (!s.ok()) return FromStatus(s, kind);
    }
    x_.Bool("return", true);
    return x_.Finish();
  }
  Result CreateTags() { return Tag(true); }
  Result DeleteTags() { return Tag(false); }

  Result ModifySnapshotAttribute() {
    const std::string id = p_.GetOr("SnapshotId", "");
    if (id.empty()) return Missing("SnapshotId");
    const std::string attribute = p_.GetOr("Attribute", "createVolumePermission");
    if (attribute != "createVolumePermission") {
      return Invalid("only the createVolumePermission attribute can be modified");
    }
    absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(id, true);
    if (!s.ok()) return FromStatus(s.status(), "Snapshot");
    std::vector<std::string> add, remove;
    for (const std::string& item : p_.StructList("CreateVolumePermission.Add")) {
      add.push_back(p_.Get(item + "Group").value_or(p_.GetOr(item + "UserId", "")));
    }
    for (const std::string& item : p_.StructList("CreateVolumePermission.Remove")) {
      remove.push_back(p_.Get(item + "Group").value_or(p_.GetOr(item + "UserId", "")));
    }
    const std::string op = p_.GetOr("OperationType", "");
    std::vector<std::string> users = p_.List("UserId");
    for (const std::string& g : p_.List("UserGroup")) users.push_back(g);
    if (op == "add")
      add.insert(add.end(), users.begin(), users.end());
    else if (op == "remove")
      remove.insert(remove.end(), users.begin(), users.end());
    else if (!op.empty())
      return Invalid("OperationType must be add or remove");
    for (const std::string& who : add) {
      if (who != "all" &&
          (who.size() != 12 || who.find_first_not_of("0123456789") != std::string::npos)) {
        return Invalid(
            absl::StrCat("\"", who, "\" is not an account id (12 digits) or the group all"));
      }
    }
    std::vector<std::string> shared = s->shared_with;
    for (const std::string& who : add) {
      if (std::find(shared.begin(), shared.end(), who) == shared.end()) shared.push_back(who);
    }
    for (const std::string& who : remove) std::erase(shared, who);
    if (absl::Status st = region_.SetSnapshotPermissions(id, shared); !st.ok())
      return FromStatus(st, "Snapshot");
    x_.Bool("return", true);
    return x_.Finish();
  }

  Result DescribeSnapshotAttribute() {
    const std::string id = p_.GetOr("SnapshotId", "");
    if (id.empty()) return Missing("SnapshotId");
    if (p_.GetOr("Attribute", "") != "createVolumePermission") {
      return Invalid("only the createVolumePermission attribute is supported");
    }
    absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(id, true);
    if (!s.ok()) return FromStatus(s.status(), "Snapshot");
    x_.Text("snapshotId", id);
    x_.Open("createVolumePermission");
    for (const std::string& who : s->shared_with) {
      x_.Open("item");
      if (who == "all")
        x_.Text("group", "all");
      else
        x_.Text("userId", who);
      x_.Close();
    }
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
    absl::StatusOr<VolumeInfo> v = OwnedVolume(id);
    if (!v.ok()) return FromStatus(v.status(), "Volume");
    if (absl::Status s = region_.AttachVolume(id, instance, device); !s.ok()) {
      Ec2Error e = FromStatus(s, "Volume");
      if (s.code() == absl::StatusCode::kFailedPrecondition && KmsErrorCode(s).empty()) {
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

  Result DetachVolume() {
    const std::string id = p_.GetOr("VolumeId", "");
    if (id.empty()) return Missing("VolumeId");
    absl::StatusOr<VolumeInfo> v = OwnedVolume(id);
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

  // All volumes attached to an instance (attachment group), at one point in time.
  Result CreateSnapshots() {
    const std::string instance = p_.GetOr("InstanceSpecification.InstanceId", "");
    if (instance.empty()) return Missing("InstanceSpecification.InstanceId");
    const bool exclude_boot =
        p_.GetOr("InstanceSpecification.ExcludeBootVolume", "false") == "true";
    const std::vector<std::string> excluded = p_.List("InstanceSpecification.ExcludeDataVolumeId");
    const bool copy_tags = p_.GetOr("CopyTagsFromSource", "") == "volume";
    absl::StatusOr<std::map<std::string, std::string>> tags = TagSpecs(p_, "snapshot");
    if (!tags.ok()) return Invalid(std::string(tags.status().message()));
    absl::StatusOr<std::vector<VolumeInfo>> all = region_.ListVolumes();
    if (!all.ok()) return FromStatus(all.status(), "Volume");
    std::vector<CreateSnapshotRequest> requests;
    for (const VolumeInfo& v : *all) {
      if (v.attached_to != instance || !Owns(account_, v.owner, store_)) continue;
      if (std::find(excluded.begin(), excluded.end(), v.id) != excluded.end()) continue;
      if (exclude_boot && (v.device == "/dev/sda1" || v.device == "/dev/xvda")) continue;
      std::map<std::string, std::string> snapshot_tags =
          copy_tags ? v.tags : std::map<std::string, std::string>();
      for (const auto& [k, val] : *tags) snapshot_tags[k] = val;
      requests.push_back({v.id, p_.GetOr("Description", ""), snapshot_tags, account_.id});
    }
    if (requests.empty()) {
      return Ec2Error{400, "InvalidInstanceId.NotFound",
                      absl::StrCat("no volumes of yours are attached to '", instance, "'")};
    }
    absl::StatusOr<std::vector<SnapshotInfo>> snaps = region_.CreateSnapshots(requests);
    if (!snaps.ok()) return FromStatus(snaps.status(), "Volume");
    x_.Open("snapshotSet");
    for (const SnapshotInfo& s : *snaps) {
      x_.Open("item");
      x_.Text("description", s.description);
      WriteTags(x_, s.tags);
      x_.Bool("encrypted", false);
      x_.Text("volumeId", s.volume_id);
      x_.Text("state", SnapshotStateName(s.state));
      x_.Number("volumeSize", GiBCeil(s.volume_size_bytes));
      x_.Text("startTime", IsoTime(s.start_time_micros));
      x_.Text("progress", absl::StrCat(s.progress_percent, "%"));
      x_.Text("ownerId", account_.id);
      x_.Text("snapshotId", s.id);
      x_.Close();
    }
    x_.Close();
    return x_.Finish();
  }

  // EBS encryption by default, per account and region.
  Result SetEncryptionByDefault(bool enabled) {
    absl::StatusOr<EbsEncryptionDefaults> d = region_.GetEbsEncryptionDefaults(account_.id);
    if (!d.ok()) return FromStatus(d.status(), "Parameter");
    d->enabled = enabled;
    if (absl::Status st = region_.SetEbsEncryptionDefaults(account_.id, *d); !st.ok()) {
      return FromStatus(st, "Parameter");
    }
    x_.Bool("ebsEncryptionByDefault", enabled);
    return x_.Finish();
  }
  Result EnableEbsEncryptionByDefault() { return SetEncryptionByDefault(true); }
  Result DisableEbsEncryptionByDefault() { return SetEncryptionByDefault(false); }
  Result GetEbsEncryptionByDefault() {
    absl::StatusOr<EbsEncryptionDefaults> d = region_.GetEbsEncryptionDefaults(account_.id);
    if (!d.ok()) return FromStatus(d.status(), "Parameter");
    x_.Bool("ebsEncryptionByDefault", d->enabled);
    x_.Text("sseType", "sse-ebs");
    return x_.Finish();
  }
  Result WriteDefaultKey(const EbsEncryptionDefaults& d) {
    absl::StatusOr<KmsKeyInfo> key = region_.kms().DescribeKey(
        account_.id, d.kms_key_id.empty() ? "alias/aws/ebs" : d.kms_key_id);
    if (!key.ok()) return FromStatus(key.status(), "Parameter");
    x_.Text("kmsKeyId", key->arn);
    return x_.Finish();
  }
  Result ModifyEbsDefaultKmsKeyId() {
    const std::string key = p_.GetOr("KmsKeyId", "");
    if (key.empty()) return Missing("KmsKeyId");
    absl::StatusOr<EbsEncryptionDefaults> d = region_.GetEbsEncryptionDefaults(account_.id);
    if (!d.ok()) return FromStatus(d.status(), "Parameter");
    d->kms_key_id = key;
    if (absl::Status st = region_.SetEbsEncryptionDefaults(account_.id, *d); !st.ok()) {
      return FromStatus(st, "Parameter");
    }
    return WriteDefaultKey(*d);
  }
  Result GetEbsDefaultKmsKeyId() {
    absl::StatusOr<EbsEncryptionDefaults> d = region_.GetEbsEncryptionDefaults(account_.id);
    if (!d.ok()) return FromStatus(d.status(), "Parameter");
    return WriteDefaultKey(*d);
  }
  Result ResetEbsDefaultKmsKeyId() {
    absl::StatusOr<EbsEncryptionDefaults> d = region_.GetEbsEncryptionDefaults(account_.id);
    if (!d.ok()) return FromStatus(d.status(), "Parameter");
    d->kms_key_id.clear();
    if (absl::Status st = region_.SetEbsEncryptionDefaults(account_.id, *d); !st.ok()) {
      return FromStatus(st, "Parameter");
    }
    return WriteDefaultKey(*d);
  }

  Result CopySnapshot() {
    const std::string source = p_.GetOr("SourceSnapshotId", "");
    if (source.empty()) return Missing("SourceSnapshotId");
    const std::string source_region = p_.GetOr("SourceRegion", region_.name());
    if (auto bad = CheckSourceRegion(store_, source_region)) return *bad;
    const bool encrypted = p_.GetOr("Encrypted", "false") == "true";
    const std::string kms_key = p_.GetOr("KmsKeyId", "");
    if (!kms_key.empty() && !encrypted) {
      return Ec2Error{400, "InvalidParameterDependency",
                      "The parameter KmsKeyId requires the parameter Encrypted to be set."};
    }
    absl::StatusOr<std::map<std::string, std::string>> tags = TagSpecs(p_, "snapshot");
    if (!tags.ok()) return Invalid(std::string(tags.status().message()));
    CreateSnapshotRequest copy_request{"", p_.GetOr("Description", ""), *tags, account_.id};
    copy_request.encrypted = encrypted;
    copy_request.kms_key_id = kms_key;
    const std::string minutes = p_.GetOr("CompletionDurationMinutes", "");
    uint32_t completion_minutes = 0;
    if (!minutes.empty() && (!absl::SimpleAtoi(minutes, &completion_minutes) ||
                             completion_minutes < 15 || completion_minutes > 2880)) {
      return Invalid(absl::StrCat("CompletionDurationMinutes must be 15 to 2880, not ", minutes));
    }
    absl::StatusOr<SnapshotInfo> copy;
    if (source_region != region_.name()) {
      // The call goes to the destination region, as on AWS; the source is asked over the
      // transfer protocol, which checks that this account may use the snapshot.
      copy = store_.CopySnapshotAcrossRegions(region_.name(),
                                              {.source_region = source_region,
                                               .source_snapshot_id = source,
                                               .request = copy_request,
                                               .completion_minutes = completion_minutes});
    } else {
      absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(source, false);
      if (!s.ok()) return FromStatus(s.status(), "Snapshot");
      copy = region_.CopySnapshot(source, copy_request);
    }
    if (!copy.ok()) return FromStatus(copy.status(), "Snapshot");
    WriteTags(x_, copy->tags);
    x_.Text("snapshotId", copy->id);
    return x_.Finish();
  }

  Result DescribeTags() {
    const std::vector<Filter> filters = ParseFilters(p_);
    struct Row {
      std::string id, type, key, value;
    };
    std::vector<Row> rows;
    absl::StatusOr<std::vector<VolumeInfo>> volumes = region_.ListVolumes();
    absl::StatusOr<std::vector<SnapshotInfo>> snapshots = region_.ListSnapshots();
    if (!volumes.ok() || !snapshots.ok()) return Ec2Error{500, "InternalError", "listing failed"};
    for (const VolumeInfo& v : *volumes) {
      if (!Owns(account_, v.owner, store_)) continue;
      for (const auto& [k, val] : v.tags) rows.push_back({v.id, "volume", k, val});
    }
    for (const SnapshotInfo& sn : *snapshots) {
      if (!Owns(account_, sn.owner, store_)) continue;
      for (const auto& [k, val] : sn.tags) rows.push_back({sn.id, "snapshot", k, val});
    }
    absl::StatusOr<std::vector<ImageInfo>> images = region_.images().ListImages();
    absl::StatusOr<std::vector<InstanceInfo>> instances = region_.images().ListInstances();
    if (!images.ok() || !instances.ok()) return Ec2Error{500, "InternalError", "listing failed"};
    for (const ImageInfo& image : *images) {
      if (image.owner != account_.id) continue;
      for (const auto& [k, val] : image.tags) rows.push_back({image.id, "image", k, val});
    }
    for (const InstanceInfo& i : *instances) {
      if (i.owner != account_.id || i.state == InstanceState::kTerminated) continue;
      for (const auto& [k, val] : i.tags) rows.push_back({i.id, "instance", k, val});
    }
    std::vector<Row> kept;
    for (const Row& r : rows) {
      absl::StatusOr<bool> keep = MatchesFilters(
          filters,
          {{"key", r.key}, {"value", r.value}, {"resource-id", r.id}, {"resource-type", r.type}},
          {});
      if (!keep.ok()) return Invalid(std::string(keep.status().message()));
      if (*keep) kept.push_back(r);
    }
    absl::StatusOr<Page> page = Paginate(p_, kept.size(), 5, 1000);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("tagSet");
    for (size_t i = page->begin; i < page->end; ++i) {
      x_.Open("item");
      x_.Text("resourceId", kept[i].id);
      x_.Text("resourceType", kept[i].type);
      x_.Text("key", kept[i].key);
      x_.Text("value", kept[i].value);
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result DescribeVolumesModifications() {
    const std::vector<std::string> ids = p_.List("VolumeId");
    for (const std::string& id : ids) {
      if (absl::StatusOr<VolumeInfo> v = OwnedVolume(id); !v.ok())
        return FromStatus(v.status(), "Volume");
    }
    std::vector<Modification> out;
    for (const Modification& m : modifications_.All()) {
      if (!ids.empty() && std::find(ids.begin(), ids.end(), m.volume_id) == ids.end()) continue;
      if (absl::StatusOr<VolumeInfo> v = OwnedVolume(m.volume_id); !v.ok()) continue;
      out.push_back(m);
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

  // Strata's own action (AWS has no verb for it): the admin account (the store's first) adds
  // an account and gets its keys. Used by `strata account create` while stratad runs.
  Result CreateAccount() {
    std::vector<Account> all = store_.ListAccounts();
    if (all.empty() || all.front().id != account_.id) {
      return Ec2Error{403, "UnauthorizedOperation", "only the admin account may create accounts"};
    }
    const std::string name = p_.GetOr("AccountName", "");
    if (name.empty()) return Missing("AccountName");
    absl::StatusOr<Account> created = store_.CreateAccount(name);
    if (!created.ok()) {
      Ec2Error e = FromStatus(created.status(), "Account");
      if (created.status().code() == absl::StatusCode::kAlreadyExists)
        e.code = "AccountAlreadyExists";
      return e;
    }
    x_.Text("accountId", created->id);
    x_.Text("accountName", created->name);
    x_.Text("accessKeyId", created->access_key_id);
    x_.Text("secretAccessKey", created->secret_access_key);
    return x_.Finish();
  }

  // Every region this stratad serves; each is reached at this endpoint, signed for its name.
  Result DescribeRegions() {
    const std::vector<std::string> names = p_.List("RegionName");
    const std::vector<Filter> filters = ParseFilters(p_);
    const std::string endpoint = host_.empty() ? "" : absl::StrCat("http://", host_);
    std::vector<std::string> regions = store_.ListRegions();
    const std::vector<std::string> peers = store_.ListPeerRegions();
    regions.insert(regions.end(), peers.begin(), peers.end());
    for (const std::string& n : names) {
      if (std::find(regions.begin(), regions.end(), n) == regions.end()) {
        return Ec2Error{400, "InvalidParameterValue",
                        absl::StrCat("Invalid region: ", n, " is not served here")};
      }
    }
    x_.Open("regionInfo");
    for (const std::string& r : regions) {
      if (!names.empty() && std::find(names.begin(), names.end(), r) == names.end()) continue;
      // A peer region is served by another stratad, whose API endpoint is not known here.
      const bool peer = std::find(peers.begin(), peers.end(), r) != peers.end();
      const std::string region_endpoint = peer ? "" : endpoint;
      absl::StatusOr<bool> match = MatchesFilters(filters,
                                                  {{"region-name", r},
                                                   {"endpoint", region_endpoint},
                                                   {"opt-in-status", "opt-in-not-required"}},
                                                  {});
      if (!match.ok()) return Invalid(std::string(match.status().message()));
      if (!*match) continue;
      x_.Open("item");
      x_.Text("regionName", r);
      x_.Text("regionEndpoint", region_endpoint);
      x_.Text("optInStatus", "opt-in-not-required");
      x_.Close();
    }
    x_.Close();
    return x_.Finish();
  }

  Result ResetSnapshotAttribute() {
    const std::string id = p_.GetOr("SnapshotId", "");
    if (id.empty()) return Missing("SnapshotId");
    absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(id, true);
    if (!s.ok()) return FromStatus(s.status(), "Snapshot");
    if (absl::Status st = region_.SetSnapshotPermissions(id, {}); !st.ok())
      return FromStatus(st, "Snapshot");
    x_.Bool("return", true);
    return x_.Finish();
  }

  Store& store_;
  Region& region_;
  const Account& account_;
  const QueryParams& p_;
  const std::string action_;
  ClientTokens& tokens_;
  Modifications& modifications_;
  const Ec2Options& options_;
  StoreImageTasks& store_tasks_;
  const std::string host_;  // The request's Host header.
  XmlWriter x_;
};

}  // namespace

HttpResponse Ec2Service::Error(int status, const std::string& code, const std::string& message) {
  XmlWriter x;
  x.Open("Response");
  x.Open("Errors");
  x.Open("Error");
  x.Text("Code", code);
  x.Text("Message", message);
  x.Close();
  x.Close();
  x.Text("RequestID", RequestId());
  return HttpResponse{status, {{"Content-Type", "text/xml;charset=UTF-8"}}, x.Finish()};
}

HttpResponse Ec2Service::Handle(const HttpRequest& request, const Account& account,
                                Region& region) {
  absl::StatusOr<QueryParams> params =
      QueryParams::Parse(request.method == "POST" ? absl::string_view(request.body)
                                                  : absl::string_view(request.query));
  if (!params.ok())
    return Error(400, "InvalidParameterValue", std::string(params.status().message()));
  const std::string action = params->GetOr("Action", "");
  if (action.empty()) return Error(400, "MissingAction", "the request has no Action parameter");
  Result result = Call(store_, region, account, *params, action, volume_tokens_, modifications_,
                       options_, store_tasks_, request.Header("host"))
                      .Run();
  if (const Ec2Error* e = std::get_if<Ec2Error>(&result))
    return Error(e->status, e->code, e->message);
  return HttpResponse{
      200, {{"Content-Type", "text/xml;charset=UTF-8"}}, std::get<std::string>(std::move(result))};
}

}  // namespace strata::api
