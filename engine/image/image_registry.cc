// The image registry: opening and recovery, and images (register, describe, update,
// deregister) with their account settings. Instances are in image_instances.cc; images made
// from instances, copies and bundles in image_sources.cc.

#include "image/image_registry.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <regex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "image/bundle.h"
#include "image/image_records.h"
#include "image/registry_rules.h"
#include "meta/schema.h"
#include "util/log.h"
#include "util/status_macros.h"
#include "volume/tags.h"

namespace strata::image {

ImageRegistry::ImageRegistry(region::RegionImpl& region, Hypervisor* hypervisor)
    : region_(region), catalog_(*region.catalog()), hypervisor_(hypervisor) {}

absl::StatusOr<std::unique_ptr<ImageRegistry>> ImageRegistry::Open(region::RegionImpl& region,
                                                                   Hypervisor* hypervisor) {
  std::unique_ptr<ImageRegistry> registry(new ImageRegistry(region, hypervisor));
  STRATA_RETURN_IF_ERROR(registry->RecoverInstances());
  region.set_recycle_bin_sweeper(
      [r = registry.get()](uint64_t now) { return r->SweepRecycledImages(now); });
  return registry;
}

ImageRegistry::~ImageRegistry() {
  region_.set_recycle_bin_sweeper(nullptr);  // Waits for a sweep that runs.
  if (hypervisor_ == nullptr) return;
  absl::StatusOr<std::vector<InstanceInfo>> instances = ListInstances();
  if (!instances.ok()) return;
  for (const InstanceInfo& i : *instances) {
    if (i.state == InstanceState::kPending || i.state == InstanceState::kRunning ||
        i.state == InstanceState::kStopping) {
      (void)StopVm(i.id, /*force=*/true);
    }
  }
}

absl::Status ImageRegistry::RecoverInstances() {
  std::vector<InstanceInfo> instances;
  STRATA_ASSIGN_OR_RETURN(instances, ListInstances());
  for (InstanceInfo& i : instances) {
    switch (i.state) {
      case InstanceState::kPending:
      case InstanceState::kRunning:
      case InstanceState::kStopping: {
        absl::MutexLock lock(&mu_);
        i.state = InstanceState::kStopped;
        i.state_reason = "Server.InternalError: stratad stopped while the instance ran";
        STRATA_RETURN_IF_ERROR(StoreInstance(i));
        break;
      }
      case InstanceState::kShuttingDown:  // A termination that did not finish.
        STRATA_RETURN_IF_ERROR(TerminateInstance(i.id).status());
        break;
      default:
        break;
    }
  }
  return absl::OkStatus();
}

std::string ImageRegistry::NewId(const std::string& prefix, absl::string_view key_prefix) {
  std::random_device random;
  for (;;) {
    const uint64_t hi = random() & 0xF;
    const uint64_t lo = (static_cast<uint64_t>(random()) << 32) ^ random();
    std::string id = absl::StrFormat("%s-%01x%016x", prefix, hi, lo);
    absl::StatusOr<std::optional<std::string>> existing =
        catalog_.Get(absl::StrCat(key_prefix, id));
    if (existing.ok() && !existing->has_value()) return id;
  }
}

// ---- Images ----

absl::Status ImageRegistry::ValidateImage(ImageInfo& image, bool allow_pending) {
  if (!ValidImageName(image.name)) {
    return AwsError(absl::StatusCode::kInvalidArgument, "InvalidAMIName.Malformed",
                    absl::StrCat("AMI name '", image.name,
                                 "' must be 3 to 128 characters of letters, numbers, spaces and "
                                 "()[]./-'@_"));
  }
  if (image.description.size() > 255) return BadValue("the description is over 255 characters");
  if (image.architecture != "x86_64" && image.architecture != "arm64" &&
      image.architecture != "i386") {
    return BadValue(absl::StrCat("Invalid value '", image.architecture,
                                 "' for architecture: use x86_64, arm64 or i386"));
  }
  if (image.virtualization_type != "hvm" && image.virtualization_type != "paravirtual") {
    return BadValue(absl::StrCat("Invalid value '", image.virtualization_type,
                                 "' for virtualizationType: use hvm or paravirtual"));
  }
  if (image.virtualization_type == "hvm" &&
      (!image.kernel_id.empty() || !image.ramdisk_id.empty())) {
    return BadValue("KernelId and RamdiskId are for paravirtual images only");
  }
  if (!image.kernel_id.empty() && !absl::StartsWith(image.kernel_id, "aki-")) {
    return BadValue(absl::StrCat("Invalid kernel id '", image.kernel_id, "': expected aki-..."));
  }
  if (!image.ramdisk_id.empty() && !absl::StartsWith(image.ramdisk_id, "ari-")) {
    return BadValue(absl::StrCat("Invalid ramdisk id '", image.ramdisk_id, "': expected ari-..."));
  }
  static const std::set<std::string> kBootModes = {"", "legacy-bios", "uefi", "uefi-preferred"};
  if (!kBootModes.contains(image.boot_mode)) {
    return BadValue(absl::StrCat("Invalid value '", image.boot_mode,
                                 "' for bootMode: use legacy-bios, uefi or uefi-preferred"));
  }
  if (!image.tpm_support.empty()) {
    if (image.tpm_support != "v2.0") return BadValue("TpmSupport must be v2.0");
    if (image.boot_mode != "uefi") return BadValue("TpmSupport v2.0 requires the uefi boot mode");
  }
  if (!image.imds_support.empty() && image.imds_support != "v2.0") {
    return BadValue("ImdsSupport must be v2.0");
  }
  STRATA_RETURN_IF_ERROR(volume::ValidateTags(image.tags));
  if (image.root_device_name.empty() || !ValidDeviceName(image.root_device_name)) {
    return BadValue(absl::StrCat("Invalid root device name '", image.root_device_name, "'"));
  }
  if (image.mappings.empty() || image.mappings.size() > kMaxMappings) {
    return BadMapping(absl::StrCat("an image needs 1 to ", kMaxMappings, " block device mappings"));
  }
  std::set<std::string> devices;
  bool root_mapped = false;
  for (BlockDeviceMapping& m : image.mappings) {
    if (!ValidDeviceName(m.device_name)) {
      return BadMapping(absl::StrCat("Invalid device name '", m.device_name, "'"));
    }
    if (!devices.insert(m.device_name).second) {
      return BadMapping(absl::StrCat("The device name '", m.device_name, "' is mapped twice"));
    }
    const int kinds =
        (m.ebs.has_value() ? 1 : 0) + (m.virtual_name.empty() ? 0 : 1) + (m.no_device ? 1 : 0);
    if (kinds != 1) {
      return BadMapping(absl::StrCat("the mapping of ", m.device_name,
                                     " must have exactly one of Ebs, VirtualName or NoDevice"));
    }
    if (!m.virtual_name.empty() && !ValidVirtualName(m.virtual_name)) {
      return BadMapping(absl::StrCat("Invalid virtual name '", m.virtual_name,
                                     "': use ephemeral0 to ephemeral23"));
    }
    if (!m.ebs.has_value()) continue;
    EbsBlockDevice& ebs = *m.ebs;
    STRATA_RETURN_IF_ERROR(ValidateEbs(m.device_name, ebs));
    if (ebs.snapshot_id.empty()) {
      if (m.device_name == image.root_device_name) {
        return BadMapping(absl::StrCat("the root device ", m.device_name, " needs a snapshot"));
      }
      if (ebs.volume_size_gib == 0) {
        return BadMapping(
            absl::StrCat("the mapping of ", m.device_name, " needs a SnapshotId or a VolumeSize"));
      }
    } else {
      absl::StatusOr<SnapshotInfo> s = region_.DescribeSnapshot(ebs.snapshot_id);
      if (!s.ok() || !CanUseSnapshot(*s, image.owner)) {
        return AwsError(absl::StatusCode::kNotFound, "InvalidSnapshot.NotFound",
                        absl::StrCat("The snapshot '", ebs.snapshot_id, "' does not exist"));
      }
      if (s->state == SnapshotState::kError ||
          (s->state == SnapshotState::kPending && !allow_pending)) {
        return AwsError(
            absl::StatusCode::kFailedPrecondition, "IncorrectState",
            absl::StrCat("snapshot ", ebs.snapshot_id, " is ", SnapshotStateName(s->state),
                         "; an image needs completed ones"));
      }
      const uint64_t snapshot_gib = (s->volume_size_bytes + kGiB - 1) / kGiB;
      if (ebs.volume_size_gib == 0) ebs.volume_size_gib = snapshot_gib;
      if (ebs.volume_size_gib < snapshot_gib) {
        return BadMapping(absl::StrCat("Volume of size ", ebs.volume_size_gib,
                                       "GB is smaller than snapshot '", ebs.snapshot_id,
                                       "', expect size >= ", snapshot_gib, "GB"));
      }
      if (s->encrypted) {
        // An image's volumes are made from the snapshot's data: its owner must be allowed to
        // decrypt under the snapshot's key, whichever key the mapping names.
        STRATA_RETURN_IF_ERROR(region_.CheckSnapshotKeyAccess(image.owner, ebs.snapshot_id));
        ebs.encrypted = true;
        if (ebs.kms_key_id.empty()) ebs.kms_key_id = s->kms_key_id;
      }
    }
    STRATA_RETURN_IF_ERROR(ValidateEbs(m.device_name, ebs));
    if (m.device_name == image.root_device_name) root_mapped = true;
  }
  if (!root_mapped) {
    return BadMapping(absl::StrCat("The root device name '", image.root_device_name,
                                   "' must be mapped to an EBS volume"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ImageInfo> ImageRegistry::RegisterImage(const ImageInfo& request) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, region_.EnterShared());
  absl::MutexLock lock(&mu_);
  return RegisterLocked(request, /*allow_pending=*/false);
}

absl::StatusOr<ImageInfo> ImageRegistry::RegisterLocked(ImageInfo image, bool allow_pending) {
  STRATA_RETURN_IF_ERROR(ValidateImage(image, allow_pending));
  STRATA_ASSIGN_OR_RETURN(std::vector<ImageInfo> all, ScanImages());
  for (const ImageInfo& other : all) {
    if (other.owner == image.owner && other.name == image.name) {
      return AwsError(
          absl::StatusCode::kAlreadyExists, "InvalidAMIName.Duplicate",
          absl::StrCat("AMI name ", image.name, " is already in use by AMI ", other.id));
    }
  }
  image.id = NewId("ami", meta::kImagePrefix);
  image.creation_micros = NowMicros();
  image.state = ImageState::kPending;
  image.launch_permissions.clear();
  image.deregistration_protection = false;
  image.protected_until_micros = 0;
  meta::WriteBatch batch;
  batch.Put(meta::ImageKey(image.id), EncodeImage(image));
  const std::vector<std::string> snapshots = SnapshotIds(image);
  for (const std::string& s : snapshots) batch.Put(meta::ImageRefKey(s, image.id), "");
  STRATA_RETURN_IF_ERROR(region_.CommitWithSnapshots(snapshots, batch));
  return Resolve(std::move(image));
}

absl::StatusOr<ImageInfo> ImageRegistry::LoadImage(const std::string& image_id) {
  STRATA_ASSIGN_OR_RETURN(ImageInfo image, LoadAnyImage(image_id));
  if (image.recycle_bin.has_value()) return ImageNotFound(image_id);
  return image;
}

absl::StatusOr<ImageInfo> ImageRegistry::LoadAnyImage(const std::string& image_id) {
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> bytes, catalog_.Get(meta::ImageKey(image_id)));
  if (!bytes.has_value()) return ImageNotFound(image_id);
  return DecodeImage(*bytes);
}

absl::Status ImageRegistry::SaveImage(const ImageInfo& image) {
  meta::WriteBatch batch;
  batch.Put(meta::ImageKey(image.id), EncodeImage(image));
  return catalog_.Write(batch);
}

absl::StatusOr<ImageInfo> ImageRegistry::Resolve(ImageInfo image) {
  if (image.state != ImageState::kPending) return image;
  bool all_completed = true;
  for (const std::string& id : SnapshotIds(image)) {
    absl::StatusOr<SnapshotInfo> s = region_.DescribeSnapshot(id);
    if (!s.ok() || s->state == SnapshotState::kError) {
      image.state = ImageState::kFailed;
      image.state_reason =
          absl::StrCat("Client.SnapshotFailed: snapshot ", id,
                       " failed: ", s.ok() ? s->state_message : std::string(s.status().message()));
      break;
    }
    if (s->state == SnapshotState::kPending) all_completed = false;
  }
  if (image.state == ImageState::kPending && all_completed) image.state = ImageState::kAvailable;
  if (image.state != ImageState::kPending) STRATA_RETURN_IF_ERROR(SaveImage(image));
  return image;
}

absl::StatusOr<ImageInfo> ImageRegistry::DescribeImage(const std::string& image_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, region_.EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(ImageInfo image, LoadImage(image_id));
  return Resolve(std::move(image));
}

absl::StatusOr<std::vector<ImageInfo>> ImageRegistry::ListImages() {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, region_.EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::vector<ImageInfo> all, ScanImages());
  std::vector<ImageInfo> images;
  for (ImageInfo& image : all) {
    if (image.recycle_bin.has_value()) continue;
    STRATA_ASSIGN_OR_RETURN(ImageInfo resolved, Resolve(std::move(image)));
    images.push_back(std::move(resolved));
  }
  return images;
}

absl::StatusOr<std::vector<ImageInfo>> ImageRegistry::ScanImages() {
  std::vector<ImageInfo> out;
  absl::Status decode = absl::OkStatus();
  STRATA_RETURN_IF_ERROR(catalog_.Scan(meta::kImagePrefix, "", [&](auto, absl::string_view v) {
    absl::StatusOr<ImageInfo> image = DecodeImage(std::string(v));
    if (!image.ok()) {
      decode = image.status();
      return false;
    }
    out.push_back(*std::move(image));
    return true;
  }));
  STRATA_RETURN_IF_ERROR(decode);
  return out;
}

absl::StatusOr<ImageInfo> ImageRegistry::UpdateImage(
    const std::string& image_id, const std::function<absl::Status(ImageInfo&)>& change) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, region_.EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(ImageInfo image, LoadImage(image_id));
  STRATA_ASSIGN_OR_RETURN(image, Resolve(std::move(image)));
  ImageInfo changed = image;
  STRATA_RETURN_IF_ERROR(change(changed));
  // What no change may alter.
  changed.id = image.id;
  changed.owner = image.owner;
  changed.mappings = image.mappings;
  if (changed.description.size() > 255) return BadValue("the description is over 255 characters");
  STRATA_RETURN_IF_ERROR(volume::ValidateTags(changed.tags));
  if (changed.is_public() && !image.is_public()) {
    STRATA_ASSIGN_OR_RETURN(ImageSettings settings, GetSettings(image.owner));
    if (settings.block_public_access) {
      return AwsError(absl::StatusCode::kFailedPrecondition, "OperationNotPermitted",
                      absl::StrCat("image block public access is on for account ", image.owner,
                                   ": ", image.id, " cannot be made public"));
    }
  }
  STRATA_RETURN_IF_ERROR(SaveImage(changed));
  return changed;
}

