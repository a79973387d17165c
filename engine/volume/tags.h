#pragma once
// Tags of volumes, snapshots, images and instances: EC2's limits and edits.

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace strata::volume {

inline constexpr size_t kMaxTagCount = 50;

// kInvalidArgument unless there are at most kMaxTagCount tags, keys of 1 to 128 characters
// and values of at most 256.
absl::Status ValidateTags(const std::map<std::string, std::string>& tags);
// Sets the tags in `set`, then removes the keys in `remove`.
void ApplyTags(std::map<std::string, std::string>& tags,
               const std::map<std::string, std::string>& set,
               const std::vector<std::string>& remove);

}  // namespace strata::volume
