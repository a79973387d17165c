// The EC2 calls about images themselves: register, describe, deregister, attributes, create from
// an instance, copy across regions, enable and disable.

#include <algorithm>
#include <functional>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "ec2_image_call_base.h"

namespace strata::api {
namespace {

class ImageCalls : public ImageCallBase {
 public:
  explicit ImageCalls(const Ec2CallContext& c) : ImageCallBase(c) {}

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
        {"CopyImage", &ImageCalls::CopyImage},
    };
    return Dispatch(*this, kActions, action);
  }

 private:
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
};

}  // namespace

std::optional<Result> RunImageFamilyCall(const Ec2CallContext& c, const std::string& action) {
  return ImageCalls(c).Run(action);
}

}  // namespace strata::api
