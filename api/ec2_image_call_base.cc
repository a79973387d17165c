#include "ec2_image_call_base.h"

#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace strata::api {

bool ImageCallBase::IsAccountId(const std::string& s) {
  static const std::regex kAccount("^[0-9]{12}$");
  return std::regex_match(s, kAccount);
}

std::string ImageCallBase::ProtectionName(const ImageInfo& image) {
  if (image.deregistration_protection) {
    return image.protection_cooldown ? "enabled-with-cooldown" : "enabled";
  }
  if (image.protected_until_micros > NowMicros()) {
    return absl::StrCat("disabled-until-", IsoTime(image.protected_until_micros));
  }
  return "disabled";
}

bool ImageCallBase::Deprecated(const ImageInfo& image) {
  return image.deprecation_micros != 0 && image.deprecation_micros <= NowMicros();
}

void ImageCallBase::WriteStateReason(XmlWriter& x, const std::string& reason) {
  if (reason.empty()) return;
  x.Open("stateReason");
  x.Text("code", reason.substr(0, reason.find(':')));
  x.Text("message", reason);
  x.Close();
}

void ImageCallBase::WriteMapping(XmlWriter& x, const BlockDeviceMapping& m) {
  x.Open("item");
  x.Text("deviceName", m.device_name);
  if (!m.virtual_name.empty()) x.Text("virtualName", m.virtual_name);
  if (m.no_device) x.Text("noDevice", "");
  if (m.ebs.has_value()) {
    const EbsBlockDevice& e = *m.ebs;
    x.Open("ebs");
    if (!e.snapshot_id.empty()) x.Text("snapshotId", e.snapshot_id);
    x.Number("volumeSize", e.volume_size_gib);
    x.Bool("deleteOnTermination", e.delete_on_termination);
    x.Text("volumeType", e.volume_type);
    if (e.iops != 0) x.Number("iops", e.iops);
    if (e.throughput != 0) x.Number("throughput", e.throughput);
    x.Bool("encrypted", e.encrypted);
    if (e.encrypted && !e.kms_key_id.empty()) x.Text("kmsKeyId", e.kms_key_id);
    x.Close();
  }
  x.Close();
}

// Launch permissions as DescribeImageAttribute lists them.
void ImageCallBase::WriteLaunchPermissions(XmlWriter& x, const ImageInfo& image) {
  x.Open("launchPermission");
  for (const std::string& who : image.launch_permissions) {
    x.Open("item");
    if (who == "all") {
      x.Text("group", "all");
    } else {
      x.Text("userId", who);
    }
    x.Close();
  }
  x.Close();
}

std::string ImageCallBase::ReservationId(const std::string& instance_id) {
  return absl::StrCat("r-", instance_id.substr(2));
}

absl::Status ImageCallBase::Malformed(const std::string& id) {
  return WithAwsErrorCode(absl::InvalidArgumentError(absl::StrCat("Invalid id: \"", id, "\"")),
                          "InvalidAMIID.Malformed");
}

absl::Status ImageCallBase::NotFound(const std::string& id) {
  return WithAwsErrorCode(
      absl::NotFoundError(absl::StrCat("The image id '[", id, "]' does not exist")),
      "InvalidAMIID.NotFound");
}

// An image the caller may see (owner, or with launch permission).
absl::StatusOr<ImageInfo> ImageCallBase::VisibleImage(const std::string& id) {
  if (!absl::StartsWith(id, "ami-")) return Malformed(id);
  absl::StatusOr<ImageInfo> image = images_.DescribeImage(id);
  if (!image.ok() || !image->launchable_by(account_.id)) return NotFound(id);
  return image;
}

// An image the caller owns (required to change it).
absl::StatusOr<ImageInfo> ImageCallBase::OwnedImage(const std::string& id) {
  if (id.empty())
    return WithAwsErrorCode(absl::InvalidArgumentError("ImageId is required"), "MissingParameter");
  absl::StatusOr<ImageInfo> image = VisibleImage(id);
  if (!image.ok()) return image.status();
  if (image->owner != account_.id) {
    return WithAwsErrorCode(absl::PermissionDeniedError(absl::StrCat(
                                "You do not own the image ", id, "; only its owner may change it")),
                            "AuthFailure");
  }
  return image;
}

