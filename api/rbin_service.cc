#include "rbin_service.h"

#include <algorithm>
#include <variant>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ec2_common.h"
#include "nlohmann/json.hpp"
#include "sigv4.h"

namespace strata::api {
namespace {

using json = nlohmann::json;

struct RbinError {
  int status;
  std::string type;
  std::string message;
};
using RbinResult = std::variant<json, RbinError>;

RbinError Validation(const std::string& m) { return {400, "ValidationException", m}; }

RbinError FromStatus(const absl::Status& s) {
  const std::string m(s.message());
  switch (s.code()) {
    case absl::StatusCode::kNotFound:
      return {404, "ResourceNotFoundException", m};
    case absl::StatusCode::kInvalidArgument:
      return Validation(m);
    case absl::StatusCode::kFailedPrecondition:
      return {409, "ConflictException", m};
    default:
      return {500, "InternalServerException", m};
  }
}

std::string RuleArn(const Region& region, const RecycleRule& rule) {
  return absl::StrCat("arn:aws:rbin:", region.name(), ":", rule.owner, ":rule/", rule.id);
}

json TagPairs(const std::vector<std::pair<std::string, std::string>>& tags) {
  json out = json::array();
  for (const auto& [k, v] : tags) out.push_back({{"ResourceTagKey", k}, {"ResourceTagValue", v}});
  return out;
}

json TagList(const std::map<std::string, std::string>& tags) {
  json out = json::array();
  for (const auto& [k, v] : tags) out.push_back({{"Key", k}, {"Value", v}});
  return out;
}

// A rule as GetRule (and the calls that change one) answer.
json RuleJson(const Region& region, const RecycleRule& rule) {
  json j = {{"Identifier", rule.id},
            {"Description", rule.description},
            {"ResourceType", rule.resource_type},
            {"RetentionPeriod",
             {{"RetentionPeriodValue", rule.retention_days}, {"RetentionPeriodUnit", "DAYS"}}},
            {"ResourceTags", TagPairs(rule.resource_tags)},
            {"Status", "available"},
            {"RuleArn", RuleArn(region, rule)}};
  if (rule.resource_tags.empty()) {
    j["ExcludeResourceTags"] = TagPairs(rule.exclude_resource_tags);
  }
  const uint64_t now = NowMicros();
  const std::string state = rule.LockStateAt(now);
  if (!state.empty()) j["LockState"] = state;
  if (rule.unlock_delay_days != 0) {
    j["LockConfiguration"] = {
        {"UnlockDelay",
         {{"UnlockDelayValue", rule.unlock_delay_days}, {"UnlockDelayUnit", "DAYS"}}}};
  }
  if (state == "pending_unlock") j["LockEndTime"] = rule.unlock_at_micros / 1e6;
  return j;
}

class RbinCall {
 public:
  RbinCall(const HttpRequest& request, const Account& account, Region& region)
      : request_(request), account_(account), region_(region), bin_(region.recycle_bin()) {}

  RbinResult Run() {
    std::vector<std::string> parts = absl::StrSplit(request_.path, '/', absl::SkipEmpty());
    for (std::string& part : parts) {
      if (std::string decoded; UriDecode(part, /*plus_is_space=*/false, decoded)) part = decoded;
    }
    if (!request_.body.empty()) {
      body_ = json::parse(request_.body, nullptr, /*allow_exceptions=*/false);
      if (body_.is_discarded() || !body_.is_object()) {
        return Validation("the request body is not a JSON object");
      }
    } else {
      body_ = json::object();
    }
    const std::string& m = request_.method;
    try {
      if (parts.size() == 1 && parts[0] == "rules" && m == "POST") return CreateRule();
      if (parts.size() == 1 && parts[0] == "list-rules" && m == "POST") return ListRules();
      if (parts.size() == 2 && parts[0] == "rules") {
        if (m == "GET") return GetRule(parts[1]);
        if (m == "PATCH") return UpdateRule(parts[1]);
        if (m == "DELETE") return DeleteRule(parts[1]);
      }
      if (parts.size() == 3 && parts[0] == "rules" && m == "PATCH") {
        if (parts[2] == "lock") return LockRule(parts[1]);
        if (parts[2] == "unlock") return UnlockRule(parts[1]);
      }
      if (parts.size() == 2 && parts[0] == "tags") {
        if (m == "GET") return ListTags(parts[1]);
        if (m == "POST") return TagResource(parts[1]);
        if (m == "DELETE") return UntagResource(parts[1]);
      }
    } catch (const json::exception& e) {
      return Validation(absl::StrCat("a field of the request has the wrong type: ", e.what()));
    }
    return RbinError{404, "ResourceNotFoundException",
                     absl::StrCat("no Recycle Bin API at ", m, " ", request_.path)};
  }

