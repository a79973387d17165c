#include "region/recycle_rules.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "meta/schema.h"
#include "nlohmann/json.hpp"
#include "strata/aws_error.h"
#include "util/status_macros.h"
#include "volume/tags.h"

namespace strata {

std::string RecycleRule::LockStateAt(uint64_t now_micros) const {
  if (unlock_delay_days == 0) return resource_tags.empty() ? "unlocked" : "";
  if (locked) return "locked";
  return now_micros < unlock_at_micros ? "pending_unlock" : "unlocked";
}

bool RecycleRule::FrozenAt(uint64_t now_micros) const {
  const std::string state = LockStateAt(now_micros);
  return state == "locked" || state == "pending_unlock";
}

bool RecycleRule::Covers(const std::map<std::string, std::string>& resource) const {
  auto has = [&](const std::pair<std::string, std::string>& tag) {
    auto it = resource.find(tag.first);
    return it != resource.end() && (tag.second.empty() || it->second == tag.second);
  };
  if (!resource_tags.empty()) return std::any_of(resource_tags.begin(), resource_tags.end(), has);
  return std::none_of(exclude_resource_tags.begin(), exclude_resource_tags.end(), has);
}

}  // namespace strata

namespace strata::region {
namespace {

using nlohmann::json;

absl::Status Invalid(const std::string& message) {
  return WithAwsErrorCode(absl::InvalidArgumentError(message), "ValidationException");
}

absl::Status Conflict(const std::string& message) {
  return WithAwsErrorCode(absl::FailedPreconditionError(message), "ConflictException");
}

json TagPairs(const std::vector<std::pair<std::string, std::string>>& tags) {
  json out = json::array();
  for (const auto& [k, v] : tags) out.push_back({k, v});
  return out;
}

std::vector<std::pair<std::string, std::string>> FromTagPairs(const json& j) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const json& pair : j) out.emplace_back(pair.at(0).get<std::string>(), pair.at(1));
  return out;
}

std::string Encode(const RecycleRule& r) {
  return json{{"id", r.id},
              {"owner", r.owner},
              {"resource_type", r.resource_type},
              {"retention_days", r.retention_days},
              {"description", r.description},
              {"tags", r.tags},
              {"resource_tags", TagPairs(r.resource_tags)},
              {"exclude_resource_tags", TagPairs(r.exclude_resource_tags)},
              {"unlock_delay_days", r.unlock_delay_days},
              {"locked", r.locked},
              {"unlock_at_micros", r.unlock_at_micros}}
      .dump();
}

absl::StatusOr<RecycleRule> Decode(const std::string& bytes) {
  json j = json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::DataLossError("catalog: corrupt Recycle Bin rule record");
  try {
    RecycleRule r;
    r.id = j.at("id");
    r.owner = j.at("owner");
    r.resource_type = j.at("resource_type");
    r.retention_days = j.at("retention_days");
    r.description = j.at("description");
    r.tags = j.at("tags").get<std::map<std::string, std::string>>();
    r.resource_tags = FromTagPairs(j.at("resource_tags"));
    r.exclude_resource_tags = FromTagPairs(j.at("exclude_resource_tags"));
    r.unlock_delay_days = j.at("unlock_delay_days");
    r.locked = j.at("locked");
    r.unlock_at_micros = j.at("unlock_at_micros");
    return r;
  } catch (const json::exception& e) {
    return absl::DataLossError(
        absl::StrCat("catalog: corrupt Recycle Bin rule record: ", e.what()));
  }
}

