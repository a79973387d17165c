// RegionImpl: snapshot locks and the snapshots of the Recycle Bin (docs/data-protection.md).
// The rules themselves are RecycleRules'; the bin's sweep also runs the image registry's.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "region/region_impl.h"
#include "region/snapshot_records.h"
#include "strata/aws_error.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata {

std::string SnapshotLock::StateAt(uint64_t now_micros) const {
  if (now_micros >= expires_micros) return "expired";
  if (mode == "compliance" && now_micros < cool_off_until_micros) return "compliance-cooloff";
  return mode;
}

}  // namespace strata

namespace strata::region {
namespace {

constexpr uint8_t kGovernance = 1;
constexpr uint8_t kCompliance = 2;
// The sweep of the bin runs at least this often, to see entries other nodes made (RADOS).
constexpr uint64_t kSweepEveryMicros = 60'000'000;
// The id of the one sweep task that comes back (others sweep once, at an entry's expiry).
constexpr char kPeriodicSweep[] = "periodic";

absl::Status Invalid(const std::string& code, const std::string& message) {
  return WithAwsErrorCode(absl::InvalidArgumentError(message), code);
}

absl::Status Locked(const std::string& message) {
  return WithAwsErrorCode(absl::FailedPreconditionError(message), "SnapshotLocked");
}

}  // namespace

std::optional<SnapshotLock> RegionImpl::ToLock(const meta::SnapshotRecord::Lock& lock) {
  if (lock.mode == 0) return std::nullopt;
  return SnapshotLock{.mode = lock.mode == kCompliance ? "compliance" : "governance",
                      .created_micros = lock.created_micros,
                      .duration_start_micros = lock.duration_start_micros,
                      .cool_off_until_micros = lock.cool_off_until_micros,
                      .expires_micros = lock.expires_micros,
                      .duration_days = lock.duration_days,
                      .cool_off_hours = lock.cool_off_hours};
}

absl::Status RegionImpl::CheckNotLocked(const meta::SnapshotRecord& r) const {
  const uint64_t now = env_->NowMicros();
  if (r.lock.mode == 0 || now >= r.lock.expires_micros) return absl::OkStatus();
  return Locked(absl::StrCat("the snapshot ", r.id, " is locked (", ToLock(r.lock)->StateAt(now),
                             ") until ", r.lock.expires_micros / 1000,
                             " ms after the epoch: it cannot be deleted"));
}

absl::StatusOr<SnapshotInfo> RegionImpl::LockSnapshot(const std::string& snapshot_id,
                                                      const SnapshotLockRequest& request) {
  if (request.mode != "governance" && request.mode != "compliance") {
    return Invalid(
        "InvalidParameterValue",
        absl::StrCat("LockMode must be governance or compliance, not \"", request.mode, "\""));
  }
  if (request.cool_off_hours != 0 && request.mode != "compliance") {
    return Invalid("InvalidParameterCombination", "CoolOffPeriod applies to compliance mode only");
  }
  if (request.cool_off_hours > 72) {
    return Invalid(
        "InvalidParameterValue",
        absl::StrCat("CoolOffPeriod must be 1 to 72 hours, not ", request.cool_off_hours));
  }
  if ((request.duration_days != 0) == (request.expiration_micros != 0)) {
    return Invalid("InvalidParameterCombination",
                   "give exactly one of LockDuration and ExpirationDate");
  }
  if (request.duration_days > 36500) {
    return Invalid(
        "InvalidParameterValue",
        absl::StrCat("LockDuration must be 1 to 36500 days, not ", request.duration_days));
  }
  const uint64_t day = options_.seconds_per_day * 1'000'000;
  const uint64_t now = env_->NowMicros();
  if (request.expiration_micros != 0 && request.expiration_micros <= now) {
    return Invalid("InvalidParameterValue", "ExpirationDate must be in the future");
  }
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  std::optional<ArchiveRecord> archived;
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindForLockLocked(snapshot_id, archived));
  const bool held = r.lock.mode != 0 && now < r.lock.expires_micros;
  const bool cooling = held && r.lock.mode == kCompliance && now < r.lock.cool_off_until_micros;
  meta::SnapshotRecord::Lock next;
  next.mode = request.mode == "compliance" ? kCompliance : kGovernance;
  next.created_micros = held ? r.lock.created_micros : now;
  next.duration_start_micros = now;
  next.duration_days = request.duration_days;
  next.expires_micros =
      request.duration_days != 0 ? now + request.duration_days * day : request.expiration_micros;
  next.cool_off_hours = next.mode == kCompliance ? request.cool_off_hours : 0;
  next.cool_off_until_micros = next.cool_off_hours == 0 ? 0
                                                        : (cooling ? r.lock.created_micros : now) +
                                                              next.cool_off_hours * (day / 24);
  if (held && r.lock.mode == kCompliance && !cooling) {
    // Past its cooling-off period a compliance lock may only be extended.
    if (next.mode != kCompliance) {
      return Locked(absl::StrCat("the snapshot ", r.id,
                                 " is locked in compliance mode past its cooling-off period: its "
                                 "mode cannot change"));
    }
    if (next.expires_micros < r.lock.expires_micros) {
      return Locked(absl::StrCat("the snapshot ", r.id,
                                 " is locked in compliance mode past its cooling-off period: its "
                                 "lock can be extended, not shortened"));
    }
    next.cool_off_hours = r.lock.cool_off_hours;
    next.cool_off_until_micros = r.lock.cool_off_until_micros;
  }
  r.lock = next;
  if (auto it = pending_.find(snapshot_id); it != pending_.end()) {
    it->second->record.lock = r.lock;  // The completion writes the pending copy.
  }
  return WriteLockLocked(r, archived);
}

