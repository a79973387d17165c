#include "image/registry_rules.h"

#include <chrono>
#include <regex>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "strata/aws_error.h"

namespace strata::image {

uint64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

absl::Status BadMapping(const std::string& message) {
  return AwsError(absl::StatusCode::kInvalidArgument, "InvalidBlockDeviceMapping", message);
}
absl::Status BadValue(const std::string& message) {
  return AwsError(absl::StatusCode::kInvalidArgument, "InvalidParameterValue", message);
}
absl::Status ImageNotFound(const std::string& id) {
  return AwsError(absl::StatusCode::kNotFound, "InvalidAMIID.NotFound",
                  absl::StrCat("The image id '[", id, "]' does not exist"));
}
absl::Status InstanceNotFound(const std::string& id) {
  return AwsError(absl::StatusCode::kNotFound, "InvalidInstanceID.NotFound",
                  absl::StrCat("The instance ID '", id, "' does not exist"));
}
absl::Status WrongInstanceState(const InstanceInfo& i, const std::string& verb) {
  return AwsError(absl::StatusCode::kFailedPrecondition, "IncorrectInstanceState",
                  absl::StrCat("The instance '", i.id, "' is not in a state from which it can be ",
                               verb, " (it is ", InstanceStateName(i.state), ")"));
}

// EC2's AMI name rule: 3-128 characters of letters, digits, ()[] ./-'@_.
bool ValidImageName(const std::string& name) {
  if (name.size() < 3 || name.size() > 128) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
           absl::StrContains("()[] ./-'@_", c);
  });
}

bool ValidDeviceName(const std::string& name) {
  static const std::regex kDevice(
      "^(/dev/)?(sd[a-z]|xvd[a-z]{1,2}|hd[a-z]|vd[a-z]|nvme[0-9]n1)[0-9]{0,2}$");
  return name.size() <= 32 && std::regex_match(name, kDevice);
}

bool ValidVirtualName(const std::string& name) {
  static const std::regex kEphemeral("^ephemeral([0-9]|1[0-9]|2[0-3])$");
  return std::regex_match(name, kEphemeral);
}

bool CanUseSnapshot(const SnapshotInfo& s, const std::string& account) {
  if (s.owner.empty() || s.owner == account) return true;
  return std::find(s.shared_with.begin(), s.shared_with.end(), account) != s.shared_with.end() ||
         std::find(s.shared_with.begin(), s.shared_with.end(), "all") != s.shared_with.end();
}

std::vector<std::string> SnapshotIds(const ImageInfo& image) {
  std::vector<std::string> ids;
  for (const BlockDeviceMapping& m : image.mappings) {
    if (m.ebs.has_value() && !m.ebs->snapshot_id.empty()) ids.push_back(m.ebs->snapshot_id);
  }
  return ids;
}

// The settings of one Ebs mapping: a known type, Iops where the type needs them, a size limit.
absl::Status ValidateEbs(const std::string& device, const EbsBlockDevice& ebs) {
  static const std::set<std::string> kTypes = {"gp2", "gp3", "io1",     "io2",
                                               "st1", "sc1", "standard"};
  if (!kTypes.contains(ebs.volume_type)) {
    return BadMapping(absl::StrCat("Invalid volume type '", ebs.volume_type, "' for ", device));
  }
  if ((ebs.volume_type == "io1" || ebs.volume_type == "io2") && ebs.iops == 0) {
    return BadMapping(absl::StrCat("Iops is required for ", ebs.volume_type, " volumes"));
  }
  if (ebs.volume_size_gib > kMaxVolumeGiB) {
    return BadMapping(absl::StrCat("Volume of size ", ebs.volume_size_gib, "GB for ", device,
                                   " is over ", kMaxVolumeGiB, "GB"));
  }
  return absl::OkStatus();
}

}  // namespace strata::image