absl::StatusOr<std::vector<std::string>> ImageRegistry::DeregisterImage(const std::string& image_id,
                                                                        bool delete_snapshots) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, region_.EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(ImageInfo image, LoadImage(image_id));
  if (image.deregistration_protection) {
    return AwsError(
        absl::StatusCode::kFailedPrecondition, "OperationNotPermitted",
        absl::StrCat("deregistration protection is enabled for ", image_id, "; disable it first"));
  }
  if (image.protected_until_micros > NowMicros()) {
    return AwsError(absl::StatusCode::kFailedPrecondition, "OperationNotPermitted",
                    absl::StrCat(image_id, " is protected from deregistration until ",
                                 image.protected_until_micros / 1000000,
                                 " (the 24-hour cooldown after disabling protection)"));
  }
  STRATA_ASSIGN_OR_RETURN(uint64_t retention, region_.recycle_bin().RetentionMicros(
                                                  image.owner, kRecycleImages, image.tags));
  if (retention != 0) {  // To the Recycle Bin, its snapshots kept and still referenced.
    const uint64_t now = region_.env()->NowMicros();
    image.recycle_bin = RecycleBinEntry{now, now + retention};
    STRATA_RETURN_IF_ERROR(SaveImage(image));
    region_.ScheduleRecycleSweep(image.recycle_bin->exit_micros);
    return std::vector<std::string>();
  }
  STRATA_RETURN_IF_ERROR(RemoveImageLocked(image));
  std::vector<std::string> deleted;
  const std::vector<std::string> snapshots = SnapshotIds(image);
  if (!delete_snapshots) return deleted;
  for (const std::string& s : snapshots) {
    STRATA_ASSIGN_OR_RETURN(std::optional<std::string> user, ImageUsingSnapshot(s));
    if (user.has_value()) continue;  // Another image still needs it.
    if (absl::Status st = region_.DeleteSnapshot(s); !st.ok()) {
      STRATA_LOG(kWarning, "deregistering ", image_id, ": snapshot ", s, " stays: ", st.ToString());
      continue;
    }
    deleted.push_back(s);
  }
  return deleted;
}