  int status() const { return status_; }

 private:
  // RetentionPeriod {RetentionPeriodValue, RetentionPeriodUnit: DAYS}.
  static std::variant<uint32_t, RbinError> Retention(const json& j) {
    if (!j.is_object() || !j.contains("RetentionPeriodValue") ||
        j.value("RetentionPeriodUnit", "") != "DAYS") {
      return Validation("RetentionPeriod needs RetentionPeriodValue and RetentionPeriodUnit DAYS");
    }
    const int64_t days = j.at("RetentionPeriodValue").get<int64_t>();
    if (days < 1 || days > 3650) {
      return Validation(absl::StrCat("RetentionPeriodValue must be 1 to 3650, not ", days));
    }
    return static_cast<uint32_t>(days);
  }

  static std::variant<uint32_t, RbinError> UnlockDelay(const json& j) {
    const json delay = j.is_object() ? j.value("UnlockDelay", json()) : json();
    if (!delay.is_object() || !delay.contains("UnlockDelayValue") ||
        delay.value("UnlockDelayUnit", "") != "DAYS") {
      return Validation(
          "LockConfiguration needs UnlockDelay with UnlockDelayValue and UnlockDelayUnit DAYS");
    }
    const int64_t days = delay.at("UnlockDelayValue").get<int64_t>();
    if (days < 7 || days > 30) {
      return Validation(absl::StrCat("UnlockDelayValue must be 7 to 30, not ", days));
    }
    return static_cast<uint32_t>(days);
  }

  static std::vector<std::pair<std::string, std::string>> ResourceTags(const json& j) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const json& t : j) {
      out.emplace_back(t.at("ResourceTagKey").get<std::string>(), t.value("ResourceTagValue", ""));
    }
    return out;
  }

  static std::map<std::string, std::string> Tags(const json& j) {
    std::map<std::string, std::string> out;
    for (const json& t : j) out[t.at("Key").get<std::string>()] = t.value("Value", "");
    return out;
  }

  // The rule id an ARN of this region and account names; "" when it names none.
  std::string RuleIdOfArn(const std::string& arn) const {
    const std::string prefix =
        absl::StrCat("arn:aws:rbin:", region_.name(), ":", account_.id, ":rule/");
    return arn.rfind(prefix, 0) == 0 ? arn.substr(prefix.size()) : "";
  }

  RbinResult CreateRule() {
    RecycleRule rule;
    rule.owner = account_.id;
    rule.resource_type = body_.value("ResourceType", "");
    if (rule.resource_type.empty()) return Validation("ResourceType is required");
    if (!body_.contains("RetentionPeriod")) return Validation("RetentionPeriod is required");
    auto retention = Retention(body_.at("RetentionPeriod"));
    if (auto* e = std::get_if<RbinError>(&retention)) return *e;
    rule.retention_days = std::get<uint32_t>(retention);
    rule.description = body_.value("Description", "");
    rule.tags = Tags(body_.value("Tags", json::array()));
    rule.resource_tags = ResourceTags(body_.value("ResourceTags", json::array()));
    rule.exclude_resource_tags = ResourceTags(body_.value("ExcludeResourceTags", json::array()));
    if (body_.contains("LockConfiguration")) {
      auto delay = UnlockDelay(body_.at("LockConfiguration"));
      if (auto* e = std::get_if<RbinError>(&delay)) return *e;
      rule.unlock_delay_days = std::get<uint32_t>(delay);
    }
    absl::StatusOr<RecycleRule> made = bin_.CreateRule(rule);
    if (!made.ok()) return FromStatus(made.status());
    status_ = 201;
    json out = RuleJson(region_, *made);
    out["Tags"] = TagList(made->tags);
    return out;
  }

