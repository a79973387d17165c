// The EC2 calls of data protection (docs/data-protection.md): snapshot locks (LockSnapshot,
// UnlockSnapshot, DescribeLockedSnapshots), the Recycle Bin's listings and restores (its rules
// are the rbin service's, rbin_service.cc), fast snapshot restore, and the archive tier
// (ModifySnapshotTier, RestoreSnapshotTier, DescribeSnapshotTierStatus).

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "ec2_call.h"

namespace strata::api {
namespace {

class ProtectionCalls : public Ec2CallBase {
 public:
  explicit ProtectionCalls(const Ec2CallContext& c) : Ec2CallBase(c) {}

  std::optional<Result> Run(const std::string& action) {
    static const std::map<std::string, Result (ProtectionCalls::*)()> kActions = {
        {"LockSnapshot", &ProtectionCalls::LockSnapshot},
        {"UnlockSnapshot", &ProtectionCalls::UnlockSnapshot},
        {"DescribeLockedSnapshots", &ProtectionCalls::DescribeLockedSnapshots},
        {"ListSnapshotsInRecycleBin", &ProtectionCalls::ListSnapshotsInRecycleBin},
        {"RestoreSnapshotFromRecycleBin", &ProtectionCalls::RestoreSnapshotFromRecycleBin},
        {"ListImagesInRecycleBin", &ProtectionCalls::ListImagesInRecycleBin},
        {"RestoreImageFromRecycleBin", &ProtectionCalls::RestoreImageFromRecycleBin},
        {"EnableFastSnapshotRestores", &ProtectionCalls::EnableFastSnapshotRestores},
        {"DisableFastSnapshotRestores", &ProtectionCalls::DisableFastSnapshotRestores},
        {"DescribeFastSnapshotRestores", &ProtectionCalls::DescribeFastSnapshotRestores},
        {"ModifySnapshotTier", &ProtectionCalls::ModifySnapshotTier},
        {"RestoreSnapshotTier", &ProtectionCalls::RestoreSnapshotTier},
        {"DescribeSnapshotTierStatus", &ProtectionCalls::DescribeSnapshotTierStatus},
    };
    return Dispatch(*this, kActions, action);
  }

 private:
  // An optional integer parameter in [min, max]; 0 when absent.
  std::variant<uint32_t, Ec2Error> Bounded(const std::string& name, uint32_t min, uint32_t max) {
    const std::string text = p_.GetOr(name, "");
    uint32_t v = 0;
    if (text.empty()) return v;
    if (!absl::SimpleAtoi(text, &v) || v < min || v > max) {
      return Invalid(absl::StrCat(name, " must be ", min, " to ", max, ", not ", text));
    }
    return v;
  }

  static void WriteLock(XmlWriter& x, const SnapshotInfo& s) {
    const SnapshotLock& lock = *s.lock;
    x.Text("lockState", s.lock_state);
    if (lock.duration_days != 0) x.Number("lockDuration", lock.duration_days);
    if (lock.cool_off_hours != 0) {
      x.Number("coolOffPeriod", lock.cool_off_hours);
      x.Text("coolOffPeriodExpiresOn", IsoTime(lock.cool_off_until_micros));
    }
    x.Text("lockCreatedOn", IsoTime(lock.created_micros));
    x.Text("lockDurationStartTime", IsoTime(lock.duration_start_micros));
    x.Text("lockExpiresOn", IsoTime(lock.expires_micros));
  }

