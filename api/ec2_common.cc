#include "ec2_common.h"

#include <algorithm>
#include <atomic>
#include <ctime>
#include <map>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace strata::api {

std::string RequestId() {
  // Request ids must be unique, not secret: a process-wide counter from a random start, mixed
  // (splitmix64). Opening std::random_device per request cost a third of a request's CPU.
  static std::atomic<uint64_t> next{(static_cast<uint64_t>(std::random_device{}()) << 32) |
                                    std::random_device{}()};
  auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  const uint64_t n = next.fetch_add(1, std::memory_order_relaxed);
  const uint64_t a = mix(n);
  const uint64_t b = mix(n ^ 0x9e3779b97f4a7c15ULL);
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", a >> 32, a & 0xFFFF,
                         (a >> 16 & 0x0FFF) | 0x4000, (b >> 48 & 0x3FFF) | 0x8000,
                         b & 0xFFFFFFFFFFFF);
}

std::string IsoTime(uint64_t micros) {
  const time_t secs = static_cast<time_t>(micros / 1000000);
  tm utc{};
  gmtime_r(&secs, &utc);
  char buf[32];
  strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &utc);
  return absl::StrFormat("%s.%03dZ", buf, static_cast<int>(micros / 1000 % 1000));
}

uint64_t GiBCeil(uint64_t bytes) { return (bytes + kGiB - 1) / kGiB; }

uint64_t NowMicros() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

// Maps an engine status to EC2's error for a call about `kind` ("Volume", "Snapshot").
Ec2Error FromStatus(const absl::Status& s, const std::string& kind) {
  const std::string message(s.message());
  // KMS refusals (codes "...Exception") keep their meaning as EC2 reports them for encrypted
  // volumes; any other code an engine status carries is EC2's own and is used as it is.
  const std::string code = AwsErrorCode(s);
  static const std::map<std::string, std::pair<int, std::string>> kKmsAsEc2 = {
      {"DisabledException", {400, "KMSKeyDisabled"}},
      {"KMSInvalidStateException", {400, "KMSInvalidStateException"}},
      {"AccessDeniedException", {400, "KMSAccessDeniedException"}},
      {"NotFoundException", {400, "KMSKeyNotFound"}},
      {"KMSInternalException", {500, "KMSInternalException"}}};
  if (auto it = kKmsAsEc2.find(code); it != kKmsAsEc2.end()) {
    return {it->second.first, it->second.second, message};
  }
  if (!code.empty() && !absl::EndsWith(code, "Exception")) {
    return {s.code() == absl::StatusCode::kPermissionDenied && code == "UnauthorizedOperation"
                ? 403
                : 400,
            code, message};
  }
  switch (s.code()) {
    case absl::StatusCode::kNotFound:
      return {400, absl::StrCat("Invalid", kind, ".NotFound"), message};
    case absl::StatusCode::kInvalidArgument:
      return {400, "InvalidParameterValue", message};
    case absl::StatusCode::kAlreadyExists:
      return {400, absl::StrCat("Invalid", kind, ".Duplicate"), message};
    case absl::StatusCode::kFailedPrecondition:
      return {400, "IncorrectState", message};
    case absl::StatusCode::kPermissionDenied:
      return {403, "UnauthorizedOperation", message};
    case absl::StatusCode::kResourceExhausted:
      return {503, "InsufficientVolumeCapacity", message};
    case absl::StatusCode::kUnavailable:  // The Ceph cluster did not answer: SDKs retry 503s.
      return {503, "ServiceUnavailable", message};
    default:
      return {500, "InternalError", message};
  }
}

Ec2Error Invalid(const std::string& message) { return {400, "InvalidParameterValue", message}; }
Ec2Error Missing(const std::string& name) {
  return {400, "MissingParameter", absl::StrCat("the request must contain the parameter ", name)};
}

// Owner of a resource; resources from before accounts belong to the first (admin) account.
bool Owns(const Account& account, const std::string& owner, Store& store) {
  if (!owner.empty()) return owner == account.id;
  std::vector<Account> all = store.ListAccounts();
  return !all.empty() && all.front().id == account.id;
}