  RbinResult GetRule(const std::string& id) {
    absl::StatusOr<RecycleRule> rule = bin_.GetRule(account_.id, id);
    if (!rule.ok()) return FromStatus(rule.status());
    return RuleJson(region_, *rule);
  }

  RbinResult ListRules() {
    const std::string type = body_.value("ResourceType", "");
    if (type.empty()) return Validation("ResourceType is required");
    const auto want_tags = ResourceTags(body_.value("ResourceTags", json::array()));
    const auto want_excluded = ResourceTags(body_.value("ExcludeResourceTags", json::array()));
    const std::string want_lock = body_.value("LockState", "");
    int64_t max_results = body_.value("MaxResults", int64_t{1000});
    if (max_results < 1 || max_results > 1000) {
      return Validation(absl::StrCat("MaxResults must be 1 to 1000, not ", max_results));
    }
    size_t start = 0;
    if (const std::string token = body_.value("NextToken", ""); !token.empty()) {
      if (!absl::SimpleAtoi(token, &start)) return Validation("NextToken is not valid");
    }
    absl::StatusOr<std::vector<RecycleRule>> rules = bin_.ListRules(account_.id);
    if (!rules.ok()) return FromStatus(rules.status());
    const uint64_t now = NowMicros();
    std::vector<RecycleRule> out;
    for (const RecycleRule& r : *rules) {
      if (r.resource_type != type) continue;
      if (!want_lock.empty() && r.LockStateAt(now) != want_lock) continue;
      auto has_all = [](const auto& have, const auto& want) {
        return std::all_of(want.begin(), want.end(), [&](const auto& t) {
          return std::find(have.begin(), have.end(), t) != have.end();
        });
      };
      if (!has_all(r.resource_tags, want_tags)) continue;
      if (!has_all(r.exclude_resource_tags, want_excluded)) continue;
      out.push_back(r);
    }
    json list = json::array();
    const size_t end = std::min(out.size(), start + static_cast<size_t>(max_results));
    for (size_t i = start; i < end; ++i) {
      json summary = {
          {"Identifier", out[i].id},
          {"Description", out[i].description},
          {"RetentionPeriod",
           {{"RetentionPeriodValue", out[i].retention_days}, {"RetentionPeriodUnit", "DAYS"}}},
          {"RuleArn", RuleArn(region_, out[i])}};
      if (const std::string state = out[i].LockStateAt(now); !state.empty()) {
        summary["LockState"] = state;
      }
      list.push_back(std::move(summary));
    }
    json result = {{"Rules", list}};
    if (end < out.size()) result["NextToken"] = absl::StrCat(end);
    return result;
  }

  RbinResult UpdateRule(const std::string& id) {
    if (body_.contains("ResourceType")) {
      absl::StatusOr<RecycleRule> rule = bin_.GetRule(account_.id, id);
      if (!rule.ok()) return FromStatus(rule.status());
      if (body_.at("ResourceType").get<std::string>() != rule->resource_type) {
        return Validation("a rule's ResourceType cannot be changed");
      }
    }
    std::optional<uint32_t> retention;
    if (body_.contains("RetentionPeriod")) {
      auto r = Retention(body_.at("RetentionPeriod"));
      if (auto* e = std::get_if<RbinError>(&r)) return *e;
      retention = std::get<uint32_t>(r);
    }
    // Every field parsed before the engine is called: a malformed one changes nothing.
    std::optional<std::string> description;
    if (body_.contains("Description")) description = body_.at("Description").get<std::string>();
    std::optional<std::vector<std::pair<std::string, std::string>>> tags, excluded;
    if (body_.contains("ResourceTags")) tags = ResourceTags(body_.at("ResourceTags"));
    if (body_.contains("ExcludeResourceTags")) {
      excluded = ResourceTags(body_.at("ExcludeResourceTags"));
    }
    absl::StatusOr<RecycleRule> rule = bin_.UpdateRule(
        account_.id, id,
        [&](RecycleRule& r) {
          if (retention.has_value()) r.retention_days = *retention;
          if (description.has_value()) r.description = *description;
          if (tags.has_value()) r.resource_tags = *tags;
          if (excluded.has_value()) r.exclude_resource_tags = *excluded;
          return absl::OkStatus();
        },
        /*tags_only=*/false);
    if (!rule.ok()) return FromStatus(rule.status());
    return RuleJson(region_, *rule);
  }