  Result LockSnapshot() {
    const std::string id = p_.GetOr("SnapshotId", "");
    if (id.empty()) return Missing("SnapshotId");
    const std::string mode = p_.GetOr("LockMode", "");
    if (mode.empty()) return Missing("LockMode");
    SnapshotLockRequest request{.mode = mode};
    auto cool_off = Bounded("CoolOffPeriod", 1, 72);
    if (auto* e = std::get_if<Ec2Error>(&cool_off)) return *e;
    auto duration = Bounded("LockDuration", 1, 36500);
    if (auto* e = std::get_if<Ec2Error>(&duration)) return *e;
    request.cool_off_hours = std::get<uint32_t>(cool_off);
    request.duration_days = std::get<uint32_t>(duration);
    if (const std::string date = p_.GetOr("ExpirationDate", ""); !date.empty()) {
      absl::StatusOr<uint64_t> at = ParseIsoTime(date);
      if (!at.ok()) return Invalid(std::string(at.status().message()));
      request.expiration_micros = *at;
    }
    absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(id, true);
    if (!s.ok()) return FromStatus(s.status(), "Snapshot");
    absl::StatusOr<SnapshotInfo> locked = region_.LockSnapshot(id, request);
    if (!locked.ok()) return FromStatus(locked.status(), "Snapshot");
    x_.Text("snapshotId", id);
    WriteLock(x_, *locked);
    return x_.Finish();
  }

  Result UnlockSnapshot() {
    const std::string id = p_.GetOr("SnapshotId", "");
    if (id.empty()) return Missing("SnapshotId");
    absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(id, true);
    if (!s.ok()) return FromStatus(s.status(), "Snapshot");
    if (absl::StatusOr<SnapshotInfo> done = region_.UnlockSnapshot(id); !done.ok()) {
      return FromStatus(done.status(), "Snapshot");
    }
    x_.Text("snapshotId", id);
    return x_.Finish();
  }

