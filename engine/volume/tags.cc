#include "volume/tags.h"

#include "absl/strings/str_cat.h"

namespace strata::volume {

absl::Status ValidateTags(const std::map<std::string, std::string>& tags) {
  if (tags.size() > kMaxTagCount) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", kMaxTagCount, " tags"));
  }
  for (const auto& [k, v] : tags) {
    if (k.empty() || k.size() > 128 || v.size() > 256) {
      return absl::InvalidArgumentError(
          "a tag key must be 1 to 128 characters and a value at most 256");
    }
  }
  return absl::OkStatus();
}

void ApplyTags(std::map<std::string, std::string>& tags,
               const std::map<std::string, std::string>& set,
               const std::vector<std::string>& remove) {
  for (const auto& [k, v] : set) tags[k] = v;
  for (const std::string& k : remove) tags.erase(k);
}

}  // namespace strata::volume