absl::Status ValidateResourceTags(const std::vector<std::pair<std::string, std::string>>& tags,
                                  const char* field, size_t max) {
  if (tags.size() > max) return Invalid(absl::StrCat(field, " holds at most ", max, " tags"));
  for (const auto& [k, v] : tags) {
    if (k.empty() || k.size() > 128) {
      return Invalid(absl::StrCat(field, ": a tag key is 1 to 128 characters"));
    }
    if (v.size() > 256) return Invalid(absl::StrCat(field, ": a tag value is at most 256"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRule(const RecycleRule& rule) {
  if (rule.resource_type != kRecycleSnapshots && rule.resource_type != kRecycleImages) {
    return Invalid(absl::StrCat("ResourceType must be ", kRecycleSnapshots, " or ", kRecycleImages,
                                ", not \"", rule.resource_type, "\""));
  }
  if (rule.retention_days < 1 || rule.retention_days > 3650) {
    return Invalid(
        absl::StrCat("RetentionPeriodValue must be 1 to 3650 days, not ", rule.retention_days));
  }
  if (rule.description.size() > 255) return Invalid("Description is over 255 characters");
  STRATA_RETURN_IF_ERROR(ValidateResourceTags(rule.resource_tags, "ResourceTags", 50));
  STRATA_RETURN_IF_ERROR(
      ValidateResourceTags(rule.exclude_resource_tags, "ExcludeResourceTags", 5));
  if (!rule.resource_tags.empty() && !rule.exclude_resource_tags.empty()) {
    return Invalid(
        "a rule has either ResourceTags (a tag-level rule) or ExcludeResourceTags (a region-level "
        "rule), not both");
  }
  if (rule.unlock_delay_days != 0 && (rule.unlock_delay_days < 7 || rule.unlock_delay_days > 30)) {
    return Invalid(
        absl::StrCat("UnlockDelayValue must be 7 to 30 days, not ", rule.unlock_delay_days));
  }
  if (rule.unlock_delay_days != 0 && !rule.resource_tags.empty()) {
    return Invalid("only a region-level rule (no ResourceTags) can be locked");
  }
  if (rule.tags.size() > 200) return Invalid("a rule has at most 200 tags");
  return volume::ValidateTags(rule.tags);
}

std::string RecycleRules::NewId() {
  static constexpr char kAlphabet[] =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::random_device random;
  for (;;) {
    std::string id;
    for (int i = 0; i < 11; ++i) id.push_back(kAlphabet[random() % (sizeof(kAlphabet) - 1)]);
    absl::StatusOr<std::optional<std::string>> existing = catalog_.Get(meta::RecycleRuleKey(id));
    if (existing.ok() && !existing->has_value()) return id;
  }
}

absl::StatusOr<RecycleRule> RecycleRules::Load(const std::string& owner, const std::string& id) {
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> bytes, catalog_.Get(meta::RecycleRuleKey(id)));
  absl::StatusOr<RecycleRule> rule =
      bytes.has_value() ? Decode(*bytes) : absl::NotFoundError("no such rule");
  if (!rule.ok() && !absl::IsNotFound(rule.status())) return rule.status();
  if (!rule.ok() || rule->owner != owner) {
    return WithAwsErrorCode(absl::NotFoundError(absl::StrCat("the rule ", id, " does not exist")),
                            "ResourceNotFoundException");
  }
  return rule;
}

absl::Status RecycleRules::Save(const RecycleRule& rule) {
  meta::WriteBatch batch;
  batch.Put(meta::RecycleRuleKey(rule.id), Encode(rule));
  return catalog_.Write(batch);
}

absl::StatusOr<RecycleRule> RecycleRules::CreateRule(RecycleRule rule) {
  STRATA_RETURN_IF_ERROR(ValidateRule(rule));
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, shared_.Enter());
  absl::MutexLock lock(&mu_);
  rule.id = NewId();
  rule.locked = rule.unlock_delay_days != 0;
  rule.unlock_at_micros = 0;
  STRATA_RETURN_IF_ERROR(Save(rule));
  return rule;
}

absl::StatusOr<RecycleRule> RecycleRules::GetRule(const std::string& owner, const std::string& id) {
  absl::MutexLock lock(&mu_);
  return Load(owner, id);
}

absl::StatusOr<std::vector<RecycleRule>> RecycleRules::ListRules(const std::string& owner) {
  std::vector<RecycleRule> out;
  absl::Status decode_error;
  STRATA_RETURN_IF_ERROR(
      catalog_.Scan(meta::kRecycleRulePrefix, "", [&](absl::string_view, absl::string_view value) {
        absl::StatusOr<RecycleRule> rule = Decode(std::string(value));
        if (!rule.ok()) {
          decode_error = rule.status();
          return false;
        }
        if (rule->owner == owner) out.push_back(*std::move(rule));
        return true;
      }));
  STRATA_RETURN_IF_ERROR(decode_error);
  return out;
}

absl::StatusOr<RecycleRule> RecycleRules::UpdateRule(
    const std::string& owner, const std::string& id,
    const std::function<absl::Status(RecycleRule&)>& change, bool tags_only) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, shared_.Enter());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(RecycleRule rule, Load(owner, id));
  if (!tags_only && rule.FrozenAt(env_->NowMicros())) {
    return Conflict(absl::StrCat("the rule ", id, " is ", rule.LockStateAt(env_->NowMicros()),
                                 ": it cannot be changed until its unlock delay has passed"));
  }
  RecycleRule changed = rule;
  STRATA_RETURN_IF_ERROR(change(changed));
  // What no update may alter.
  changed.id = rule.id;
  changed.owner = rule.owner;
  changed.resource_type = rule.resource_type;
  changed.unlock_delay_days = rule.unlock_delay_days;
  changed.locked = rule.locked;
  changed.unlock_at_micros = rule.unlock_at_micros;
  if (tags_only) {
    const std::map<std::string, std::string> tags = changed.tags;
    changed = rule;
    changed.tags = tags;
  }
  if (!changed.resource_tags.empty() && rule.unlock_delay_days != 0) {
    return Invalid("a locked or once-locked rule stays region-level: it cannot take ResourceTags");
  }
  STRATA_RETURN_IF_ERROR(ValidateRule(changed));
  STRATA_RETURN_IF_ERROR(Save(changed));
  return changed;
}

