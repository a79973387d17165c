// The EC2 calls about snapshots: create (one, or crash-consistent across an attachment group),
// describe, delete, copy (within a region or from another, and the copies' records), and sharing
// attributes.

#include <algorithm>
#include <functional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "ec2_call.h"

namespace strata::api {
namespace {

class SnapshotCalls : public Ec2CallBase {
 public:
  explicit SnapshotCalls(const Ec2CallContext& c) : Ec2CallBase(c) {}

  std::optional<Result> Run(const std::string& action) {
    static const std::map<std::string, Result (SnapshotCalls::*)()> kActions = {
        {"CreateSnapshot", &SnapshotCalls::CreateSnapshot},
        {"DescribeSnapshots", &SnapshotCalls::DescribeSnapshots},
        {"DeleteSnapshot", &SnapshotCalls::DeleteSnapshot},
        {"ModifySnapshotAttribute", &SnapshotCalls::ModifySnapshotAttribute},
        {"DescribeSnapshotAttribute", &SnapshotCalls::DescribeSnapshotAttribute},
        {"ResetSnapshotAttribute", &SnapshotCalls::ResetSnapshotAttribute},
        {"CreateSnapshots", &SnapshotCalls::CreateSnapshots},
        {"CopySnapshot", &SnapshotCalls::CopySnapshot},
        {"DescribeSnapshotCopies", &SnapshotCalls::DescribeSnapshotCopies},
    };
    return Dispatch(*this, kActions, action);
  }

 private:
  Result CreateSnapshot() {
    const std::string id = p_.GetOr("VolumeId", "");
    if (id.empty()) return Missing("VolumeId");
    absl::StatusOr<VolumeInfo> v = ServedVolume(id);
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
                             {"encrypted", s.encrypted ? "true" : "false"},
                             {"storage-tier", s.storage_tier}};
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

  // Strata's own: the records of the caller's cross-region copies into this store (any of its
  // regions), what `strata copy-stats` prints. SnapshotId.N names a copy or its source.
  Result DescribeSnapshotCopies() {
    const std::vector<std::string> ids = p_.List("SnapshotId");
    std::vector<CopyRecord> out;
    for (const CopyRecord& r : store_.ListCopies()) {
      if (!Owns(account_, r.account, store_)) continue;
      if (!ids.empty() && std::none_of(ids.begin(), ids.end(), [&](const std::string& id) {
            return id == r.snapshot_id || id == r.source_snapshot_id;
          })) {
        continue;
      }
      out.push_back(r);
    }
    for (const std::string& id : ids) {
      if (std::none_of(out.begin(), out.end(), [&](const CopyRecord& r) {
            return id == r.snapshot_id || id == r.source_snapshot_id;
          })) {
        return Ec2Error{400, "InvalidSnapshot.NotFound",
                        absl::StrCat("no cross-region copy of or into '", id, "' is yours")};
      }
    }
    x_.Open("copySet");
    for (const CopyRecord& r : out) {
      x_.Open("item");
      x_.Text("snapshotId", r.snapshot_id);
      x_.Text("destinationRegion", r.destination_region);
      x_.Text("sourceSnapshotId", r.source_snapshot_id);
      x_.Text("sourceRegion", r.source_region);
      x_.Text("baseSourceSnapshotId", r.base_source_snapshot);
      x_.Text("baseSnapshotId", r.base_snapshot_id);
      x_.Text("state", r.state);
      x_.Text("message", r.message);
      x_.Number("logicalBytes", r.logical_bytes);
      x_.Number("chunksTotal", r.chunks_total);
      x_.Number("chunksDone", r.chunks_done);
      x_.Number("chunksSkipped", r.chunks_skipped);
      x_.Number("changedBytes", r.changed_bytes);
      x_.Number("bytesSent", r.bytes_sent);
      x_.Number("retries", r.retries);
      x_.Number("startMicros", r.start_micros);
      x_.Number("endMicros", r.end_micros);
      x_.Number("transferMicros", r.transfer_micros);
      x_.Number("completionMinutes", r.completion_minutes);
      x_.Number("rateBytesPerSecond", r.rate_bytes_per_second);
      x_.Text("link", r.link);
      x_.Close();
    }
    x_.Close();
    return x_.Finish();
  }
};

}  // namespace

std::optional<Result> RunSnapshotCall(const Ec2CallContext& c, const std::string& action) {
  return SnapshotCalls(c).Run(action);
}

}  // namespace strata::api
