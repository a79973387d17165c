#pragma once
// RecycleRules: a region's Recycle Bin retention rules (strata/data_protection.h), one JSON
// record per rule under "b/rule/" in the region's catalog (docs/formats/catalog.md). Read from
// the catalog on every call, so every node of a region on RADOS sees the same rules; changed
// inside the region's shared section.

#include <string>

#include "absl/synchronization/mutex.h"
#include "meta/catalog.h"
#include "strata/data_protection.h"
#include "strata/env.h"
#include "util/shared_section.h"

namespace strata::region {

class RecycleRules final : public RecycleBin {
 public:
  // Everything passed must outlive it. `day_micros`: the length of a day
  // (StoreOptions::seconds_per_day).
  RecycleRules(meta::Catalog& catalog, util::SharedSection& shared, Env* env, uint64_t day_micros)
      : catalog_(catalog), shared_(shared), env_(env), day_micros_(day_micros) {}

  absl::StatusOr<RecycleRule> CreateRule(RecycleRule rule) override;
  absl::StatusOr<RecycleRule> GetRule(const std::string& owner, const std::string& id) override;
  absl::StatusOr<std::vector<RecycleRule>> ListRules(const std::string& owner) override;
  absl::StatusOr<RecycleRule> UpdateRule(const std::string& owner, const std::string& id,
                                         const std::function<absl::Status(RecycleRule&)>& change,
                                         bool tags_only) override;
  absl::Status DeleteRule(const std::string& owner, const std::string& id) override;
  absl::StatusOr<RecycleRule> LockRule(const std::string& owner, const std::string& id,
                                       uint32_t unlock_delay_days) override;
  absl::StatusOr<RecycleRule> UnlockRule(const std::string& owner, const std::string& id) override;
  absl::StatusOr<uint64_t> RetentionMicros(const std::string& owner,
                                           const std::string& resource_type,
                                           const std::map<std::string, std::string>& tags) override;

 private:
  absl::StatusOr<RecycleRule> Load(const std::string& owner, const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Save(const RecycleRule& rule) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NewId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  meta::Catalog& catalog_;
  util::SharedSection& shared_;
  Env* const env_;
  const uint64_t day_micros_;
  absl::Mutex mu_;  // Serializes this node's read-modify-writes of rules.
};

// The checks CreateRule and UpdateRule make, with rbin's limits. Pure.
absl::Status ValidateRule(const RecycleRule& rule);

}  // namespace strata::region