absl::StatusOr<std::optional<std::string>> ImageRegistry::ImageUsingSnapshot(
    const std::string& snapshot_id) {
  std::optional<std::string> image;
  const std::string prefix = meta::ImageRefPrefix(snapshot_id);
  STRATA_RETURN_IF_ERROR(catalog_.Scan(prefix, "", [&](absl::string_view key, auto) {
    image = std::string(key.substr(prefix.size()));
    return false;
  }));
  return image;
}

absl::StatusOr<ImageSettings> ImageRegistry::GetSettings(const std::string& account) {
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> bytes,
                          catalog_.Get(meta::ImageSettingsKey(account)));
  if (!bytes.has_value()) return ImageSettings{};
  return DecodeSettings(*bytes);
}

absl::Status ImageRegistry::SetSettings(const std::string& account, const ImageSettings& settings) {
  static const std::set<std::string> kStates = {"disabled", "enabled", "audit-mode"};
  if (!kStates.contains(settings.allowed_images_state)) {
    return BadValue(absl::StrCat("Invalid allowed images state '", settings.allowed_images_state,
                                 "': use enabled or audit-mode"));
  }
  if (settings.image_criteria.size() > 10) return BadValue("at most 10 image criteria");
  size_t providers = 0;
  static const std::regex kAccount("^[0-9]{12}$");
  for (const std::vector<std::string>& criterion : settings.image_criteria) {
    providers += criterion.size();
    for (const std::string& p : criterion) {
      if (p != "amazon" && p != "aws-marketplace" && p != "aws-backup-vault" && p != "none" &&
          !std::regex_match(p, kAccount)) {
        return BadValue(absl::StrCat("Invalid image provider '", p,
                                     "': use amazon, aws-marketplace, aws-backup-vault, none or "
                                     "a 12-digit account id"));
      }
      if (p == "none" && criterion.size() > 1) {
        return BadValue("the image provider none cannot be combined with others");
      }
    }
  }
  if (providers > 200) return BadValue("at most 200 image providers in all");
  meta::WriteBatch batch;
  batch.Put(meta::ImageSettingsKey(account), EncodeSettings(settings));
  return catalog_.Write(batch);
}

}  // namespace strata::image
