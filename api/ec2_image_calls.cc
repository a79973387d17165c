#include "ec2_image_calls.h"

#include <algorithm>
#include <regex>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace strata::api {
namespace {

constexpr uint64_t kDayMicros = 86400ull * 1000000;
constexpr int64_t kMaxLaunchCount = 20;

bool IsAccountId(const std::string& s) {
  static const std::regex kAccount("^[0-9]{12}$");
  return std::regex_match(s, kAccount);
}

std::string ProtectionName(const ImageInfo& image) {
  if (image.deregistration_protection) {
    return image.protection_cooldown ? "enabled-with-cooldown" : "enabled";
  }
  if (image.protected_until_micros > NowMicros()) {
    return absl::StrCat("disabled-until-", IsoTime(image.protected_until_micros));
  }
  return "disabled";
}

bool Deprecated(const ImageInfo& image) {
  return image.deprecation_micros != 0 && image.deprecation_micros <= NowMicros();
}

void WriteStateReason(XmlWriter& x, const std::string& reason) {
  if (reason.empty()) return;
  x.Open("stateReason");
  x.Text("code", reason.substr(0, reason.find(':')));
  x.Text("message", reason);
  x.Close();
}

void WriteMapping(XmlWriter& x, const BlockDeviceMapping& m) {
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
void WriteLaunchPermissions(XmlWriter& x, const ImageInfo& image) {
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

std::string ReservationId(const std::string& instance_id) {
  return absl::StrCat("r-", instance_id.substr(2));
}

class ImageCalls {
 public:
  ImageCalls(Store& store, Region& region, const Account& account, const QueryParams& p,
             const Ec2Options& options, StoreImageTasks& tasks, XmlWriter& x)
      : store_(store),
        region_(region),
        images_(region.images()),
        account_(account),
        p_(p),
        options_(options),
        tasks_(tasks),
        x_(x) {}

  std::optional<Result> Run(const std::string& action) {
    static const std::map<std::string, Result (ImageCalls::*)()> kActions = {
        {"RegisterImage", &ImageCalls::RegisterImage},
        {"DescribeImages", &ImageCalls::DescribeImages},
        {"DeregisterImage", &ImageCalls::DeregisterImage},
        {"DescribeImageAttribute", &ImageCalls::DescribeImageAttribute},
        {"ModifyImageAttribute", &ImageCalls::ModifyImageAttribute},
        {"ResetImageAttribute", &ImageCalls::ResetImageAttribute},
        {"CreateImage", &ImageCalls::CreateImage},
        {"EnableImage", &ImageCalls::EnableImage},
        {"DisableImage", &ImageCalls::DisableImage},
        {"EnableImageBlockPublicAccess", &ImageCalls::EnableImageBlockPublicAccess},
        {"DisableImageBlockPublicAccess", &ImageCalls::DisableImageBlockPublicAccess},
        {"GetImageBlockPublicAccessState", &ImageCalls::GetImageBlockPublicAccessState},
        {"EnableAllowedImagesSettings", &ImageCalls::EnableAllowedImagesSettings},
        {"DisableAllowedImagesSettings", &ImageCalls::DisableAllowedImagesSettings},
        {"GetAllowedImagesSettings", &ImageCalls::GetAllowedImagesSettings},
        {"ReplaceImageCriteriaInAllowedImagesSettings",
         &ImageCalls::ReplaceImageCriteriaInAllowedImagesSettings},
        {"EnableImageDeregistrationProtection", &ImageCalls::EnableImageDeregistrationProtection},
        {"DisableImageDeregistrationProtection", &ImageCalls::DisableImageDeregistrationProtection},
        {"EnableImageDeprecation", &ImageCalls::EnableImageDeprecation},
        {"DisableImageDeprecation", &ImageCalls::DisableImageDeprecation},
        {"CreateStoreImageTask", &ImageCalls::CreateStoreImageTask},
        {"DescribeStoreImageTasks", &ImageCalls::DescribeStoreImageTasks},
        {"CreateRestoreImageTask", &ImageCalls::CreateRestoreImageTask},
        {"RunInstances", &ImageCalls::RunInstances},
        {"DescribeInstances", &ImageCalls::DescribeInstances},
        {"StopInstances", &ImageCalls::StopInstances},
        {"StartInstances", &ImageCalls::StartInstances},
        {"RebootInstances", &ImageCalls::RebootInstances},
        {"TerminateInstances", &ImageCalls::TerminateInstances},
        {"GetConsoleOutput", &ImageCalls::GetConsoleOutput},
        {"DescribeInstanceTypes", &ImageCalls::DescribeInstanceTypes},
        {"DescribeInstanceStatus", &ImageCalls::DescribeInstanceStatus},
        {"CopyImage", &ImageCalls::CopyImage},
    };
    auto it = kActions.find(action);
    if (it == kActions.end()) return std::nullopt;
    return (this->*(it->second))();
  }

 private:
  // ---- Helpers ----

  static absl::Status Malformed(const std::string& id) {
    return WithAwsErrorCode(absl::InvalidArgumentError(absl::StrCat("Invalid id: \"", id, "\"")),
                            "InvalidAMIID.Malformed");
  }
  static absl::Status NotFound(const std::string& id) {
    return WithAwsErrorCode(
        absl::NotFoundError(absl::StrCat("The image id '[", id, "]' does not exist")),
        "InvalidAMIID.NotFound");
  }

  // An image the caller may see (owner, or with launch permission).
  absl::StatusOr<ImageInfo> VisibleImage(const std::string& id) {
    if (!absl::StartsWith(id, "ami-")) return Malformed(id);
    absl::StatusOr<ImageInfo> image = images_.DescribeImage(id);
    if (!image.ok() || !image->launchable_by(account_.id)) return NotFound(id);
    return image;
  }
  // An image the caller owns (required to change it).
  absl::StatusOr<ImageInfo> OwnedImage(const std::string& id) {
    if (id.empty())
      return WithAwsErrorCode(absl::InvalidArgumentError("ImageId is required"),
                              "MissingParameter");
    absl::StatusOr<ImageInfo> image = VisibleImage(id);
    if (!image.ok()) return image.status();
    if (image->owner != account_.id) {
      return WithAwsErrorCode(
          absl::PermissionDeniedError(
              absl::StrCat("You do not own the image ", id, "; only its owner may change it")),
          "AuthFailure");
    }
    return image;
  }
  absl::StatusOr<InstanceInfo> OwnedInstance(const std::string& id) {
    absl::StatusOr<InstanceInfo> i = images_.DescribeInstance(id);
    if (!i.ok() || i->owner != account_.id) {
      return WithAwsErrorCode(
          absl::NotFoundError(absl::StrCat("The instance ID '", id, "' does not exist")),
          absl::StartsWith(id, "i-") ? "InvalidInstanceID.NotFound"
                                     : "InvalidInstanceID.Malformed");
    }
    return i;
  }

  // The caller's instances named by InstanceId.N (every id checked before anything is done),
  // or, when none is named and `ids_required` is false, all of the caller's instances.
  absl::StatusOr<std::vector<InstanceInfo>> RequestedInstances(bool ids_required) {
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

  void WriteState(const char* element, InstanceState state) {
    x_.Open(element);
    x_.Number("code", InstanceStateCode(state));
    x_.Text("name", InstanceStateName(state));
    x_.Close();
  }

  Result Fail(const absl::Status& s) { return FromStatus(s, "AMIID"); }
  Result ReturnTrue() {
    x_.Bool("return", true);
    return x_.Finish();
  }

  // BlockDeviceMapping.N.* of RegisterImage, RunInstances and CreateImage.
  absl::StatusOr<std::vector<BlockDeviceMapping>> Mappings() {
    std::vector<BlockDeviceMapping> out;
    for (const std::string& m : p_.StructList("BlockDeviceMapping")) {
      BlockDeviceMapping mapping;
      mapping.device_name = p_.GetOr(m + "DeviceName", "");
      if (mapping.device_name.empty()) {
        return WithAwsErrorCode(
            absl::InvalidArgumentError(absl::StrCat(m, "DeviceName is required")),
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

  void WriteImage(const ImageInfo& image, const ImageSettings& settings) {
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
    if (image.deprecation_micros != 0)
      x_.Text("deprecationTime", IsoTime(image.deprecation_micros));
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

  Facets ImageFacets(const ImageInfo& image) {
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

  // ---- Images ----

  Result RegisterImage() {
    ImageInfo image;
    image.name = p_.GetOr("Name", "");
    if (image.name.empty()) return Missing("Name");
    if (p_.Get("ImageLocation").has_value()) {
      return Invalid(
          "ImageLocation (instance-store images in S3) is not supported; register "
          "EBS-backed images with BlockDeviceMapping");
    }
    image.owner = account_.id;
    image.description = p_.GetOr("Description", "");
    image.architecture = p_.GetOr("Architecture", "x86_64");
    image.virtualization_type = p_.GetOr("VirtualizationType", "hvm");
    image.boot_mode = p_.GetOr("BootMode", "");
    image.root_device_name = p_.GetOr("RootDeviceName", "");
    if (image.root_device_name.empty()) return Missing("RootDeviceName");
    image.kernel_id = p_.GetOr("KernelId", "");
    image.ramdisk_id = p_.GetOr("RamdiskId", "");
    absl::StatusOr<std::optional<bool>> ena = p_.GetBool("EnaSupport");
    if (!ena.ok()) return Invalid(std::string(ena.status().message()));
    image.ena_support = ena->value_or(false);
    image.tpm_support = p_.GetOr("TpmSupport", "");
    image.imds_support = p_.GetOr("ImdsSupport", "");
    absl::StatusOr<std::map<std::string, std::string>> tags = TagSpecs(p_, "image");
    if (!tags.ok()) return Invalid(std::string(tags.status().message()));
    image.tags = *tags;
    absl::StatusOr<std::vector<BlockDeviceMapping>> mappings = Mappings();
    if (!mappings.ok()) return Fail(mappings.status());
    image.mappings = *mappings;
    absl::StatusOr<ImageInfo> registered = images_.RegisterImage(image);
    if (!registered.ok()) return Fail(registered.status());
    x_.Text("imageId", registered->id);
    return x_.Finish();
  }

  Result DescribeImages() {
    const std::vector<std::string> ids = p_.List("ImageId");
    const std::vector<std::string> owners = p_.List("Owner");
    const std::vector<std::string> executable_by = p_.List("ExecutableBy");
    absl::StatusOr<std::optional<bool>> include_deprecated = p_.GetBool("IncludeDeprecated");
    absl::StatusOr<std::optional<bool>> include_disabled = p_.GetBool("IncludeDisabled");
    if (!include_deprecated.ok())
      return Invalid(std::string(include_deprecated.status().message()));
    if (!include_disabled.ok()) return Invalid(std::string(include_disabled.status().message()));
    for (const std::string& o : owners) {
      if (o != "self" && o != "amazon" && o != "aws-marketplace" && o != "aws-backup-vault" &&
          !IsAccountId(o)) {
        return Invalid(absl::StrCat("Invalid owner '", o,
                                    "': use self, amazon, aws-marketplace or an account id"));
      }
    }
    for (const std::string& id : ids) {
      if (!absl::StartsWith(id, "ami-")) return Fail(Malformed(id));
    }
    absl::StatusOr<ImageSettings> settings = images_.GetSettings(account_.id);
    absl::StatusOr<std::vector<ImageInfo>> all = images_.ListImages();
    if (!settings.ok()) return Fail(settings.status());
    if (!all.ok()) return Fail(all.status());
    for (const std::string& id : ids) {
      auto it =
          std::find_if(all->begin(), all->end(), [&](const ImageInfo& i) { return i.id == id; });
      if (it == all->end() || !it->launchable_by(account_.id)) return Fail(NotFound(id));
    }
    const std::vector<Filter> filters = ParseFilters(p_);
    std::vector<const ImageInfo*> kept;
    for (const ImageInfo& image : *all) {
      if (!image.launchable_by(account_.id)) continue;
      if (!ids.empty() && std::find(ids.begin(), ids.end(), image.id) == ids.end()) continue;
      if (!owners.empty()) {
        bool match = false;
        for (const std::string& o : owners) {
          match |= (o == "self" && image.owner == account_.id) || o == image.owner;
        }
        if (!match) continue;
      }
      if (!executable_by.empty()) {
        bool match = false;
        for (const std::string& e : executable_by) {
          const bool listed =
              std::find(image.launch_permissions.begin(), image.launch_permissions.end(),
                        e == "self" ? account_.id : e) != image.launch_permissions.end();
          match |= (e == "all" && image.is_public()) ||
                   (e == "self" && (listed || image.owner == account_.id)) || listed;
        }
        if (!match) continue;
      }
      // Deprecated images are hidden from other accounts unless asked for (or named).
      if (Deprecated(image) && image.owner != account_.id && ids.empty() &&
          !include_deprecated->value_or(false))
        continue;
      if (image.state == ImageState::kDisabled && !include_disabled->value_or(false)) continue;
      if (settings->allowed_images_state == "enabled" &&
          !ImageAllowed(*settings, image, account_.id))
        continue;
      absl::StatusOr<bool> match = MatchesFilters(filters, ImageFacets(image), image.tags);
      if (!match.ok()) return Invalid(std::string(match.status().message()));
      if (*match) kept.push_back(&image);
    }
    absl::StatusOr<Page> page = Paginate(p_, kept.size(), 1, 1000);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("imagesSet");
    for (size_t i = page->begin; i < page->end; ++i) WriteImage(*kept[i], *settings);
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result DeregisterImage() {
    const std::string id = p_.GetOr("ImageId", "");
    absl::StatusOr<ImageInfo> image = OwnedImage(id);
    if (!image.ok()) return Fail(image.status());
    absl::StatusOr<std::optional<bool>> with = p_.GetBool("DeleteAssociatedSnapshots");
    if (!with.ok()) return Invalid(std::string(with.status().message()));
    absl::StatusOr<std::vector<std::string>> deleted =
        images_.DeregisterImage(id, with->value_or(false));
    if (!deleted.ok()) return Fail(deleted.status());
    x_.Bool("return", true);
    if (with->value_or(false)) {
      x_.Open("deleteSnapshotResultSet");
      for (const std::string& s : *deleted) {
        x_.Open("item");
        x_.Text("snapshotId", s);
        x_.Text("returnCode", "success");
        x_.Close();
      }
      x_.Close();
    }
    return x_.Finish();
  }

  Result DescribeImageAttribute() {
    const std::string attribute = p_.GetOr("Attribute", "");
    if (attribute.empty()) return Missing("Attribute");
    absl::StatusOr<ImageInfo> image = OwnedImage(p_.GetOr("ImageId", ""));
    if (!image.ok()) return Fail(image.status());
    x_.Text("imageId", image->id);
    auto value = [&](const std::string& element, const std::string& v) {
      x_.Open(element);
      if (!v.empty()) x_.Text("value", v);
      x_.Close();
    };
    if (attribute == "launchPermission") {
      WriteLaunchPermissions(x_, *image);
    } else if (attribute == "description") {
      value("description", image->description);
    } else if (attribute == "kernel") {
      value("kernel", image->kernel_id);
    } else if (attribute == "ramdisk") {
      value("ramdisk", image->ramdisk_id);
    } else if (attribute == "blockDeviceMapping") {
      x_.Open("blockDeviceMapping");
      for (const BlockDeviceMapping& m : image->mappings) WriteMapping(x_, m);
      x_.Close();
    } else if (attribute == "productCodes") {
      x_.Open("productCodes");
      x_.Close();
    } else if (attribute == "bootMode") {
      value("bootMode", image->boot_mode);
    } else if (attribute == "tpmSupport") {
      value("tpmSupport", image->tpm_support);
    } else if (attribute == "imdsSupport") {
      value("imdsSupport", image->imds_support);
    } else if (attribute == "sriovNetSupport") {
      value("sriovNetSupport", "");
    } else if (attribute == "lastLaunchedTime") {
      value("lastLaunchedTime",
            image->last_launched_micros ? IsoTime(image->last_launched_micros) : "");
    } else if (attribute == "deregistrationProtection") {
      value("deregistrationProtection", ProtectionName(*image));
    } else {
      return Invalid(absl::StrCat("Invalid attribute '", attribute, "'"));
    }
    return x_.Finish();
  }

  // Launch permission changes of ModifyImageAttribute: both request syntaxes.
  absl::StatusOr<std::pair<std::vector<std::string>, std::vector<std::string>>>
  PermissionChanges() {
    std::vector<std::string> add, remove;
    auto take = [&](const std::string& list, std::vector<std::string>& into) -> absl::Status {
      for (const std::string& item : p_.StructList(list)) {
        if (std::optional<std::string> group = p_.Get(item + "Group"); group.has_value()) {
          if (*group != "all") return absl::InvalidArgumentError("the only group is all");
          into.push_back("all");
        } else if (std::optional<std::string> user = p_.Get(item + "UserId"); user.has_value()) {
          into.push_back(*user);
        } else if (p_.Get(item + "OrganizationArn") || p_.Get(item + "OrganizationalUnitArn")) {
          return absl::InvalidArgumentError("organizations are not supported; name accounts");
        }
      }
      return absl::OkStatus();
    };
    if (absl::Status s = take("LaunchPermission.Add", add); !s.ok()) return s;
    if (absl::Status s = take("LaunchPermission.Remove", remove); !s.ok()) return s;
    const std::string op = p_.GetOr("OperationType", "");
    if (!op.empty()) {
      if (op != "add" && op != "remove") {
        return absl::InvalidArgumentError("OperationType must be add or remove");
      }
      std::vector<std::string>& into = op == "add" ? add : remove;
      for (const std::string& u : p_.List("UserId")) into.push_back(u);
      for (const std::string& g : p_.List("UserGroup")) {
        if (g != "all") return absl::InvalidArgumentError("the only group is all");
        into.push_back("all");
      }
    }
    for (const std::string& who : add) {
      if (who != "all" && !IsAccountId(who)) {
        return absl::InvalidArgumentError(absl::StrCat("Invalid account id '", who, "'"));
      }
    }
    return std::make_pair(add, remove);
  }

  Result ModifyImageAttribute() {
    const std::string id = p_.GetOr("ImageId", "");
    absl::StatusOr<ImageInfo> image = OwnedImage(id);
    if (!image.ok()) return Fail(image.status());
    const std::string attribute = p_.GetOr("Attribute", "");
    if (!attribute.empty() && attribute != "launchPermission" && attribute != "description") {
      return Invalid(absl::StrCat("Attribute '", attribute,
                                  "' cannot be modified: use launchPermission or description"));
    }
    absl::StatusOr<std::pair<std::vector<std::string>, std::vector<std::string>>> changes =
        PermissionChanges();
    if (!changes.ok()) return Invalid(std::string(changes.status().message()));
    std::optional<std::string> description = p_.Get("Description.Value");
    if (attribute == "description") description = p_.GetOr("Value", "");
    if (changes->first.empty() && changes->second.empty() && !description.has_value()) {
      return Missing("LaunchPermission or Description");
    }
    absl::StatusOr<ImageInfo> updated = images_.UpdateImage(id, [&](ImageInfo& i) {
      if (i.state == ImageState::kDisabled && !changes->first.empty()) {
        return WithAwsErrorCode(
            absl::FailedPreconditionError("a disabled image cannot be shared; enable it first"),
            "IncorrectState");
      }
      for (const std::string& who : changes->second) {
        i.launch_permissions.erase(
            std::remove(i.launch_permissions.begin(), i.launch_permissions.end(), who),
            i.launch_permissions.end());
      }
      for (const std::string& who : changes->first) {
        if (std::find(i.launch_permissions.begin(), i.launch_permissions.end(), who) ==
            i.launch_permissions.end())
          i.launch_permissions.push_back(who);
      }
      if (description.has_value()) i.description = *description;
      return absl::OkStatus();
    });
    if (!updated.ok()) return Fail(updated.status());
    return ReturnTrue();
  }

  Result ResetImageAttribute() {
    const std::string id = p_.GetOr("ImageId", "");
    absl::StatusOr<ImageInfo> image = OwnedImage(id);
    if (!image.ok()) return Fail(image.status());
    if (p_.GetOr("Attribute", "") != "launchPermission") {
      return Invalid("only the launchPermission attribute can be reset");
    }
    absl::StatusOr<ImageInfo> updated = images_.UpdateImage(id, [](ImageInfo& i) {
      i.launch_permissions.clear();
      return absl::OkStatus();
    });
    if (!updated.ok()) return Fail(updated.status());
    return ReturnTrue();
  }

  Result CreateImage() {
    const std::string instance_id = p_.GetOr("InstanceId", "");
    if (instance_id.empty()) return Missing("InstanceId");
    absl::StatusOr<InstanceInfo> instance = OwnedInstance(instance_id);
    if (!instance.ok()) return Fail(instance.status());
    ImageInfo request;
    request.name = p_.GetOr("Name", "");
    if (request.name.empty()) return Missing("Name");
    request.description = p_.GetOr("Description", "");
    request.owner = account_.id;
    absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> tags =
        TagSpecsByType(p_, {"image", "snapshot"});
    if (!tags.ok()) return Invalid(std::string(tags.status().message()));
    request.tags = (*tags)["image"];
    absl::StatusOr<ImageInfo> image = images_.CreateImage(instance_id, request);
    if (!image.ok()) return Fail(image.status());
    for (const BlockDeviceMapping& m : image->mappings) {
      if (m.ebs.has_value() && !(*tags)["snapshot"].empty()) {
        (void)region_.TagSnapshot(m.ebs->snapshot_id, (*tags)["snapshot"], {});
      }
    }
    x_.Text("imageId", image->id);
    return x_.Finish();
  }

  Result CopyImage() {
    const std::string source = p_.GetOr("SourceImageId", "");
    if (source.empty()) return Missing("SourceImageId");
    const std::string source_region = p_.GetOr("SourceRegion", "");
    if (source_region.empty()) return Missing("SourceRegion");
    if (auto bad = CheckSourceRegion(store_, source_region)) return *bad;
    ImageInfo request;
    request.name = p_.GetOr("Name", "");
    if (request.name.empty()) return Missing("Name");
    request.description = p_.GetOr("Description", "");
    request.owner = account_.id;
    absl::StatusOr<std::map<std::string, std::string>> tags = TagSpecs(p_, "image");
    if (!tags.ok()) return Invalid(std::string(tags.status().message()));
    request.tags = *tags;
    absl::StatusOr<std::optional<bool>> encrypted = p_.GetBool("Encrypted");
    absl::StatusOr<std::optional<bool>> copy_tags = p_.GetBool("CopyImageTags");
    if (!encrypted.ok()) return Invalid(std::string(encrypted.status().message()));
    if (!copy_tags.ok()) return Invalid(std::string(copy_tags.status().message()));
    const std::string key = p_.GetOr("KmsKeyId", "");
    if (!key.empty() && !encrypted->value_or(false)) {
      return Invalid("KmsKeyId requires Encrypted=true");
    }
    if (!absl::StartsWith(source, "ami-")) return Fail(Malformed(source));
    absl::StatusOr<ImageInfo> image =
        source_region == region_.name()
            ? images_.CopyImage(source, request, encrypted->value_or(false), key,
                                copy_tags->value_or(false))
            : store_.CopyImageAcrossRegions(region_.name(),
                                            {.source_region = source_region,
                                             .source_image_id = source,
                                             .request = request,
                                             .encrypted = encrypted->value_or(false),
                                             .kms_key_id = key,
                                             .copy_tags = copy_tags->value_or(false)});
    if (!image.ok()) return Fail(image.status());
    x_.Text("imageId", image->id);
    return x_.Finish();
  }

  Result SetImageState(bool enable) {
    const std::string id = p_.GetOr("ImageId", "");
    absl::StatusOr<ImageInfo> image = OwnedImage(id);
    if (!image.ok()) return Fail(image.status());
    absl::StatusOr<ImageInfo> updated = images_.UpdateImage(id, [&](ImageInfo& i) {
      if (enable) {
        if (i.state == ImageState::kDisabled) i.state = ImageState::kAvailable;
        return absl::OkStatus();
      }
      if (i.state != ImageState::kAvailable) {
        return WithAwsErrorCode(absl::FailedPreconditionError(absl::StrCat(
                                    "the image is ", ImageStateName(i.state), ", not available")),
                                "IncorrectState");
      }
      i.state = ImageState::kDisabled;
      i.launch_permissions.clear();  // A disabled image is private, as on AWS.
      return absl::OkStatus();
    });
    if (!updated.ok()) return Fail(updated.status());
    return ReturnTrue();
  }
  Result EnableImage() { return SetImageState(true); }
  Result DisableImage() { return SetImageState(false); }

  // ---- Account settings ----

  Result ChangeSettings(const std::function<absl::Status(ImageSettings&)>& change,
                        const std::function<void(const ImageSettings&)>& write) {
    absl::StatusOr<ImageSettings> settings = images_.GetSettings(account_.id);
    if (!settings.ok()) return Fail(settings.status());
    if (absl::Status s = change(*settings); !s.ok()) return Fail(s);
    if (absl::Status s = images_.SetSettings(account_.id, *settings); !s.ok()) return Fail(s);
    write(*settings);
    return x_.Finish();
  }
  static const char* BpaState(const ImageSettings& s) {
    return s.block_public_access ? "block-new-sharing" : "unblocked";
  }

  Result EnableImageBlockPublicAccess() {
    const std::string state = p_.GetOr("ImageBlockPublicAccessState", "");
    if (state != "block-new-sharing") {
      return Invalid("ImageBlockPublicAccessState must be block-new-sharing");
    }
    return ChangeSettings(
        [](ImageSettings& s) {
          s.block_public_access = true;
          return absl::OkStatus();
        },
        [&](const ImageSettings& s) { x_.Text("imageBlockPublicAccessState", BpaState(s)); });
  }
  Result DisableImageBlockPublicAccess() {
    return ChangeSettings(
        [](ImageSettings& s) {
          s.block_public_access = false;
          return absl::OkStatus();
        },
        [&](const ImageSettings& s) { x_.Text("imageBlockPublicAccessState", BpaState(s)); });
  }
  Result GetImageBlockPublicAccessState() {
    absl::StatusOr<ImageSettings> settings = images_.GetSettings(account_.id);
    if (!settings.ok()) return Fail(settings.status());
    x_.Text("imageBlockPublicAccessState", BpaState(*settings));
    x_.Text("managedBy", "account");
    return x_.Finish();
  }

  Result EnableAllowedImagesSettings() {
    const std::string state = p_.GetOr("AllowedImagesSettingsState", "");
    if (state != "enabled" && state != "audit-mode") {
      return Invalid("AllowedImagesSettingsState must be enabled or audit-mode");
    }
    return ChangeSettings(
        [&](ImageSettings& s) {
          s.allowed_images_state = state;
          return absl::OkStatus();
        },
        [&](const ImageSettings& s) {
          x_.Text("allowedImagesSettingsState", s.allowed_images_state);
        });
  }
  Result DisableAllowedImagesSettings() {
    return ChangeSettings(
        [](ImageSettings& s) {
          s.allowed_images_state = "disabled";
          return absl::OkStatus();
        },
        [&](const ImageSettings& s) {
          x_.Text("allowedImagesSettingsState", s.allowed_images_state);
        });
  }
  Result GetAllowedImagesSettings() {
    absl::StatusOr<ImageSettings> settings = images_.GetSettings(account_.id);
    if (!settings.ok()) return Fail(settings.status());
    x_.Text("state", settings->allowed_images_state);
    x_.Open("imageCriterionSet");
    for (const std::vector<std::string>& criterion : settings->image_criteria) {
      x_.Open("item");
      x_.Open("imageProviderSet");
      for (const std::string& p : criterion) x_.Text("item", p);
      x_.Close();
      x_.Close();
    }
    x_.Close();
    x_.Text("managedBy", "account");
    return x_.Finish();
  }
  Result ReplaceImageCriteriaInAllowedImagesSettings() {
    std::vector<std::vector<std::string>> criteria;
    for (const std::string& c : p_.StructList("ImageCriterion")) {
      criteria.push_back(p_.List(c + "ImageProvider"));
    }
    return ChangeSettings(
        [&](ImageSettings& s) {
          s.image_criteria = criteria;
          return absl::OkStatus();
        },
        [&](const ImageSettings&) { x_.Bool("return", true); });
  }

  // ---- Protection and deprecation ----

  Result UpdateOwned(const std::function<absl::Status(ImageInfo&)>& change,
                     const std::function<void(const ImageInfo&)>& write) {
    const std::string id = p_.GetOr("ImageId", "");
    absl::StatusOr<ImageInfo> image = OwnedImage(id);
    if (!image.ok()) return Fail(image.status());
    absl::StatusOr<ImageInfo> updated = images_.UpdateImage(id, change);
    if (!updated.ok()) return Fail(updated.status());
    write(*updated);
    return x_.Finish();
  }

  Result EnableImageDeregistrationProtection() {
    absl::StatusOr<std::optional<bool>> cooldown = p_.GetBool("WithCooldown");
    if (!cooldown.ok()) return Invalid(std::string(cooldown.status().message()));
    return UpdateOwned(
        [&](ImageInfo& i) {
          i.deregistration_protection = true;
          i.protection_cooldown = cooldown->value_or(false);
          return absl::OkStatus();
        },
        [&](const ImageInfo& i) { x_.Text("return", ProtectionName(i)); });
  }
  Result DisableImageDeregistrationProtection() {
    return UpdateOwned(
        [&](ImageInfo& i) {
          // With the cooldown, the image stays protected for 24 hours after this.
          if (i.deregistration_protection && i.protection_cooldown) {
            i.protected_until_micros = NowMicros() + kDayMicros;
          }
          i.deregistration_protection = false;
          i.protection_cooldown = false;
          return absl::OkStatus();
        },
        [&](const ImageInfo& i) { x_.Text("return", ProtectionName(i)); });
  }
  Result EnableImageDeprecation() {
    const std::string at = p_.GetOr("DeprecateAt", "");
    if (at.empty()) return Missing("DeprecateAt");
    absl::StatusOr<uint64_t> micros = ParseIsoTime(at);
    if (!micros.ok()) return Invalid(std::string(micros.status().message()));
    if (*micros > NowMicros() + 10 * 365 * kDayMicros) {
      return Invalid("DeprecateAt is at most 10 years from now");
    }
    // Rounded down to the minute, as AWS does.
    const uint64_t when = *micros / 60000000 * 60000000;
    return UpdateOwned(
        [&](ImageInfo& i) {
          i.deprecation_micros = when;
          return absl::OkStatus();
        },
        [&](const ImageInfo&) { x_.Bool("return", true); });
  }
  Result DisableImageDeprecation() {
    return UpdateOwned(
        [](ImageInfo& i) {
          i.deprecation_micros = 0;
          return absl::OkStatus();
        },
        [&](const ImageInfo&) { x_.Bool("return", true); });
  }

  // ---- Store and restore ----

  absl::StatusOr<std::string> BucketDir() {
    if (options_.bucket_dir.empty()) {
      return WithAwsErrorCode(absl::FailedPreconditionError(
                                  "stratad has no --bucket-dir: store and restore tasks are off"),
                              "InvalidParameterValue");
    }
    const std::string bucket = p_.GetOr("Bucket", "");
    static const std::regex kBucket("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$");
    if (!std::regex_match(bucket, kBucket) || absl::StrContains(bucket, "..")) {
      return WithAwsErrorCode(
          absl::InvalidArgumentError(absl::StrCat("Invalid bucket name '", bucket, "'")),
          "InvalidParameterValue");
    }
    return absl::StrCat(options_.bucket_dir, "/", bucket);
  }

  Result CreateStoreImageTask() {
    const std::string id = p_.GetOr("ImageId", "");
    absl::StatusOr<ImageInfo> image = OwnedImage(id);
    if (!image.ok()) return Fail(image.status());
    absl::StatusOr<std::string> dir = BucketDir();
    if (!dir.ok()) return Fail(dir.status());
    const std::string key = absl::StrCat(id, ".bin");
    if (absl::Status s = tasks_.Start(region_, id, *dir, p_.GetOr("Bucket", ""), key, account_.id);
        !s.ok())
      return Fail(s);
    x_.Text("objectKey", key);
    return x_.Finish();
  }

  Result DescribeStoreImageTasks() {
    const std::vector<std::string> ids = p_.List("ImageId");
    const std::vector<Filter> filters = ParseFilters(p_);
    std::vector<StoreImageTasks::View> kept;
    for (const StoreImageTasks::View& t : tasks_.List()) {
      if (t.owner != account_.id) continue;
      if (!ids.empty() && std::find(ids.begin(), ids.end(), t.image_id) == ids.end()) continue;
      absl::StatusOr<bool> match =
          MatchesFilters(filters, {{"task-state", t.state}, {"bucket", t.bucket}}, {});
      if (!match.ok()) return Invalid(std::string(match.status().message()));
      if (*match) kept.push_back(t);
    }
    absl::StatusOr<Page> page = Paginate(p_, kept.size(), 1, 200);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("storeImageTaskResultSet");
    for (size_t i = page->begin; i < page->end; ++i) {
      const StoreImageTasks::View& t = kept[i];
      x_.Open("item");
      x_.Text("amiId", t.image_id);
      x_.Text("taskStartTime", IsoTime(t.start_micros));
      x_.Text("bucket", t.bucket);
      x_.Text("s3objectKey", t.object_key);
      x_.Number("progressPercentage", t.progress);
      x_.Text("storeTaskState", t.state);
      if (!t.failure.empty()) x_.Text("storeTaskFailureReason", t.failure);
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result CreateRestoreImageTask() {
    absl::StatusOr<std::string> dir = BucketDir();
    if (!dir.ok()) return Fail(dir.status());
    const std::string key = p_.GetOr("ObjectKey", "");
    if (key.empty()) return Missing("ObjectKey");
    absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> tags =
        TagSpecsByType(p_, {"image", "snapshot"});
    if (!tags.ok()) return Invalid(std::string(tags.status().message()));
    absl::StatusOr<ImageInfo> image =
        images_.RestoreImage(*dir, key, p_.GetOr("Name", ""), account_.id, (*tags)["image"]);
    if (!image.ok()) return Fail(image.status());
    for (const BlockDeviceMapping& m : image->mappings) {
      if (m.ebs.has_value() && !(*tags)["snapshot"].empty())
        (void)region_.TagSnapshot(m.ebs->snapshot_id, (*tags)["snapshot"], {});
    }
    x_.Text("imageId", image->id);
    return x_.Finish();
  }

  // ---- Instances ----

  void WriteInstance(const InstanceInfo& i) {
    x_.Open("item");
    x_.Text("instanceId", i.id);
    x_.Text("imageId", i.image_id);
    WriteState("instanceState", i.state);
    x_.Text("privateDnsName", "");
    x_.Text("dnsName", "");
    x_.Text("reason", i.state_reason);
    x_.Number("amiLaunchIndex", 0);
    x_.Text("instanceType", i.instance_type);
    x_.Text("launchTime", IsoTime(i.launch_micros));
    x_.Open("placement");
    x_.Text("availabilityZone", region_.name() + "a");
    x_.Text("tenancy", "default");
    x_.Close();
    x_.Open("monitoring");
    x_.Text("state", "disabled");
    x_.Close();
    WriteStateReason(x_, i.state_reason);
    x_.Text("architecture", i.architecture);
    x_.Text("rootDeviceType", "ebs");
    x_.Text("rootDeviceName", i.root_device_name);
    x_.Open("blockDeviceMapping");
    if (i.state != InstanceState::kTerminated) {
      for (const InstanceVolume& v : i.volumes) {
        x_.Open("item");
        x_.Text("deviceName", v.device_name);
        x_.Open("ebs");
        x_.Text("volumeId", v.volume_id);
        x_.Text("status", "attached");
        x_.Text("attachTime", IsoTime(i.launch_micros));
        x_.Bool("deleteOnTermination", v.delete_on_termination);
        if (!options_.nbd_uri_template.empty()) {
          x_.Text("strataNbdUri",
                  absl::StrReplaceAll(options_.nbd_uri_template, {{"{export}", v.volume_id}}));
        }
        x_.Close();
        x_.Close();
      }
    }
    x_.Close();
    x_.Text("virtualizationType", "hvm");
    x_.Text("hypervisor", i.hypervisor.empty() ? "none" : "kvm");
    WriteTags(x_, i.tags);
    x_.Close();
  }

  Result RunInstances() {
    const std::string image_id = p_.GetOr("ImageId", "");
    if (image_id.empty()) return Missing("ImageId");
    if (!absl::StartsWith(image_id, "ami-")) return Fail(Malformed(image_id));
    absl::StatusOr<std::optional<int64_t>> min = p_.GetInt("MinCount");
    absl::StatusOr<std::optional<int64_t>> max = p_.GetInt("MaxCount");
    if (!min.ok()) return Invalid(std::string(min.status().message()));
    if (!max.ok()) return Invalid(std::string(max.status().message()));
    const int64_t min_count = min->value_or(1), max_count = max->value_or(min_count);
    if (min_count < 1 || max_count < min_count) {
      return Invalid("MinCount must be at least 1 and at most MaxCount");
    }
    if (min_count > kMaxLaunchCount) {
      return Ec2Error{400, "InstanceLimitExceeded",
                      absl::StrCat("at most ", kMaxLaunchCount, " instances per call")};
    }
    LaunchRequest request;
    request.image_id = image_id;
    request.owner = account_.id;
    request.instance_type = p_.GetOr("InstanceType", "t3.micro");
    absl::StatusOr<std::vector<BlockDeviceMapping>> mappings = Mappings();
    if (!mappings.ok()) return Fail(mappings.status());
    request.mappings = *mappings;
    absl::StatusOr<std::map<std::string, std::map<std::string, std::string>>> tags =
        TagSpecsByType(p_, {"instance", "volume"});
    if (!tags.ok()) return Invalid(std::string(tags.status().message()));
    request.tags = (*tags)["instance"];
    request.volume_tags = (*tags)["volume"];
    const std::string user_data = p_.GetOr("UserData", "");
    if (!user_data.empty() && !absl::Base64Unescape(user_data, &request.user_data)) {
      return Invalid("UserData must be base64");
    }
    // Images the caller may not see are "not found", as on AWS.
    if (absl::StatusOr<ImageInfo> image = images_.DescribeImage(image_id); !image.ok()) {
      return Fail(image.status());
    }
    std::vector<InstanceInfo> launched;
    for (int64_t n = 0; n < std::min(max_count, kMaxLaunchCount); ++n) {
      absl::StatusOr<InstanceInfo> instance = images_.RunInstance(request);
      if (!instance.ok()) {
        if (static_cast<int64_t>(launched.size()) >= min_count) break;
        for (const InstanceInfo& i : launched) (void)images_.TerminateInstance(i.id);
        return Fail(instance.status());
      }
      launched.push_back(*instance);
    }
    x_.Text("reservationId", ReservationId(launched.front().id));
    x_.Text("ownerId", account_.id);
    x_.Open("groupSet");
    x_.Close();
    x_.Open("instancesSet");
    for (const InstanceInfo& i : launched) WriteInstance(i);
    x_.Close();
    return x_.Finish();
  }

  Result DescribeInstances() {
    absl::StatusOr<std::vector<InstanceInfo>> all = RequestedInstances(false);
    if (!all.ok()) return Fail(all.status());
    const std::vector<Filter> filters = ParseFilters(p_);
    std::vector<const InstanceInfo*> kept;
    for (const InstanceInfo& i : *all) {
      Facets f = {{"instance-id", i.id},
                  {"image-id", i.image_id},
                  {"instance-type", i.instance_type},
                  {"instance-state-name", InstanceStateName(i.state)},
                  {"instance-state-code", absl::StrCat(InstanceStateCode(i.state))},
                  {"architecture", i.architecture},
                  {"root-device-name", i.root_device_name},
                  {"root-device-type", "ebs"},
                  {"owner-id", i.owner},
                  {"reservation-id", ReservationId(i.id)},
                  {"availability-zone", region_.name() + "a"}};
      for (const InstanceVolume& v : i.volumes) {
        f.insert({"block-device-mapping.volume-id", v.volume_id});
        f.insert({"block-device-mapping.device-name", v.device_name});
      }
      absl::StatusOr<bool> match = MatchesFilters(filters, f, i.tags);
      if (!match.ok()) return Invalid(std::string(match.status().message()));
      if (*match) kept.push_back(&i);
    }
    absl::StatusOr<Page> page = Paginate(p_, kept.size(), 5, 1000);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("reservationSet");
    for (size_t n = page->begin; n < page->end; ++n) {
      x_.Open("item");
      x_.Text("reservationId", ReservationId(kept[n]->id));
      x_.Text("ownerId", kept[n]->owner);
      x_.Open("groupSet");
      x_.Close();
      x_.Open("instancesSet");
      WriteInstance(*kept[n]);
      x_.Close();
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  // Stop/Start/Terminate: every id is checked before any changes.
  Result ChangeInstances(
      const std::function<absl::StatusOr<InstanceInfo>(const std::string&)>& op) {
    absl::StatusOr<std::vector<InstanceInfo>> before = RequestedInstances(true);
    if (!before.ok()) return Fail(before.status());
    x_.Open("instancesSet");
    for (const InstanceInfo& b : *before) {
      absl::StatusOr<InstanceInfo> after = op(b.id);
      if (!after.ok()) return Fail(after.status());
      x_.Open("item");
      x_.Text("instanceId", b.id);
      WriteState("currentState", after->state);
      WriteState("previousState", b.state);
      x_.Close();
    }
    x_.Close();
    return x_.Finish();
  }
  Result StopInstances() {
    absl::StatusOr<std::optional<bool>> force = p_.GetBool("Force");
    if (!force.ok()) return Invalid(std::string(force.status().message()));
    return ChangeInstances(
        [&](const std::string& id) { return images_.StopInstance(id, force->value_or(false)); });
  }
  Result StartInstances() {
    return ChangeInstances([&](const std::string& id) { return images_.StartInstance(id); });
  }
  Result TerminateInstances() {
    return ChangeInstances([&](const std::string& id) { return images_.TerminateInstance(id); });
  }
  Result RebootInstances() {
    absl::StatusOr<std::vector<InstanceInfo>> instances = RequestedInstances(true);
    if (!instances.ok()) return Fail(instances.status());
    for (const InstanceInfo& i : *instances) {
      if (absl::Status s = images_.RebootInstance(i.id); !s.ok()) return Fail(s);
    }
    return ReturnTrue();
  }

  Result GetConsoleOutput() {
    const std::string id = p_.GetOr("InstanceId", "");
    if (id.empty()) return Missing("InstanceId");
    absl::StatusOr<InstanceInfo> instance = OwnedInstance(id);
    if (!instance.ok()) return Fail(instance.status());
    absl::StatusOr<std::string> output = images_.ConsoleOutput(id);
    if (!output.ok()) return Fail(output.status());
    // EC2 returns the last 64 KiB.
    const std::string tail =
        output->size() > 65536 ? output->substr(output->size() - 65536) : *output;
    x_.Text("instanceId", id);
    x_.Text("timestamp", IsoTime(NowMicros()));
    x_.Text("output", absl::Base64Escape(tail));
    return x_.Finish();
  }

  // The status checks of an instance: "ok" while its VM runs (Strata does not probe the guest).
  static const char* CheckStatus(const InstanceInfo& i) {
    return i.state == InstanceState::kRunning ? "ok" : "not-applicable";
  }

  Result DescribeInstanceStatus() {
    absl::StatusOr<std::optional<bool>> all_states = p_.GetBool("IncludeAllInstances");
    if (!all_states.ok()) return Invalid(std::string(all_states.status().message()));
    absl::StatusOr<std::vector<InstanceInfo>> all = RequestedInstances(false);
    if (!all.ok()) return Fail(all.status());
    const std::vector<Filter> filters = ParseFilters(p_);
    std::vector<const InstanceInfo*> kept;
    for (const InstanceInfo& i : *all) {
      if (i.state != InstanceState::kRunning && !all_states->value_or(false)) continue;
      const std::string status = CheckStatus(i);
      absl::StatusOr<bool> match =
          MatchesFilters(filters,
                         {{"instance-state-name", InstanceStateName(i.state)},
                          {"instance-state-code", absl::StrCat(InstanceStateCode(i.state))},
                          {"instance-status.status", status},
                          {"system-status.status", status},
                          {"availability-zone", region_.name() + "a"}},
                         {});
      if (!match.ok()) return Invalid(std::string(match.status().message()));
      if (*match) kept.push_back(&i);
    }
    absl::StatusOr<Page> page = Paginate(p_, kept.size(), 5, 1000);
    if (!page.ok()) return Invalid(std::string(page.status().message()));
    x_.Open("instanceStatusSet");
    for (size_t n = page->begin; n < page->end; ++n) {
      const InstanceInfo& i = *kept[n];
      const std::string status = CheckStatus(i);
      x_.Open("item");
      x_.Text("instanceId", i.id);
      x_.Text("availabilityZone", region_.name() + "a");
      WriteState("instanceState", i.state);
      for (const char* kind : {"systemStatus", "instanceStatus"}) {
        x_.Open(kind);
        x_.Text("status", status);
        x_.Open("details");  // Strata does not probe the guest: no reachability check.
        x_.Close();
        x_.Close();
      }
      x_.Close();
    }
    x_.Close();
    if (!page->next_token.empty()) x_.Text("nextToken", page->next_token);
    return x_.Finish();
  }

  Result DescribeInstanceTypes() {
    const std::vector<std::string> names = p_.List("InstanceType");
    x_.Open("instanceTypeSet");
    for (const InstanceType& t : InstanceTypes()) {
      if (!names.empty() && std::find(names.begin(), names.end(), t.name) == names.end()) continue;
      x_.Open("item");
      x_.Text("instanceType", t.name);
      x_.Open("vCpuInfo");
      x_.Number("defaultVCpus", t.vcpus);
      x_.Close();
      x_.Open("memoryInfo");
      x_.Number("sizeInMiB", t.memory_mib);
      x_.Close();
      x_.Text("hypervisor", "kvm");
      x_.Close();
    }
    x_.Close();
    return x_.Finish();
  }

  Store& store_;  // For copies from other regions.
  Region& region_;
  Images& images_;
  const Account& account_;
  const QueryParams& p_;
  const Ec2Options& options_;
  StoreImageTasks& tasks_;
  XmlWriter& x_;
};

}  // namespace

StoreImageTasks::~StoreImageTasks() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    threads.swap(threads_);
  }
  for (std::thread& t : threads) t.join();
}

absl::Status StoreImageTasks::Start(Region& region, const std::string& image_id,
                                    const std::string& dir, const std::string& bucket,
                                    const std::string& object_key, const std::string& owner) {
  auto task = std::make_shared<Task>();
  task->image_id = image_id;
  task->bucket = bucket;
  task->object_key = object_key;
  task->owner = owner;
  task->start_micros = NowMicros();
  absl::MutexLock lock(&mu_);
  for (const std::shared_ptr<Task>& t : tasks_) {
    if (t->image_id == image_id && t->state == "InProgress") {
      return WithAwsErrorCode(absl::FailedPreconditionError(absl::StrCat(
                                  "a store task for ", image_id, " is already in progress")),
                              "IncorrectState");
    }
  }
  tasks_.push_back(task);
  threads_.emplace_back([this, &region, task, dir] {
    absl::Status s = region.images().StoreImage(task->image_id, dir, task->object_key, task->owner,
                                                [task](int percent) { task->progress = percent; });
    absl::MutexLock lock(&mu_);
    task->state = s.ok() ? "Completed" : "Failed";
    if (!s.ok()) task->failure = std::string(s.message());
  });
  return absl::OkStatus();
}

std::vector<StoreImageTasks::View> StoreImageTasks::List() {
  absl::MutexLock lock(&mu_);
  std::vector<View> out;
  for (const std::shared_ptr<Task>& t : tasks_) {
    out.push_back({t->image_id, t->bucket, t->object_key, t->owner, t->state, t->failure,
                   t->start_micros, t->progress.load()});
  }
  return out;
}

std::optional<Result> RunImageCall(Store& store, Region& region, const Account& account,
                                   const QueryParams& p, const std::string& action,
                                   const Ec2Options& options, StoreImageTasks& tasks,
                                   XmlWriter& x) {
  return ImageCalls(store, region, account, p, options, tasks, x).Run(action);
}

}  // namespace strata::api