// TagSpecification.N.ResourceType / .Tag.M.Key / .Tag.M.Value for `resource_type`.
absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> TagSpecsByType(
    const QueryParams& p, const std::vector<std::string>& resource_types) {
  std::map<std::string, std::map<std::string, std::string>> by_type;
  for (const std::string& spec : p.StructList("TagSpecification")) {
    const std::string type = p.GetOr(spec + "ResourceType", "");
    if (std::find(resource_types.begin(), resource_types.end(), type) == resource_types.end()) {
      std::string valid;
      for (const std::string& t : resource_types)
        absl::StrAppend(&valid, valid.empty() ? "" : " or ", t);
      return absl::InvalidArgumentError(absl::StrCat("tag specification resource type \"", type,
                                                     "\" is not valid here; use ", valid));
    }
    for (const std::string& tag : p.StructList(spec + "Tag")) {
      by_type[type][p.GetOr(tag + "Key", "")] = p.GetOr(tag + "Value", "");
    }
  }
  return by_type;
}

absl::StatusOr<std::map<std::string, std::string>> TagSpecs(const QueryParams& p,
                                                            const std::string& resource_type) {
  absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> by_type =
      TagSpecsByType(p, {resource_type});
  if (!by_type.ok()) return by_type.status();
  return (*by_type)[resource_type];
}

void WriteTags(XmlWriter& x, const std::map<std::string, std::string>& tags) {
  x.Open("tagSet");
  for (const auto& [k, v] : tags) {
    x.Open("item");
    x.Text("key", k);
    x.Text("value", v);
    x.Close();
  }
  x.Close();
}

absl::StatusOr<Page> Paginate(const QueryParams& p, size_t count, int64_t min_max,
                              int64_t max_max) {
  absl::StatusOr<std::optional<int64_t>> max = p.GetInt("MaxResults");
  if (!max.ok()) return max.status();
  Page page;
  const std::string token = p.GetOr("NextToken", "");
  if (!token.empty() && (!absl::SimpleAtoi(token, &page.begin) || page.begin > count)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid NextToken \"", token, "\""));
  }
  size_t limit = count;
  if (max->has_value()) {
    if (**max < min_max) {
      return absl::InvalidArgumentError(absl::StrCat("MaxResults must be at least ", min_max));
    }
    // As AWS: a larger value returns at most `max_max` items per page.
    limit = static_cast<size_t>(std::min(**max, max_max));
  }
  page.end = std::min(count, page.begin + limit);
  if (page.end < count) page.next_token = absl::StrCat(page.end);
  return page;
}

// True when the resource matches every filter; kInvalidArgument names an unknown filter.
absl::StatusOr<bool> MatchesFilters(const std::vector<Filter>& filters, const Facets& facets,
                                    const std::map<std::string, std::string>& tags) {
  for (const Filter& f : filters) {
    bool match = false;
    if (f.name == "tag-key" || f.name == "tag-value") {
      for (const auto& [k, v] : tags) match |= MatchesAny(f.values, f.name == "tag-key" ? k : v);
    } else if (absl::StartsWith(f.name, "tag:")) {
      auto it = tags.find(f.name.substr(4));
      match = it != tags.end() && MatchesAny(f.values, it->second);
    } else if (facets.contains(f.name)) {
      auto [first, last] = facets.equal_range(f.name);
      for (auto it = first; it != last && !match; ++it) match = MatchesAny(f.values, it->second);
    } else {
      return absl::InvalidArgumentError(absl::StrCat("The filter '", f.name, "' is invalid"));
    }
    if (!match) return false;
  }
  return true;
}

absl::StatusOr<uint64_t> ParseIsoTime(const std::string& text) {
  tm t{};
  const char* rest = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &t);
  if (rest == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid time \"", text, "\": use YYYY-MM-DDTHH:MM:SSZ"));
  }
  uint64_t micros = 0;
  if (*rest == '.') {
    uint64_t scale = 100000;
    for (++rest; *rest >= '0' && *rest <= '9'; ++rest, scale /= 10) micros += (*rest - '0') * scale;
  }
  if (std::string(rest) != "Z" && !std::string(rest).empty()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid time \"", text, "\": end it in Z"));
  }
  const time_t secs = timegm(&t);
  if (secs < 0) return absl::InvalidArgumentError(absl::StrCat("invalid time \"", text, "\""));
  return static_cast<uint64_t>(secs) * 1000000 + micros;
}

std::optional<Ec2Error> CheckSourceRegion(Store& store, const std::string& region) {
  std::vector<std::string> known = store.ListRegions();
  const std::vector<std::string> peers = store.ListPeerRegions();
  known.insert(known.end(), peers.begin(), peers.end());
  if (std::find(known.begin(), known.end(), region) != known.end()) return std::nullopt;
  return Invalid(absl::StrCat("SourceRegion ", region,
                              " is neither a region served here nor a peer region (",
                              absl::StrJoin(known, ", "), ")"));
}

}  // namespace strata::api