absl::Status RecycleRules::DeleteRule(const std::string& owner, const std::string& id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, shared_.Enter());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(RecycleRule rule, Load(owner, id));
  if (rule.FrozenAt(env_->NowMicros())) {
    return Conflict(absl::StrCat("the rule ", id, " is ", rule.LockStateAt(env_->NowMicros()),
                                 ": it cannot be deleted until its unlock delay has passed"));
  }
  meta::WriteBatch batch;
  batch.Delete(meta::RecycleRuleKey(id));
  return catalog_.Write(batch);
}

absl::StatusOr<RecycleRule> RecycleRules::LockRule(const std::string& owner, const std::string& id,
                                                   uint32_t unlock_delay_days) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, shared_.Enter());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(RecycleRule rule, Load(owner, id));
  if (rule.FrozenAt(env_->NowMicros())) {
    return Conflict(
        absl::StrCat("the rule ", id, " is ", rule.LockStateAt(env_->NowMicros()), " already"));
  }
  if (unlock_delay_days == 0) return Invalid("UnlockDelayValue must be 7 to 30 days, not 0");
  rule.unlock_delay_days = unlock_delay_days;
  rule.locked = true;
  rule.unlock_at_micros = 0;
  STRATA_RETURN_IF_ERROR(ValidateRule(rule));
  STRATA_RETURN_IF_ERROR(Save(rule));
  return rule;
}

absl::StatusOr<RecycleRule> RecycleRules::UnlockRule(const std::string& owner,
                                                     const std::string& id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, shared_.Enter());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(RecycleRule rule, Load(owner, id));
  if (!rule.locked) {
    return Conflict(absl::StrCat(
        "the rule ", id, " is not locked (",
        rule.unlock_delay_days == 0 ? "never locked" : rule.LockStateAt(env_->NowMicros()), ")"));
  }
  rule.locked = false;
  rule.unlock_at_micros = env_->NowMicros() + rule.unlock_delay_days * day_micros_;
  STRATA_RETURN_IF_ERROR(Save(rule));
  return rule;
}

absl::StatusOr<uint64_t> RecycleRules::RetentionMicros(
    const std::string& owner, const std::string& resource_type,
    const std::map<std::string, std::string>& tags) {
  STRATA_ASSIGN_OR_RETURN(std::vector<RecycleRule> rules, ListRules(owner));
  uint64_t days = 0;
  for (const RecycleRule& rule : rules) {
    if (rule.resource_type == resource_type && rule.Covers(tags)) {
      days = std::max<uint64_t>(days, rule.retention_days);
    }
  }
  return days * day_micros_;
}

}  // namespace strata::region