  Result DescribeLockedSnapshots() {
    const std::vector<std::string> ids = p_.List("SnapshotId");
    const std::vector<Filter> filters = ParseFilters(p_);
    absl::StatusOr<std::vector<SnapshotInfo>> all = region_.ListSnapshots();
    if (!all.ok()) return FromStatus(all.status(), "Snapshot");
    std::vector<SnapshotInfo> out;
    for (const SnapshotInfo& s : *all) {
      if (!s.lock.has_value() || !Owns(account_, s.owner, store_)) continue;
      if (!ids.empty() && std::find(ids.begin(), ids.end(), s.id) == ids.end()) continue;
      absl::StatusOr<bool> keep = MatchesFilters(filters, {{"lock-state", s.lock_state}}, {});
      if (!keep.ok()) return Invalid(std::string(keep.status().message()));
      if (*keep) out.push_back(s);
    }
    absl::StatusOr<Page> page = Paginate(p_, out.size(), 5, 1000);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("snapshotSet");
    for (size_t i = page->begin; i < page->end; ++i) {
      x_.Open("item");
      x_.Text("ownerId", OwnerOf(out[i].owner));
      x_.Text("snapshotId", out[i].id);
      WriteLock(x_, out[i]);
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result ListSnapshotsInRecycleBin() {
    const std::vector<std::string> ids = p_.List("SnapshotId");
    absl::StatusOr<std::vector<SnapshotInfo>> all = region_.ListRecycledSnapshots();
    if (!all.ok()) return FromStatus(all.status(), "Snapshot");
    std::vector<SnapshotInfo> out;
    for (const SnapshotInfo& s : *all) {
      if (!Owns(account_, s.owner, store_)) continue;
      if (!ids.empty() && std::find(ids.begin(), ids.end(), s.id) == ids.end()) continue;
      out.push_back(s);
    }
    absl::StatusOr<Page> page = Paginate(p_, out.size(), 5, 1000);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("snapshotSet");
    for (size_t i = page->begin; i < page->end; ++i) {
      x_.Open("item");
      x_.Text("snapshotId", out[i].id);
      x_.Text("recycleBinEnterTime", IsoTime(out[i].recycle_bin->enter_micros));
      x_.Text("recycleBinExitTime", IsoTime(out[i].recycle_bin->exit_micros));
      x_.Text("description", out[i].description);
      x_.Text("volumeId", out[i].volume_id);
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result RestoreSnapshotFromRecycleBin() {
    const std::string id = p_.GetOr("SnapshotId", "");
    if (id.empty()) return Missing("SnapshotId");
    absl::StatusOr<std::vector<SnapshotInfo>> bin = region_.ListRecycledSnapshots();
    if (!bin.ok()) return FromStatus(bin.status(), "Snapshot");
    if (std::none_of(bin->begin(), bin->end(), [&](const SnapshotInfo& s) {
          return s.id == id && Owns(account_, s.owner, store_);
        })) {
      return Ec2Error{400, "InvalidSnapshot.NotFound",
                      absl::StrCat("The snapshot '", id, "' is not in the Recycle Bin.")};
    }
    absl::StatusOr<SnapshotInfo> s = region_.RestoreSnapshotFromRecycleBin(id);
    if (!s.ok()) return FromStatus(s.status(), "Snapshot");
    x_.Text("snapshotId", s->id);
    x_.Text("description", s->description);
    x_.Bool("encrypted", s->encrypted);
    x_.Text("ownerId", OwnerOf(s->owner));
    x_.Text("progress", absl::StrCat(s->progress_percent, "%"));
    x_.Text("startTime", IsoTime(s->start_time_micros));
    x_.Text("status", SnapshotStateName(s->state));
    x_.Text("volumeId", s->volume_id);
    x_.Number("volumeSize", GiBCeil(s->volume_size_bytes));
    return x_.Finish();
  }

  Result ListImagesInRecycleBin() {
    const std::vector<std::string> ids = p_.List("ImageId");
    absl::StatusOr<std::vector<ImageInfo>> all = region_.images().ListRecycledImages();
    if (!all.ok()) return FromStatus(all.status(), "AMIID");
    std::vector<ImageInfo> out;
    for (const ImageInfo& i : *all) {
      if (!Owns(account_, i.owner, store_)) continue;
      if (!ids.empty() && std::find(ids.begin(), ids.end(), i.id) == ids.end()) continue;
      out.push_back(i);
    }
    absl::StatusOr<Page> page = Paginate(p_, out.size(), 1, 1000);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("imageSet");
    for (size_t i = page->begin; i < page->end; ++i) {
      x_.Open("item");
      x_.Text("imageId", out[i].id);
      x_.Text("name", out[i].name);
      x_.Text("description", out[i].description);
      x_.Text("recycleBinEnterTime", IsoTime(out[i].recycle_bin->enter_micros));
      x_.Text("recycleBinExitTime", IsoTime(out[i].recycle_bin->exit_micros));
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result RestoreImageFromRecycleBin() {
    const std::string id = p_.GetOr("ImageId", "");
    if (id.empty()) return Missing("ImageId");
    absl::StatusOr<std::vector<ImageInfo>> bin = region_.images().ListRecycledImages();
    if (!bin.ok()) return FromStatus(bin.status(), "AMIID");
    if (std::none_of(bin->begin(), bin->end(), [&](const ImageInfo& i) {
          return i.id == id && Owns(account_, i.owner, store_);
        })) {
      return Ec2Error{400, "InvalidAMIID.NotFound",
                      absl::StrCat("The image id '[", id, "]' is not in the Recycle Bin.")};
    }
    if (absl::StatusOr<ImageInfo> i = region_.images().RestoreImageFromRecycleBin(id); !i.ok()) {
      return FromStatus(i.status(), "AMIID");
    }
    x_.Bool("return", true);
    return x_.Finish();
  }

  void WriteFastRestore(const FastRestoreInfo& f) {
    const uint64_t now = NowMicros();
    auto at = [&](const char* name, uint64_t micros) {
      if (micros != 0 && micros <= now) x_.Text(name, IsoTime(micros));
    };
    x_.Text("snapshotId", f.snapshot_id);
    x_.Text("availabilityZone", Zone());
    x_.Text("state", f.state);
    x_.Text("stateTransitionReason", f.state == "disabling" || f.state == "disabled"
                                         ? "Client.UserInitiated"
                                         : "Client.UserInitiated - Lifecycle state transition");
    x_.Text("ownerId", OwnerOf(f.account));
    at("enablingTime", f.enabling_micros);
    at("optimizingTime", f.optimizing_micros);
    at("enabledTime", f.enabled_micros);
    at("disablingTime", f.disabling_micros);
    at("disabledTime", f.disabled_micros);
  }

  // Enable and Disable: each snapshot in each zone named, successes and failures apart.
  Result ChangeFastSnapshotRestores(bool enable) {
    const std::vector<std::string> zones = p_.List("AvailabilityZone");
    const std::vector<std::string> snapshots = p_.List("SourceSnapshotId");
    if (snapshots.empty()) return Missing("SourceSnapshotId");
    if (zones.empty()) return Missing("AvailabilityZone");
    std::vector<FastRestoreInfo> done;
    std::vector<std::pair<std::string, std::vector<std::pair<std::string, Ec2Error>>>> failed;
    for (const std::string& id : snapshots) {
      std::vector<std::pair<std::string, Ec2Error>> errors;
      for (const std::string& zone : zones) {
        if (zone != Zone()) {
          errors.push_back({zone, Ec2Error{400, "InvalidAvailabilityZone.NotFound",
                                           absl::StrCat("the zone of region ", region_.name(),
                                                        " is ", Zone(), ", not ", zone)}});
          continue;
        }
        absl::StatusOr<FastRestoreInfo> f;
        if (enable) {
          absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(id, false);
          f = s.ok() ? region_.EnableFastSnapshotRestore(account_.id, id) : s.status();
        } else {
          f = region_.DisableFastSnapshotRestore(account_.id, id);
        }
        if (f.ok()) {
          done.push_back(*f);
        } else {
          errors.push_back({zone, FromStatus(f.status(), "Snapshot")});
        }
      }
      if (!errors.empty()) failed.push_back({id, std::move(errors)});
    }
    x_.Open("successful");
    for (const FastRestoreInfo& f : done) {
      x_.Open("item");
      WriteFastRestore(f);
      x_.Close();
    }
    x_.Close();
    x_.Open("unsuccessful");
    for (const auto& [id, errors] : failed) {
      x_.Open("item");
      x_.Text("snapshotId", id);
      x_.Open("fastSnapshotRestoreStateErrorSet");
      for (const auto& [zone, error] : errors) {
        x_.Open("item");
        x_.Text("availabilityZone", zone);
        x_.Open("error");
        x_.Text("code", error.code);
        x_.Text("message", error.message);
        x_.Close();
        x_.Close();
      }
      x_.Close();
      x_.Close();
    }
    x_.Close();
    return x_.Finish();
  }

  Result EnableFastSnapshotRestores() { return ChangeFastSnapshotRestores(true); }
  Result DisableFastSnapshotRestores() { return ChangeFastSnapshotRestores(false); }

  Result DescribeFastSnapshotRestores() {
    const std::vector<Filter> filters = ParseFilters(p_);
    absl::StatusOr<std::vector<FastRestoreInfo>> all = region_.ListFastSnapshotRestores();
    if (!all.ok()) return FromStatus(all.status(), "Snapshot");
    std::vector<FastRestoreInfo> out;
    for (const FastRestoreInfo& f : *all) {
      if (!Owns(account_, f.account, store_)) continue;
      absl::StatusOr<bool> keep = MatchesFilters(filters,
                                                 {{"snapshot-id", f.snapshot_id},
                                                  {"availability-zone", Zone()},
                                                  {"owner-id", OwnerOf(f.account)},
                                                  {"state", f.state}},
                                                 {});
      if (!keep.ok()) return Invalid(std::string(keep.status().message()));
      if (*keep) out.push_back(f);
    }
    absl::StatusOr<Page> page = Paginate(p_, out.size(), 1, 200);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("fastSnapshotRestoreSet");
    for (size_t i = page->begin; i < page->end; ++i) {
      x_.Open("item");
      WriteFastRestore(out[i]);
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result ModifySnapshotTier() {
    const std::string id = p_.GetOr("SnapshotId", "");
    if (id.empty()) return Missing("SnapshotId");
    if (const std::string tier = p_.GetOr("StorageTier", "archive"); tier != "archive") {
      return Invalid(absl::StrCat("StorageTier must be archive, not ", tier));
    }
    absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(id, true);
    if (!s.ok()) return FromStatus(s.status(), "Snapshot");
    absl::StatusOr<SnapshotTierStatus> tier = region_.ArchiveSnapshot(id);
    if (!tier.ok()) return FromStatus(tier.status(), "Snapshot");
    x_.Text("snapshotId", id);
    x_.Text("tieringStartTime", IsoTime(tier->tiering_start_micros));
    return x_.Finish();
  }

  Result RestoreSnapshotTier() {
    const std::string id = p_.GetOr("SnapshotId", "");
    if (id.empty()) return Missing("SnapshotId");
    auto days = Bounded("TemporaryRestoreDays", 1, 180);
    if (auto* e = std::get_if<Ec2Error>(&days)) return *e;
    absl::StatusOr<std::optional<bool>> permanent = p_.GetBool("PermanentRestore");
    if (!permanent.ok()) return Invalid(std::string(permanent.status().message()));
    const SnapshotTierRestoreRequest request{.temporary_days = std::get<uint32_t>(days),
                                             .permanent = permanent->value_or(false)};
    absl::StatusOr<SnapshotInfo> s = VisibleSnapshot(id, true);
    if (!s.ok()) return FromStatus(s.status(), "Snapshot");
    absl::StatusOr<SnapshotTierStatus> tier = region_.RestoreArchivedSnapshot(id, request);
    if (!tier.ok()) return FromStatus(tier.status(), "Snapshot");
    x_.Text("snapshotId", id);
    x_.Text("restoreStartTime", IsoTime(tier->tiering_start_micros));
    if (!request.permanent) x_.Number("restoreDuration", request.temporary_days);
    x_.Bool("isPermanentRestore", request.permanent);
    return x_.Finish();
  }

  Result DescribeSnapshotTierStatus() {
    const std::vector<Filter> filters = ParseFilters(p_);
    absl::StatusOr<std::vector<SnapshotTierStatus>> all = region_.ListSnapshotTierStatuses();
    if (!all.ok()) return FromStatus(all.status(), "Snapshot");
    std::vector<SnapshotTierStatus> out;
    for (const SnapshotTierStatus& t : *all) {
      if (!Owns(account_, t.owner, store_)) continue;
      absl::StatusOr<bool> keep =
          MatchesFilters(filters,
                         {{"snapshot-id", t.snapshot_id},
                          {"volume-id", t.volume_id},
                          {"last-tiering-operation", t.last_operation_status},
                          {"storage-tier", t.storage_tier}},
                         t.tags);
      if (!keep.ok()) return Invalid(std::string(keep.status().message()));
      if (*keep) out.push_back(t);
    }
    absl::StatusOr<Page> page = Paginate(p_, out.size(), 1, 1000);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("snapshotTierStatusSet");
    for (size_t i = page->begin; i < page->end; ++i) {
      const SnapshotTierStatus& t = out[i];
      x_.Open("item");
      x_.Text("snapshotId", t.snapshot_id);
      x_.Text("volumeId", t.volume_id);
      x_.Text("status", t.snapshot_state);
      x_.Text("ownerId", OwnerOf(t.owner));
      WriteTags(x_, t.tags);
      x_.Text("storageTier", t.storage_tier);
      if (!t.last_operation.empty()) {
        x_.Text("lastTieringStartTime", IsoTime(t.tiering_start_micros));
        x_.Number("lastTieringProgress", t.progress_percent);
        x_.Text("lastTieringOperationStatus", t.last_operation_status);
        if (!t.last_operation_detail.empty()) {
          x_.Text("lastTieringOperationStatusDetail", t.last_operation_detail);
        }
      }
      if (t.archival_complete_micros != 0) {
        x_.Text("archivalCompleteTime", IsoTime(t.archival_complete_micros));
      }
      if (t.restore_expiry_micros != 0) {
        x_.Text("restoreExpiryTime", IsoTime(t.restore_expiry_micros));
      }
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }
};

}  // namespace

std::optional<Result> RunProtectionCall(const Ec2CallContext& c, const std::string& action) {
  return ProtectionCalls(c).Run(action);
}

}  // namespace strata::api
