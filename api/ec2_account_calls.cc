// The EC2 calls about an account's resources as a whole: tags (on volumes, snapshots, images
// and instances), EBS encryption by default, accounts, and the regions it can use.

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

class AccountCalls : public Ec2CallBase {
 public:
  explicit AccountCalls(const Ec2CallContext& c) : Ec2CallBase(c) {}

  std::optional<Result> Run(const std::string& action) {
    static const std::map<std::string, Result (AccountCalls::*)()> kActions = {
        {"CreateTags", &AccountCalls::CreateTags},
        {"DeleteTags", &AccountCalls::DeleteTags},
        {"DescribeTags", &AccountCalls::DescribeTags},
        {"EnableEbsEncryptionByDefault", &AccountCalls::EnableEbsEncryptionByDefault},
        {"DisableEbsEncryptionByDefault", &AccountCalls::DisableEbsEncryptionByDefault},
        {"GetEbsEncryptionByDefault", &AccountCalls::GetEbsEncryptionByDefault},
        {"ModifyEbsDefaultKmsKeyId", &AccountCalls::ModifyEbsDefaultKmsKeyId},
        {"GetEbsDefaultKmsKeyId", &AccountCalls::GetEbsDefaultKmsKeyId},
        {"ResetEbsDefaultKmsKeyId", &AccountCalls::ResetEbsDefaultKmsKeyId},
        {"CreateAccount", &AccountCalls::CreateAccount},
        {"DescribeRegions", &AccountCalls::DescribeRegions},
    };
    return Dispatch(*this, kActions, action);
  }

 private:
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
        if (absl::StatusOr<VolumeInfo> v = ServedVolume(id); !v.ok())
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

  Result WriteDefaultKey(const EbsEncryptionDefaults& d) {
    absl::StatusOr<KmsKeyInfo> key = region_.kms().DescribeKey(
        account_.id, d.kms_key_id.empty() ? "alias/aws/ebs" : d.kms_key_id);
    if (!key.ok()) return FromStatus(key.status(), "Parameter");
    x_.Text("kmsKeyId", key->arn);
    return x_.Finish();
  }

  Result CreateTags() { return Tag(true); }

  Result DeleteTags() { return Tag(false); }

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

  Result EnableEbsEncryptionByDefault() { return SetEncryptionByDefault(true); }

  Result DisableEbsEncryptionByDefault() { return SetEncryptionByDefault(false); }

  Result GetEbsEncryptionByDefault() {
    absl::StatusOr<EbsEncryptionDefaults> d = region_.GetEbsEncryptionDefaults(account_.id);
    if (!d.ok()) return FromStatus(d.status(), "Parameter");
    x_.Bool("ebsEncryptionByDefault", d->enabled);
    x_.Text("sseType", "sse-ebs");
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
};

}  // namespace

std::optional<Result> RunAccountCall(const Ec2CallContext& c, const std::string& action) {
  return AccountCalls(c).Run(action);
}

}  // namespace strata::api
