#include "volume/tags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace strata::volume {

std::optional<double> BurstBalanceOf(const std::string& value) {
  double percent = 0;
  if (!absl::SimpleAtod(value, &percent) || !(percent >= 0 && percent <= 100)) return std::nullopt;
  return percent;
}

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
  // Strata's own settings (docs/qos.md).
  if (auto qos = tags.find(kQosTag);
      qos != tags.end() && qos->second != "on" && qos->second != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("tag ", kQosTag, " must be on or off, not \"", qos->second, "\""));
  }
  if (auto burst = tags.find(kBurstBalanceTag);
      burst != tags.end() && !BurstBalanceOf(burst->second).has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("tag ", kBurstBalanceTag,
                                                   " must be a percentage from 0 to 100, not \"",
                                                   burst->second, "\""));
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
