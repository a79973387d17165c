#pragma once
// Tags of volumes, snapshots, images and instances: EC2's limits and edits.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace strata::volume {

inline constexpr size_t kMaxTagCount = 50;

// Strata's own settings carried as tags (docs/qos.md): "off" runs the volume at full speed; a
// percentage sets what is left of its burst bucket when set or when the volume opens.
inline constexpr char kQosTag[] = "strata:qos";
inline constexpr char kBurstBalanceTag[] = "strata:burst-balance";

// The percentage a strata:burst-balance value names, or nullopt when it is not one (0-100).
std::optional<double> BurstBalanceOf(const std::string& value);

// kInvalidArgument unless there are at most kMaxTagCount tags, keys of 1 to 128 characters
// and values of at most 256, and Strata's own tags have values they accept.
absl::Status ValidateTags(const std::map<std::string, std::string>& tags);
// Sets the tags in `set`, then removes the keys in `remove`.
void ApplyTags(std::map<std::string, std::string>& tags,
               const std::map<std::string, std::string>& set,
               const std::vector<std::string>& remove);

}  // namespace strata::volume