absl::StatusOr<meta::SnapshotRecord> RegionImpl::FindForLockLocked(
    const std::string& snapshot_id, std::optional<ArchiveRecord>& archived) {
  absl::StatusOr<meta::SnapshotRecord> r = FindSnapshot(*tree_, snapshot_id);
  if (!absl::IsNotFound(r.status())) return r;
  // An archived snapshot keeps its lock in its archive record.
  STRATA_ASSIGN_OR_RETURN(archived, GetArchiveRecord(snapshot_id));
  if (!archived.has_value() ||
      (archived->state != TierState::kArchived && archived->state != TierState::kRestoring)) {
    archived.reset();
    return r;
  }
  return archived->snapshot;
}

absl::StatusOr<SnapshotInfo> RegionImpl::WriteLockLocked(const meta::SnapshotRecord& r,
                                                         std::optional<ArchiveRecord>& archived) {
  meta::WriteBatch batch;
  if (archived.has_value()) {
    archived->snapshot = r;
    batch.Put(meta::ArchiveKey(r.id), archived->Encode());
  } else {
    batch.Put(meta::SnapshotKey(r.id), r.Encode());
  }
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  SnapshotInfo info = ToInfo(r);
  if (archived.has_value()) {
    AnnotateTier(info, *archived);
  } else {
    tree_->Put(r);
  }
  return info;
}

absl::StatusOr<SnapshotInfo> RegionImpl::UnlockSnapshot(const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  std::optional<ArchiveRecord> archived;
  STRATA_ASSIGN_OR_RETURN(meta::SnapshotRecord r, FindForLockLocked(snapshot_id, archived));
  const uint64_t now = env_->NowMicros();
  if (r.lock.mode == 0) {
    return WithAwsErrorCode(
        absl::FailedPreconditionError(absl::StrCat("the snapshot ", r.id, " is not locked")),
        "SnapshotNotLocked");
  }
  if (r.lock.mode == kCompliance && now >= r.lock.cool_off_until_micros &&
      now < r.lock.expires_micros) {
    return Locked(absl::StrCat("the snapshot ", r.id,
                               " is locked in compliance mode past its cooling-off period: it "
                               "cannot be unlocked before ",
                               r.lock.expires_micros / 1000, " ms after the epoch"));
  }
  r.lock = {};
  if (auto it = pending_.find(snapshot_id); it != pending_.end()) it->second->record.lock = r.lock;
  return WriteLockLocked(r, archived);
}

absl::StatusOr<bool> RegionImpl::RecycleSnapshotLocked(meta::SnapshotRecord r) {
  STRATA_ASSIGN_OR_RETURN(uint64_t retention,
                          recycle_rules_->RetentionMicros(r.owner, kRecycleSnapshots, r.tags));
  if (retention == 0) return false;
  r.recycled_micros = env_->NowMicros();
  r.recycle_until_micros = r.recycled_micros + retention;
  meta::WriteBatch batch;
  batch.Put(meta::SnapshotKey(r.id), r.Encode());
  STRATA_RETURN_IF_ERROR(DropFastRestores(r.id, batch));  // Binned is deleted, for EBS too.
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(r);
  ScheduleRecycleSweep(r.recycle_until_micros);
  return true;
}