  RbinResult DeleteRule(const std::string& id) {
    if (absl::Status s = bin_.DeleteRule(account_.id, id); !s.ok()) return FromStatus(s);
    status_ = 204;
    return json::object();
  }

  RbinResult LockRule(const std::string& id) {
    if (!body_.contains("LockConfiguration")) return Validation("LockConfiguration is required");
    auto delay = UnlockDelay(body_.at("LockConfiguration"));
    if (auto* e = std::get_if<RbinError>(&delay)) return *e;
    absl::StatusOr<RecycleRule> rule = bin_.LockRule(account_.id, id, std::get<uint32_t>(delay));
    if (!rule.ok()) return FromStatus(rule.status());
    return RuleJson(region_, *rule);
  }

  RbinResult UnlockRule(const std::string& id) {
    absl::StatusOr<RecycleRule> rule = bin_.UnlockRule(account_.id, id);
    if (!rule.ok()) return FromStatus(rule.status());
    return RuleJson(region_, *rule);
  }

  RbinResult ListTags(const std::string& arn) {
    const std::string id = RuleIdOfArn(arn);
    absl::StatusOr<RecycleRule> rule = bin_.GetRule(account_.id, id);
    if (id.empty() || !rule.ok()) return NoSuchArn(arn);
    return json{{"Tags", TagList(rule->tags)}};
  }

  RbinResult TagResource(const std::string& arn) {
    const std::string id = RuleIdOfArn(arn);
    if (id.empty()) return NoSuchArn(arn);
    const std::map<std::string, std::string> set = Tags(body_.value("Tags", json::array()));
    absl::StatusOr<RecycleRule> rule = bin_.UpdateRule(
        account_.id, id,
        [&](RecycleRule& r) {
          for (const auto& [k, v] : set) r.tags[k] = v;
          return absl::OkStatus();
        },
        /*tags_only=*/true);
    if (!rule.ok())
      return absl::IsNotFound(rule.status()) ? NoSuchArn(arn) : FromStatus(rule.status());
    status_ = 201;
    return json::object();
  }

  RbinResult UntagResource(const std::string& arn) {
    const std::string id = RuleIdOfArn(arn);
    if (id.empty()) return NoSuchArn(arn);
    std::vector<std::string> keys;
    for (absl::string_view pair : absl::StrSplit(request_.query, '&', absl::SkipEmpty())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
      std::string key;
      if (kv.first == "tagKeys" && UriDecode(kv.second, /*plus_is_space=*/true, key)) {
        keys.push_back(key);
      }
    }
    if (keys.empty()) return Validation("TagKeys is required");
    absl::StatusOr<RecycleRule> rule = bin_.UpdateRule(
        account_.id, id,
        [&](RecycleRule& r) {
          for (const std::string& k : keys) r.tags.erase(k);
          return absl::OkStatus();
        },
        /*tags_only=*/true);
    if (!rule.ok())
      return absl::IsNotFound(rule.status()) ? NoSuchArn(arn) : FromStatus(rule.status());
    status_ = 204;
    return json::object();
  }

  static RbinError NoSuchArn(const std::string& arn) {
    return {404, "ResourceNotFoundException", absl::StrCat("no rule has the ARN ", arn)};
  }

  const HttpRequest& request_;
  const Account& account_;
  Region& region_;
  RecycleBin& bin_;
  json body_;
  int status_ = 200;
};

}  // namespace

HttpResponse RbinService::Error(int status, const std::string& type, const std::string& message) {
  return HttpResponse{status,
                      {{"Content-Type", "application/json"}, {"x-amzn-ErrorType", type}},
                      json({{"message", message}, {"Message", message}}).dump()};
}

HttpResponse RbinService::Handle(const HttpRequest& request, const Account& account,
                                 Region& region) {
  RbinCall call(request, account, region);
  RbinResult result = call.Run();
  if (const RbinError* e = std::get_if<RbinError>(&result)) {
    return Error(e->status, e->type, e->message);
  }
  const int status = call.status();
  return HttpResponse{status,
                      {{"Content-Type", "application/json"}},
                      status == 204 ? "" : std::get<json>(result).dump()};
}

}  // namespace strata::api