absl::StatusOr<InstanceInfo> ImageCallBase::OwnedInstance(const std::string& id) {
  absl::StatusOr<InstanceInfo> i = images_.DescribeInstance(id);
  if (!i.ok() || i->owner != account_.id) {
    return WithAwsErrorCode(
        absl::NotFoundError(absl::StrCat("The instance ID '", id, "' does not exist")),
        absl::StartsWith(id, "i-") ? "InvalidInstanceID.NotFound" : "InvalidInstanceID.Malformed");
  }
  return i;
}

// The caller's instances named by InstanceId.N (every id checked before anything is done),
// or, when none is named and `ids_required` is false, all of the caller's instances.
absl::StatusOr<std::vector<InstanceInfo>> ImageCallBase::RequestedInstances(bool ids_required) {
  const std::vector<std::string> ids = p_.List("InstanceId");
  if (ids.empty() && ids_required) {
    return AwsError(absl::StatusCode::kInvalidArgument, "MissingParameter",
                    "the request must contain the parameter InstanceId");
  }
  std::vector<InstanceInfo> out;
  for (const std::string& id : ids) {
    absl::StatusOr<InstanceInfo> i = OwnedInstance(id);
    if (!i.ok()) return i.status();
    out.push_back(*std::move(i));
  }
  if (!ids.empty()) return out;
  absl::StatusOr<std::vector<InstanceInfo>> all = images_.ListInstances();
  if (!all.ok()) return all.status();
  for (InstanceInfo& i : *all) {
    if (i.owner == account_.id) out.push_back(std::move(i));
  }
  return out;
}

// BlockDeviceMapping.N.* of RegisterImage, RunInstances and CreateImage.
absl::StatusOr<std::vector<BlockDeviceMapping>> ImageCallBase::Mappings() {
  std::vector<BlockDeviceMapping> out;
  for (const std::string& m : p_.StructList("BlockDeviceMapping")) {
    BlockDeviceMapping mapping;
    mapping.device_name = p_.GetOr(m + "DeviceName", "");
    if (mapping.device_name.empty()) {
      return WithAwsErrorCode(absl::InvalidArgumentError(absl::StrCat(m, "DeviceName is required")),
                              "InvalidBlockDeviceMapping");
    }
    mapping.virtual_name = p_.GetOr(m + "VirtualName", "");
    mapping.no_device = p_.Get(m + "NoDevice").has_value();
    bool has_ebs = false;
    for (const auto& [k, v] : p_.all()) has_ebs |= absl::StartsWith(k, m + "Ebs.");
    if (has_ebs) {
      EbsBlockDevice e;
      const std::string ebs = m + "Ebs.";
      e.snapshot_id = p_.GetOr(ebs + "SnapshotId", "");
      for (auto [name, field] :
           {std::pair{"VolumeSize", &e.volume_size_gib}, std::pair{"Iops", &e.iops},
            std::pair{"Throughput", &e.throughput}}) {
        absl::StatusOr<std::optional<int64_t>> v = p_.GetInt(ebs + name);
        if (!v.ok()) return v.status();
        if (v->has_value()) {
          if (**v < 0) return absl::InvalidArgumentError(absl::StrCat(ebs, name, " is negative"));
          *field = static_cast<uint64_t>(**v);
        }
      }
      e.volume_type = p_.GetOr(ebs + "VolumeType", "gp3");
      absl::StatusOr<std::optional<bool>> dot = p_.GetBool(ebs + "DeleteOnTermination");
      if (!dot.ok()) return dot.status();
      e.delete_on_termination = dot->value_or(true);
      absl::StatusOr<std::optional<bool>> enc = p_.GetBool(ebs + "Encrypted");
      if (!enc.ok()) return enc.status();
      e.encrypted = enc->value_or(false);
      e.kms_key_id = p_.GetOr(ebs + "KmsKeyId", "");
      mapping.ebs = e;
    }
    out.push_back(std::move(mapping));
  }
  return out;
}