absl::StatusOr<std::vector<SnapshotInfo>> RegionImpl::ListRecycledSnapshots() {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  std::vector<meta::SnapshotRecord> all = tree_->All();
  std::sort(all.begin(), all.end(),
            [](const auto& a, const auto& b) { return a.recycled_micros < b.recycled_micros; });
  absl::MutexLock lock(&mu_);
  std::vector<SnapshotInfo> out;
  for (const meta::SnapshotRecord& r : all) {
    if (!r.deleted && r.recycled_micros != 0) out.push_back(ToInfo(r));
  }
  return out;
}

absl::StatusOr<SnapshotInfo> RegionImpl::RestoreSnapshotFromRecycleBin(
    const std::string& snapshot_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  std::optional<meta::SnapshotRecord> r = tree_->Get(snapshot_id);
  if (!r.has_value() || r->deleted || r->recycled_micros == 0 ||
      r->recycle_until_micros <= env_->NowMicros()) {
    return WithAwsErrorCode(
        absl::NotFoundError(absl::StrCat("the snapshot ", snapshot_id,
                                         " is not in the Recycle Bin (never deleted, restored "
                                         "already, or its retention period has ended)")),
        "InvalidSnapshot.NotFound");
  }
  r->recycled_micros = 0;
  r->recycle_until_micros = 0;
  meta::WriteBatch batch;
  batch.Put(meta::SnapshotKey(r->id), r->Encode());
  STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
  tree_->Put(*r);
  return ToInfo(*r);
}

void RegionImpl::set_recycle_bin_sweeper(std::function<uint64_t(uint64_t)> sweeper) {
  absl::MutexLock lock(&sweeper_mu_);
  sweeper_ = std::move(sweeper);
}

void RegionImpl::ScheduleRecycleSweep(uint64_t at_micros) {
  tasks_.Push({.kind = Task::Kind::kSweepRecycleBin, .not_before_micros = at_micros});
}

void RegionImpl::StartRecycleSweeps() {
  tasks_.Push({.kind = Task::Kind::kSweepRecycleBin, .id = kPeriodicSweep});
}

std::optional<Task> RegionImpl::SweepRecycleBin(const Task& task) {
  const uint64_t now = env_->NowMicros();
  uint64_t next = now + kSweepEveryMicros;
  absl::Status status = [&]() -> absl::Status {
    STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
    absl::MutexLock lock(&mu_);
    for (meta::SnapshotRecord r : tree_->All()) {
      if (r.deleted || r.recycled_micros == 0) continue;
      if (r.recycle_until_micros > now) {
        next = std::min(next, r.recycle_until_micros);
        continue;
      }
      // Its retention ended: deleted for good, as DeleteSnapshot does without a rule.
      r.recycled_micros = 0;
      r.recycle_until_micros = 0;
      r.deleted = true;
      meta::WriteBatch batch;
      batch.Put(meta::SnapshotKey(r.id), r.Encode());
      STRATA_RETURN_IF_ERROR(catalog_->Write(batch));
      tree_->Put(r);
      tasks_.Push({Task::Kind::kPrune, r.id, nullptr, 0});
      STRATA_LOG(kInfo, "snapshot ", r.id, ": its Recycle Bin retention ended; deleted");
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) STRATA_LOG(kWarning, "the Recycle Bin's sweep failed: ", status.ToString());
  {
    absl::MutexLock lock(&sweeper_mu_);  // Held across the call: its owner may be going away.
    if (sweeper_) {
      if (const uint64_t images_next = sweeper_(now); images_next != 0) {
        next = std::min(next, images_next);
      }
    }
  }
  if (task.id != kPeriodicSweep) return std::nullopt;  // One entry's expiry: done.
  // The periodic sweep comes back, as a retry: RunAll (a stop, or tests stepping the work) runs
  // it once and leaves it queued.
  return Task{.kind = Task::Kind::kSweepRecycleBin,
              .id = kPeriodicSweep,
              .not_before_micros = std::max(next, now + 1),
              .retry = true};
}

}  // namespace strata::region
