#pragma once
// What the EC2 image and instance calls share beyond Ec2CallBase: the region's images, the
// checks of who may see or change an image or instance, and the writers of images and block
// device mappings. Each image family of calls derives from ImageCallBase in a file of its own:
// ec2_image_calls.cc (images), ec2_image_settings_calls.cc (account settings, protection,
// deprecation), ec2_image_task_calls.cc (store and restore tasks), ec2_instance_calls.cc.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "ec2_call.h"
#include "ec2_common.h"

namespace strata::api {

inline constexpr uint64_t kDayMicros = 86400ull * 1000000;

class ImageCallBase : public Ec2CallBase {
 protected:
  explicit ImageCallBase(const Ec2CallContext& c) : Ec2CallBase(c), images_(c.region.images()) {}

  // Twelve digits, as an AWS account id is.
  static bool IsAccountId(const std::string& s);
  // DescribeImages' deregistrationProtection: enabled[-with-cooldown], disabled-until-TIME or
  // disabled.
  static std::string ProtectionName(const ImageInfo& image);
  // Whether the image's deprecation time has passed.
  static bool Deprecated(const ImageInfo& image);
  static void WriteStateReason(XmlWriter& x, const std::string& reason);
  static void WriteMapping(XmlWriter& x, const BlockDeviceMapping& m);
  // Launch permissions as DescribeImageAttribute lists them.
  static void WriteLaunchPermissions(XmlWriter& x, const ImageInfo& image);
  // The reservation of an instance: r- and the instance id's digits.
  static std::string ReservationId(const std::string& instance_id);

  // InvalidAMIID.Malformed and InvalidAMIID.NotFound, as EC2 words them.
  static absl::Status Malformed(const std::string& id);
  static absl::Status NotFound(const std::string& id);
  // An image the caller may see (owner, or with launch permission).
  absl::StatusOr<ImageInfo> VisibleImage(const std::string& id);
  // An image the caller owns (required to change it).
  absl::StatusOr<ImageInfo> OwnedImage(const std::string& id);
  // An instance the caller owns; InvalidInstanceID.NotFound (or .Malformed) for any other.
  absl::StatusOr<InstanceInfo> OwnedInstance(const std::string& id);
  // The caller's instances named by InstanceId.N (every id checked before anything is done),
  // or, when none is named and `ids_required` is false, all of the caller's instances.
  absl::StatusOr<std::vector<InstanceInfo>> RequestedInstances(bool ids_required);
  // <element><code/><name/></element> of an instance state.
  void WriteState(const char* element, InstanceState state) {
    x_.Open(element);
    x_.Number("code", InstanceStateCode(state));
    x_.Text("name", InstanceStateName(state));
    x_.Close();
  }
  // The EC2 error for `s`, naming images where the engine's status does not say what it is.
  Result Fail(const absl::Status& s) { return FromStatus(s, "AMIID"); }
  // <return>true</return>, the answer of most calls that change something.
  Result ReturnTrue() {
    x_.Bool("return", true);
    return x_.Finish();
  }
  // BlockDeviceMapping.N.* of RegisterImage, RunInstances and CreateImage.
  absl::StatusOr<std::vector<BlockDeviceMapping>> Mappings();
  // One <item> of DescribeImages, as the caller may see it (tags only for the owner).
  void WriteImage(const ImageInfo& image, const ImageSettings& settings);
  // What DescribeImages' filters match an image on.
  Facets ImageFacets(const ImageInfo& image);

  Images& images_;  // The region's.
};

}  // namespace strata::api
