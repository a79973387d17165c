#pragma once
// Protection against deletion, as EBS gives it (docs/data-protection.md): snapshot locks
// (LockSnapshot) and the Recycle Bin's retention rules (the rbin API), which keep a deleted
// snapshot or deregistered image restorable for their retention period.
//
// Periods are counted in AWS's units (days, hours) of StoreOptions::seconds_per_day, so that a
// rehearsal or a test can shorten a day; every time is an absolute wall-clock time in µs.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata {

// A snapshot's lock (LockSnapshot). A snapshot whose lock has not expired cannot be deleted by
// anyone; a compliance lock past its cooling-off period can be neither removed nor shortened.
struct SnapshotLock {
  std::string mode;                    // "governance" or "compliance".
  uint64_t created_micros = 0;         // When it was first locked (kept across changes).
  uint64_t duration_start_micros = 0;  // When the current duration began.
  uint64_t cool_off_until_micros = 0;  // Compliance: the end of the cooling-off period; or 0.
  uint64_t expires_micros = 0;
  uint32_t duration_days = 0;   // 0 when the lock was given an expiration date instead.
  uint32_t cool_off_hours = 0;  // 0: no cooling-off period.

  // "governance", "compliance-cooloff", "compliance" or "expired", as EC2 names them.
  std::string StateAt(uint64_t now_micros) const;
  bool HoldsAt(uint64_t now_micros) const { return now_micros < expires_micros; }
};

// LockSnapshot's request: exactly one of duration_days and expiration_micros.
struct SnapshotLockRequest {
  std::string mode;             // "governance" or "compliance".
  uint32_t cool_off_hours = 0;  // Compliance only: 1 to 72; 0 for none.
  uint32_t duration_days = 0;   // 1 to 36500.
  uint64_t expiration_micros = 0;
};

// Where a deleted resource waits in the Recycle Bin.
struct RecycleBinEntry {
  uint64_t enter_micros = 0;
  uint64_t exit_micros = 0;  // When its retention ends and it is deleted for good.
};

// The resource types a rule retains.
inline constexpr const char* kRecycleSnapshots = "EBS_SNAPSHOT";
inline constexpr const char* kRecycleImages = "EC2_IMAGE";

// A Recycle Bin retention rule (rbin CreateRule), owned by one account in one region.
struct RecycleRule {
  std::string id;     // 11 letters and digits.
  std::string owner;  // Account id.
  std::string resource_type;
  uint32_t retention_days = 0;  // 1 to 3650.
  std::string description;
  std::map<std::string, std::string> tags;  // The rule's own tags.
  // Tag-level rule: a resource with any of these tags (an empty value: any value of the key)
  // is retained. Empty: a region-level rule, which retains every resource of its type but those
  // with any of `exclude_resource_tags`.
  std::vector<std::pair<std::string, std::string>> resource_tags;
  std::vector<std::pair<std::string, std::string>> exclude_resource_tags;
  // Rule lock (region-level rules only): 0 when the rule was never locked; else the days an
  // unlock waits before the rule can be changed or deleted (7 to 30).
  uint32_t unlock_delay_days = 0;
  bool locked = false;            // Locked, and no unlock asked for since.
  uint64_t unlock_at_micros = 0;  // After UnlockRule: when the unlock delay ends.

  // "locked", "pending_unlock" or "unlocked" for a region-level rule; "" for a tag-level one.
  std::string LockStateAt(uint64_t now_micros) const;
  // Locked or pending unlock: the rule can be neither deleted nor changed.
  bool FrozenAt(uint64_t now_micros) const;
  // True when the rule retains a resource tagged `tags`.
  bool Covers(const std::map<std::string, std::string>& tags) const;
};

// A region's Recycle Bin rules. Thread-safe; shared by every node of a region on RADOS.
class RecycleBin {
 public:
  virtual ~RecycleBin() = default;
  // Validates and stores a new rule (its id, lock state and owner are set here from
  // `rule.owner`). kInvalidArgument names the bad field.
  [[nodiscard]] virtual absl::StatusOr<RecycleRule> CreateRule(RecycleRule rule) = 0;
  // The rule `id` of `owner`; kNotFound for any other.
  [[nodiscard]] virtual absl::StatusOr<RecycleRule> GetRule(const std::string& owner,
                                                            const std::string& id) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<RecycleRule>> ListRules(
      const std::string& owner) = 0;
  // Applies `change` to the rule and stores it, validated. A locked or pending-unlock rule is
  // kFailedPrecondition, unless `tags_only` (its tags may always change).
  [[nodiscard]] virtual absl::StatusOr<RecycleRule> UpdateRule(
      const std::string& owner, const std::string& id,
      const std::function<absl::Status(RecycleRule&)>& change, bool tags_only) = 0;
  // kFailedPrecondition while the rule is locked or pending unlock.
  [[nodiscard]] virtual absl::Status DeleteRule(const std::string& owner,
                                                const std::string& id) = 0;
  // Locks a region-level rule with an unlock delay of 7 to 30 days. kFailedPrecondition when it
  // is locked or pending unlock already, kInvalidArgument for a tag-level rule.
  [[nodiscard]] virtual absl::StatusOr<RecycleRule> LockRule(const std::string& owner,
                                                             const std::string& id,
                                                             uint32_t unlock_delay_days) = 0;
  // Starts the unlock delay of a locked rule. kFailedPrecondition when it is not locked.
  [[nodiscard]] virtual absl::StatusOr<RecycleRule> UnlockRule(const std::string& owner,
                                                               const std::string& id) = 0;
  // How long a resource of `owner` and `resource_type` tagged `tags` stays in the bin when it is
  // deleted: the longest retention of the rules that cover it, in µs; 0 when none does.
  [[nodiscard]] virtual absl::StatusOr<uint64_t> RetentionMicros(
      const std::string& owner, const std::string& resource_type,
      const std::map<std::string, std::string>& tags) = 0;
};

// The archive tier of a snapshot (DescribeSnapshotTierStatus). An archived snapshot's chunks
// left the main store for a full, self-contained copy in the archive store; it is listed, with
// storage tier "archive", and can be deleted or restored, nothing else, until a restore brings
// it back (docs/data-protection.md).
struct SnapshotTierStatus {
  std::string snapshot_id;
  std::string volume_id;
  std::string owner;
  std::map<std::string, std::string> tags;
  std::string snapshot_state;  // "pending", "completed" or "error", as SnapshotStateName.
  std::string storage_tier;    // "standard" or "archive".
  // The last tiering operation: "archival", "temporary-restore" or "permanent-restore", and
  // its status with it, as EC2 spells it ("archival-in-progress", "archival-completed",
  // "archival-failed", "temporary-restore-completed", ...). Empty: never tiered.
  std::string last_operation;
  std::string last_operation_status;
  std::string last_operation_detail;  // Why it failed.
  int progress_percent = 0;           // Of the last operation.
  uint64_t tiering_start_micros = 0;  // When the last operation began.
  uint64_t archival_complete_micros = 0;
  uint64_t restore_expiry_micros = 0;  // A temporary restore's end (then it is archived again).
};

// RestoreSnapshotTier: exactly one of a temporary restore for `temporary_days` (1 to 180) and a
// permanent one. On a temporarily restored snapshot, a new temporary restore changes its period
// and a permanent one makes it permanent.
struct SnapshotTierRestoreRequest {
  uint32_t temporary_days = 0;
  bool permanent = false;
};

}  // namespace strata
