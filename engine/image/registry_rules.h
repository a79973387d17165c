#pragma once
// The rules the image registry checks (EC2's, for AMI names, device names, block device
// mappings and volume settings) and the errors it answers with, shared by its source files:
// image_registry.cc (images and settings), image_instances.cc (instances),
// image_sources.cc (images made from instances, copies and bundles).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "strata/image.h"
#include "strata/store.h"

namespace strata::image {

inline constexpr uint64_t kGiB = 1ull << 30;
inline constexpr uint64_t kMaxVolumeGiB = 16384;
inline constexpr size_t kMaxMappings = 32;
// The wall clock, in microseconds since the epoch.
uint64_t NowMicros();
absl::Status BadMapping(const std::string& message);
absl::Status BadValue(const std::string& message);
absl::Status ImageNotFound(const std::string& id);
absl::Status InstanceNotFound(const std::string& id);
absl::Status WrongInstanceState(const InstanceInfo& i, const std::string& verb);
// EC2's AMI name rule: 3-128 characters of letters, digits, ()[] ./-'@_.
bool ValidImageName(const std::string& name);
// /dev/sdX, /dev/xvdX and the like, as EC2 accepts them.
bool ValidDeviceName(const std::string& name);
// ephemeralN.
bool ValidVirtualName(const std::string& name);
// Whether `account` owns snapshot `s` or has it shared with it.
bool CanUseSnapshot(const SnapshotInfo& s, const std::string& account);
// The snapshots an image's mappings name.
std::vector<std::string> SnapshotIds(const ImageInfo& image);
// The settings of one Ebs mapping: a known type, Iops where the type needs them, a size limit.
absl::Status ValidateEbs(const std::string& device, const EbsBlockDevice& ebs);

}  // namespace strata::image
