#include "query.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sigv4.h"

namespace strata::api {

absl::StatusOr<QueryParams> QueryParams::Parse(absl::string_view form) {
  QueryParams out;
  for (absl::string_view pair : absl::StrSplit(form, '&', absl::SkipEmpty())) {
    if (out.params_.size() >= kMaxQueryParams) {
      return absl::InvalidArgumentError(absl::StrCat("more than ", kMaxQueryParams, " parameters"));
    }
    std::vector<absl::string_view> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    std::string key, value;
    if (!UriDecode(kv[0], true, key) || (kv.size() > 1 && !UriDecode(kv[1], true, value))) {
      return absl::InvalidArgumentError("malformed percent-encoding in the request");
    }
    out.params_[key] = value;
  }
  return out;
}

std::optional<std::string> QueryParams::Get(const std::string& name) const {
  auto it = params_.find(name);
  if (it == params_.end()) return std::nullopt;
  return it->second;
}

std::string QueryParams::GetOr(const std::string& name, const std::string& fallback) const {
  return Get(name).value_or(fallback);
}

std::vector<std::string> QueryParams::List(const std::string& name) const {
  std::vector<std::string> out;
  for (size_t i = 1; i <= kMaxListItems; ++i) {
    std::optional<std::string> v = Get(absl::StrCat(name, ".", i));
    if (!v.has_value()) break;
    out.push_back(*v);
  }
  return out;
}

std::vector<std::string> QueryParams::StructList(const std::string& name) const {
  std::vector<std::string> out;
  for (size_t i = 1; i <= kMaxListItems; ++i) {
    const std::string prefix = absl::StrCat(name, ".", i, ".");
    auto it = params_.lower_bound(prefix);
    if (it == params_.end() || it->first.compare(0, prefix.size(), prefix) != 0) break;
    out.push_back(prefix);
  }
  return out;
}

absl::StatusOr<std::optional<int64_t>> QueryParams::GetInt(const std::string& name) const {
  std::optional<std::string> v = Get(name);
  if (!v.has_value()) return std::optional<int64_t>();
  int64_t n = 0;
  if (!absl::SimpleAtoi(*v, &n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter ", name, " must be an integer, not \"", *v, "\""));
  }
  return std::optional<int64_t>(n);
}

absl::StatusOr<std::optional<bool>> QueryParams::GetBool(const std::string& name) const {
  std::optional<std::string> v = Get(name);
  if (!v.has_value()) return std::optional<bool>();
  if (*v == "true") return std::optional<bool>(true);
  if (*v == "false") return std::optional<bool>(false);
  return absl::InvalidArgumentError(absl::StrCat("parameter ", name, " must be true or false"));
}

std::vector<Filter> ParseFilters(const QueryParams& params) {
  std::vector<Filter> filters;
  for (const std::string& prefix : params.StructList("Filter")) {
    Filter f;
    f.name = params.GetOr(prefix + "Name", "");
    f.values = params.List(prefix + "Value");
    filters.push_back(std::move(f));
  }
  return filters;
}

bool WildcardMatch(absl::string_view pattern, absl::string_view text) {
  // Iterative matcher with backtracking to the last '*': O(|pattern| * |text|) at worst.
  size_t p = 0, t = 0, star = absl::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != absl::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool MatchesAny(const std::vector<std::string>& patterns, absl::string_view value) {
  for (const std::string& p : patterns) {
    if (WildcardMatch(p, value)) return true;
  }
  return false;
}

}  // namespace strata::api
