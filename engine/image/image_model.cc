// The small pure parts of strata/image.h: state names, instance types, the allowed-images rule.

#include <algorithm>

#include "strata/image.h"

namespace strata {

const char* ImageStateName(ImageState state) {
  switch (state) {
    case ImageState::kPending:
      return "pending";
    case ImageState::kAvailable:
      return "available";
    case ImageState::kFailed:
      return "failed";
    case ImageState::kDeregistered:
      return "deregistered";
    case ImageState::kDisabled:
      return "disabled";
  }
  return "failed";
}

bool ImageInfo::is_public() const {
  return std::find(launch_permissions.begin(), launch_permissions.end(), "all") !=
         launch_permissions.end();
}

bool ImageInfo::launchable_by(const std::string& account) const {
  return owner == account || is_public() ||
         std::find(launch_permissions.begin(), launch_permissions.end(), account) !=
             launch_permissions.end();
}

bool ImageAllowed(const ImageSettings& settings, const ImageInfo& image,
                  const std::string& account) {
  if (image.owner == account) return true;
  for (const std::vector<std::string>& providers : settings.image_criteria) {
    // "amazon", "aws-marketplace" and "aws-backup-vault" name providers a local store has no
    // images of; "none" allows only the account's own images (handled above).
    if (std::find(providers.begin(), providers.end(), image.owner) != providers.end()) return true;
  }
  return false;
}

const char* InstanceStateName(InstanceState state) {
  switch (state) {
    case InstanceState::kPending:
      return "pending";
    case InstanceState::kRunning:
      return "running";
    case InstanceState::kStopping:
      return "stopping";
    case InstanceState::kStopped:
      return "stopped";
    case InstanceState::kShuttingDown:
      return "shutting-down";
    case InstanceState::kTerminated:
      return "terminated";
  }
  return "terminated";
}

int InstanceStateCode(InstanceState state) {
  switch (state) {
    case InstanceState::kPending:
      return 0;
    case InstanceState::kRunning:
      return 16;
    case InstanceState::kShuttingDown:
      return 32;
    case InstanceState::kTerminated:
      return 48;
    case InstanceState::kStopping:
      return 64;
    case InstanceState::kStopped:
      return 80;
  }
  return 48;
}

std::vector<InstanceType> InstanceTypes() {
  return {{"t3.nano", 2, 512},    {"t3.micro", 2, 1024}, {"t3.small", 2, 2048},
          {"t3.medium", 2, 4096}, {"m5.large", 2, 8192}, {"m5.xlarge", 4, 16384},
          {"c5.large", 2, 4096}};
}

std::optional<InstanceType> FindInstanceType(const std::string& name) {
  for (const InstanceType& t : InstanceTypes()) {
    if (t.name == name) return t;
  }
  return std::nullopt;
}

}  // namespace strata