void ImageCallBase::WriteImage(const ImageInfo& image, const ImageSettings& settings) {
  x_.Open("item");
  x_.Text("imageId", image.id);
  x_.Text("imageLocation", absl::StrCat(image.owner, "/", image.name));
  x_.Text("imageState", ImageStateName(image.state));
  x_.Text("imageOwnerId", image.owner);
  x_.Text("creationDate", IsoTime(image.creation_micros));
  x_.Bool("isPublic", image.is_public());
  x_.Text("architecture", image.architecture);
  x_.Text("imageType", "machine");
  if (!image.kernel_id.empty()) x_.Text("kernelId", image.kernel_id);
  if (!image.ramdisk_id.empty()) x_.Text("ramdiskId", image.ramdisk_id);
  x_.Text("platformDetails", "Linux/UNIX");
  x_.Text("usageOperation", "RunInstances");
  x_.Text("name", image.name);
  x_.Text("description", image.description);
  x_.Text("rootDeviceType", "ebs");
  x_.Text("rootDeviceName", image.root_device_name);
  x_.Open("blockDeviceMapping");
  for (const BlockDeviceMapping& m : image.mappings) WriteMapping(x_, m);
  x_.Close();
  x_.Text("virtualizationType", image.virtualization_type);
  WriteTags(x_, image.owner == account_.id ? image.tags : std::map<std::string, std::string>{});
  x_.Text("hypervisor", "xen");
  x_.Bool("enaSupport", image.ena_support);
  if (!image.boot_mode.empty()) x_.Text("bootMode", image.boot_mode);
  if (!image.tpm_support.empty()) x_.Text("tpmSupport", image.tpm_support);
  if (!image.imds_support.empty()) x_.Text("imdsSupport", image.imds_support);
  if (image.deprecation_micros != 0) x_.Text("deprecationTime", IsoTime(image.deprecation_micros));
  if (!image.source_instance_id.empty()) x_.Text("sourceInstanceId", image.source_instance_id);
  if (!image.source_image_id.empty()) x_.Text("sourceImageId", image.source_image_id);
  if (!image.source_image_region.empty()) x_.Text("sourceImageRegion", image.source_image_region);
  x_.Text("deregistrationProtection", ProtectionName(image));
  if (image.last_launched_micros != 0)
    x_.Text("lastLaunchedTime", IsoTime(image.last_launched_micros));
  if (settings.allowed_images_state == "audit-mode") {
    x_.Bool("imageAllowed", ImageAllowed(settings, image, account_.id));
  }
  WriteStateReason(x_, image.state_reason);
  x_.Close();
}

Facets ImageCallBase::ImageFacets(const ImageInfo& image) {
  Facets f = {
      {"architecture", image.architecture},
      {"description", image.description},
      {"ena-support", image.ena_support ? "true" : "false"},
      {"image-id", image.id},
      {"image-type", "machine"},
      {"is-public", image.is_public() ? "true" : "false"},
      {"kernel-id", image.kernel_id},
      {"ramdisk-id", image.ramdisk_id},
      {"name", image.name},
      {"owner-id", image.owner},
      {"owner-alias", ""},
      {"platform", ""},
      {"root-device-name", image.root_device_name},
      {"root-device-type", "ebs"},
      {"state", ImageStateName(image.state)},
      {"state-reason-code", image.state_reason.substr(0, image.state_reason.find(':'))},
      {"state-reason-message", image.state_reason},
      {"virtualization-type", image.virtualization_type},
      {"hypervisor", "xen"},
      {"boot-mode", image.boot_mode},
      {"tpm-support", image.tpm_support},
      {"imds-support", image.imds_support},
      {"creation-date", IsoTime(image.creation_micros)},
      {"deprecation-time", image.deprecation_micros ? IsoTime(image.deprecation_micros) : ""},
      {"source-instance-id", image.source_instance_id},
      {"source-image-id", image.source_image_id},
      {"source-image-region", image.source_image_region},
      {"deregistration-protection", ProtectionName(image)}};
  for (const BlockDeviceMapping& m : image.mappings) {
    f.insert({"block-device-mapping.device-name", m.device_name});
    if (!m.ebs.has_value()) continue;
    f.insert({"block-device-mapping.snapshot-id", m.ebs->snapshot_id});
    f.insert({"block-device-mapping.volume-size", absl::StrCat(m.ebs->volume_size_gib)});
    f.insert({"block-device-mapping.volume-type", m.ebs->volume_type});
    f.insert({"block-device-mapping.delete-on-termination",
              m.ebs->delete_on_termination ? "true" : "false"});
    f.insert({"block-device-mapping.encrypted", m.ebs->encrypted ? "true" : "false"});
  }
  return f;
}

}  // namespace strata::api
