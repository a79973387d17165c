#pragma once
// EC2 Query protocol input: form-encoded parameters with numbered lists ("VolumeId.1"),
// structures ("Filter.1.Name") and nested lists ("Filter.1.Value.2").

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace strata::api {

// Bounds on what one request may carry.
inline constexpr size_t kMaxQueryParams = 4096;
inline constexpr size_t kMaxListItems = 1000;

class QueryParams {
 public:
  // Parses "a=1&b=x%20y" (body or query string). kInvalidArgument for malformed input or too
  // many parameters.
  static absl::StatusOr<QueryParams> Parse(absl::string_view form);

  std::optional<std::string> Get(const std::string& name) const;
  std::string GetOr(const std::string& name, const std::string& fallback) const;
  // "Name.1", "Name.2", ... in order until the first gap.
  std::vector<std::string> List(const std::string& name) const;
  // The numbered prefixes "Name.1", "Name.2", ... of a list of structures.
  std::vector<std::string> StructList(const std::string& name) const;
  // An integer parameter; kInvalidArgument naming it when malformed.
  absl::StatusOr<std::optional<int64_t>> GetInt(const std::string& name) const;
  // A boolean parameter ("true"/"false").
  absl::StatusOr<std::optional<bool>> GetBool(const std::string& name) const;
  const std::map<std::string, std::string>& all() const { return params_; }

 private:
  std::map<std::string, std::string> params_;
};

struct Filter {
  std::string name;
  std::vector<std::string> values;
};
// "Filter.N.Name" / "Filter.N.Value.M".
std::vector<Filter> ParseFilters(const QueryParams& params);
// AWS filter wildcards: '*' any run, '?' one character.
bool WildcardMatch(absl::string_view pattern, absl::string_view text);
// True when `value` matches any of `patterns`.
bool MatchesAny(const std::vector<std::string>& patterns, absl::string_view value);

}  // namespace strata::api
