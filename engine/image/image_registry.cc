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
#include "meta/schema.h"
#include "util/log.h"
#include "util/status_macros.h"
#include "volume/tags.h"

namespace strata::image {
namespace {

constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kMaxVolumeGiB = 16384;
constexpr size_t kMaxMappings = 32;

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

}  // namespace

ImageRegistry::ImageRegistry(region::RegionImpl& region, Hypervisor* hypervisor)
    : region_(region), catalog_(*region.catalog()), hypervisor_(hypervisor) {}

absl::StatusOr<std::unique_ptr<ImageRegistry>> ImageRegistry::Open(region::RegionImpl& region,
                                                                   Hypervisor* hypervisor) {
  std::unique_ptr<ImageRegistry> registry(new ImageRegistry(region, hypervisor));
  STRATA_RETURN_IF_ERROR(registry->RecoverInstances());
  return registry;
}

ImageRegistry::~ImageRegistry() {
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
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(ImageInfo image, LoadImage(image_id));
  return Resolve(std::move(image));
}

absl::StatusOr<std::vector<ImageInfo>> ImageRegistry::ListImages() {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::vector<ImageInfo> images, ScanImages());
  for (ImageInfo& image : images) {
    STRATA_ASSIGN_OR_RETURN(image, Resolve(std::move(image)));
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
  const std::vector<std::string> snapshots = SnapshotIds(image);
  meta::WriteBatch batch;
  batch.Delete(meta::ImageKey(image_id));
  for (const std::string& s : snapshots) batch.Delete(meta::ImageRefKey(s, image_id));
  STRATA_RETURN_IF_ERROR(catalog_.Write(batch));
  std::vector<std::string> deleted;
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

// ---- Instances ----

absl::StatusOr<InstanceInfo> ImageRegistry::LoadInstance(const std::string& instance_id) {
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> bytes,
                          catalog_.Get(meta::InstanceKey(instance_id)));
  if (!bytes.has_value()) return InstanceNotFound(instance_id);
  return DecodeInstance(*bytes);
}

absl::Status ImageRegistry::StoreInstance(const InstanceInfo& instance) {
  meta::WriteBatch batch;
  batch.Put(meta::InstanceKey(instance.id), EncodeInstance(instance));
  return catalog_.Write(batch);
}

absl::StatusOr<InstanceInfo> ImageRegistry::DescribeInstance(const std::string& instance_id) {
  absl::MutexLock lock(&mu_);
  return LoadInstance(instance_id);
}

absl::StatusOr<std::vector<InstanceInfo>> ImageRegistry::ListInstances() {
  std::vector<InstanceInfo> out;
  absl::Status decode = absl::OkStatus();
  STRATA_RETURN_IF_ERROR(catalog_.Scan(meta::kInstancePrefix, "", [&](auto, absl::string_view v) {
    absl::StatusOr<InstanceInfo> instance = DecodeInstance(std::string(v));
    if (!instance.ok()) {
      decode = instance.status();
      return false;
    }
    out.push_back(*std::move(instance));
    return true;
  }));
  STRATA_RETURN_IF_ERROR(decode);
  return out;
}

absl::StatusOr<std::vector<BlockDeviceMapping>> ImageRegistry::LaunchMapping(
    const ImageInfo& image, const std::vector<BlockDeviceMapping>& overrides,
    const std::string& owner) const {
  std::vector<BlockDeviceMapping> mapping = image.mappings;
  for (const BlockDeviceMapping& o : overrides) {
    if (!ValidDeviceName(o.device_name)) {
      return BadMapping(absl::StrCat("Invalid device name '", o.device_name, "'"));
    }
    auto it = std::find_if(mapping.begin(), mapping.end(), [&](const BlockDeviceMapping& m) {
      return m.device_name == o.device_name;
    });
    if (o.no_device) {
      if (o.device_name == image.root_device_name) {
        return BadMapping("the root device cannot be suppressed with NoDevice");
      }
      if (it != mapping.end()) mapping.erase(it);
      continue;
    }
    if (it == mapping.end()) {  // A device the image does not map.
      if (o.ebs.has_value()) {
        STRATA_RETURN_IF_ERROR(ValidateEbs(o.device_name, *o.ebs));
        if (o.ebs->snapshot_id.empty() && o.ebs->volume_size_gib == 0) {
          return BadMapping(absl::StrCat("the mapping of ", o.device_name,
                                         " needs a SnapshotId or a VolumeSize"));
        }
      }
      BlockDeviceMapping added = o;
      if (added.ebs.has_value() && !added.ebs->snapshot_id.empty()) {
        // A snapshot the image does not map: the launching account must be able to use it.
        absl::StatusOr<SnapshotInfo> s = region_.DescribeSnapshot(added.ebs->snapshot_id);
        if (!s.ok() || !CanUseSnapshot(*s, owner) || s->state != SnapshotState::kCompleted) {
          return AwsError(absl::StatusCode::kNotFound, "InvalidSnapshot.NotFound",
                          absl::StrCat("The snapshot '", added.ebs->snapshot_id,
                                       "' does not exist or is not completed"));
        }
        const uint64_t snapshot_gib = (s->volume_size_bytes + kGiB - 1) / kGiB;
        if (added.ebs->volume_size_gib == 0) added.ebs->volume_size_gib = snapshot_gib;
        if (added.ebs->volume_size_gib < snapshot_gib) {
          return BadMapping(absl::StrCat("Volume of size ", added.ebs->volume_size_gib,
                                         "GB is smaller than snapshot '", s->id,
                                         "', expect size >= ", snapshot_gib, "GB"));
        }
        if (s->encrypted) added.ebs->encrypted = true;
      }
      mapping.push_back(added);
      continue;
    }
    if (!o.ebs.has_value() || !it->ebs.has_value()) {
      *it = o;
      continue;
    }
    EbsBlockDevice merged = *it->ebs;  // The image's snapshot; the override's settings.
    const EbsBlockDevice& e = *o.ebs;
    if (!e.snapshot_id.empty() && e.snapshot_id != merged.snapshot_id) {
      return BadMapping(absl::StrCat("the snapshot of ", o.device_name,
                                     " comes from the image and cannot be changed"));
    }
    if (e.volume_size_gib != 0) {
      if (e.volume_size_gib < merged.volume_size_gib) {
        return BadMapping(absl::StrCat("Volume of size ", e.volume_size_gib,
                                       "GB is smaller than snapshot '", merged.snapshot_id,
                                       "', expect size >= ", merged.volume_size_gib, "GB"));
      }
      merged.volume_size_gib = e.volume_size_gib;
    }
    merged.volume_type = e.volume_type;
    merged.iops = e.iops;
    merged.throughput = e.throughput;
    merged.delete_on_termination = e.delete_on_termination;
    if (e.encrypted) merged.encrypted = true;
    if (!e.kms_key_id.empty()) merged.kms_key_id = e.kms_key_id;
    STRATA_RETURN_IF_ERROR(ValidateEbs(o.device_name, merged));
    it->ebs = merged;
  }
  return mapping;
}

absl::StatusOr<InstanceInfo> ImageRegistry::RunInstance(const LaunchRequest& request) {
  std::optional<InstanceType> type = FindInstanceType(request.instance_type);
  if (!type.has_value()) {
    return BadValue(absl::StrCat("Invalid value '", request.instance_type,
                                 "' for InstanceType: use t3.nano, t3.micro, t3.small, t3.medium, "
                                 "m5.large, m5.xlarge or c5.large"));
  }
  STRATA_RETURN_IF_ERROR(volume::ValidateTags(request.tags));
  if (request.user_data.size() > 16384) return BadValue("UserData is over 16 KiB");
  InstanceInfo instance;
  {
    absl::MutexLock lock(&mu_);
    absl::StatusOr<ImageInfo> image = LoadImage(request.image_id);
    if (image.ok()) image = Resolve(*std::move(image));
    if (!image.ok()) return image.status();
    if (!image->launchable_by(request.owner)) {
      return AwsError(absl::StatusCode::kPermissionDenied, "AuthFailure",
                      absl::StrCat("Not authorized for images: [", image->id, "]"));
    }
    STRATA_ASSIGN_OR_RETURN(ImageSettings settings, GetSettings(request.owner));
    if (settings.allowed_images_state == "enabled" &&
        !ImageAllowed(settings, *image, request.owner)) {
      return AwsError(absl::StatusCode::kPermissionDenied, "InvalidAMIID.NotFound",
                      absl::StrCat("The image id '[", image->id,
                                   "]' is not allowed by the account's allowed images settings"));
    }
    if (image->state != ImageState::kAvailable) {
      return AwsError(absl::StatusCode::kFailedPrecondition, "InvalidAMIID.Unavailable",
                      absl::StrCat("The image ", image->id, " is ", ImageStateName(image->state),
                                   ", not available"));
    }
    STRATA_ASSIGN_OR_RETURN(std::vector<BlockDeviceMapping> mapping,
                            LaunchMapping(*image, request.mappings, request.owner));
    instance.id = NewId("i", meta::kInstancePrefix);
    instance.image_id = image->id;
    instance.owner = request.owner;
    instance.instance_type = type->name;
    instance.state = InstanceState::kPending;
    instance.launch_micros = NowMicros();
    instance.tags = request.tags;
    instance.user_data = request.user_data;
    instance.root_device_name = image->root_device_name;
    instance.architecture = image->architecture;
    instance.hypervisor = hypervisor_ != nullptr ? hypervisor_->name() : "";
    // The root device first: it is the VM's first disk, the one it boots from.
    std::stable_partition(mapping.begin(), mapping.end(), [&](const BlockDeviceMapping& m) {
      return m.device_name == image->root_device_name;
    });
    absl::Status failed = absl::OkStatus();
    for (const BlockDeviceMapping& m : mapping) {
      if (!m.ebs.has_value()) continue;  // Instance store and NoDevice: no volume.
      CreateVolumeRequest v;
      v.size_bytes = m.ebs->volume_size_gib * kGiB;
      v.snapshot_id = m.ebs->snapshot_id;
      v.owner = request.owner;
      v.encrypted = m.ebs->encrypted;
      v.kms_key_id = m.ebs->kms_key_id;
      v.volume_type = m.ebs->volume_type;
      v.iops = m.ebs->iops;
      v.throughput = m.ebs->throughput;
      v.tags = request.volume_tags;
      absl::StatusOr<VolumeInfo> volume = region_.CreateVolume(v);
      if (!volume.ok()) {
        failed = volume.status();
        break;
      }
      instance.volumes.push_back({m.device_name, volume->id, m.ebs->delete_on_termination});
      failed = region_.AttachVolume(volume->id, instance.id, m.device_name);
      if (!failed.ok()) break;
    }
    if (failed.ok()) failed = StoreInstance(instance);
    if (!failed.ok()) {  // Nothing of a failed launch stays.
      for (const InstanceVolume& v : instance.volumes) {
        (void)region_.DetachVolume(v.volume_id, "");
        (void)region_.DeleteVolume(v.volume_id);
      }
      return failed;
    }
    image->last_launched_micros = instance.launch_micros;
    if (absl::Status st = SaveImage(*image); !st.ok()) {
      STRATA_LOG(kWarning, "image ", image->id, ": last launch time not recorded: ", st.ToString());
    }
  }
  return Boot(instance);
}

absl::StatusOr<InstanceInfo> ImageRegistry::Boot(const InstanceInfo& instance) {
  if (hypervisor_ == nullptr) {
    return SetInstanceState(instance.id, InstanceState::kRunning,
                            "no hypervisor: the instance is its attached volumes");
  }
  std::optional<InstanceType> type = FindInstanceType(instance.instance_type);
  Hypervisor::Machine machine;
  machine.instance_id = instance.id;
  machine.type = type.value_or(InstanceType{});
  for (const InstanceVolume& v : instance.volumes) machine.volume_ids.push_back(v.volume_id);
  machine.user_data = instance.user_data;
  machine.account = instance.owner;
  absl::Status started =
      hypervisor_->Start(machine, [this](const std::string& id, bool clean,
                                         const std::string& why) { OnVmExit(id, clean, why); });
  if (!started.ok()) {
    STRATA_LOG(kWarning, "instance ", instance.id, ": the VM did not start: ", started.ToString());
    return SetInstanceState(instance.id, InstanceState::kStopped,
                            absl::StrCat("Server.InternalError: ", started.message()));
  }
  return SetInstanceState(instance.id, InstanceState::kRunning, "");
}

absl::StatusOr<InstanceInfo> ImageRegistry::SetInstanceState(const std::string& instance_id,
                                                             InstanceState state,
                                                             const std::string& reason) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(InstanceInfo instance, LoadInstance(instance_id));
  if (instance.state == InstanceState::kTerminated) return instance;
  instance.state = state;
  instance.state_reason = reason;
  STRATA_RETURN_IF_ERROR(StoreInstance(instance));
  return instance;
}

void ImageRegistry::OnVmExit(const std::string& instance_id, bool clean,
                             const std::string& reason) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<InstanceInfo> instance = LoadInstance(instance_id);
  if (!instance.ok()) return;
  const bool requested = stopping_.contains(instance_id);
  if (instance->state == InstanceState::kPending || instance->state == InstanceState::kRunning ||
      instance->state == InstanceState::kStopping) {
    instance->state = InstanceState::kStopped;
    instance->state_reason = requested ? "Client.UserInitiatedShutdown: User initiated shutdown"
                             : clean
                                 ? "Client.InstanceInitiatedShutdown: Instance initiated shutdown"
                                 : absl::StrCat("Server.InternalError: the VM failed: ", reason);
    if (absl::Status st = StoreInstance(*instance); !st.ok()) {
      STRATA_LOG(kWarning, "instance ", instance_id, ": state not recorded: ", st.ToString());
    }
  }
}

absl::Status ImageRegistry::StopVm(const std::string& instance_id, bool force) {
  if (hypervisor_ == nullptr) return absl::OkStatus();
  {
    absl::MutexLock lock(&mu_);
    stopping_.insert(instance_id);
  }
  absl::Status st = hypervisor_->Stop(instance_id, force);
  absl::MutexLock lock(&mu_);
  stopping_.erase(instance_id);
  return st;
}

absl::StatusOr<InstanceInfo> ImageRegistry::StopInstance(const std::string& instance_id,
                                                         bool force) {
  {
    absl::MutexLock lock(&mu_);
    STRATA_ASSIGN_OR_RETURN(InstanceInfo instance, LoadInstance(instance_id));
    if (instance.state == InstanceState::kStopped) return instance;
    if (instance.state != InstanceState::kRunning && instance.state != InstanceState::kPending &&
        instance.state != InstanceState::kStopping) {
      return WrongInstanceState(instance, "stopped");
    }
    instance.state = InstanceState::kStopping;
    STRATA_RETURN_IF_ERROR(StoreInstance(instance));
  }
  STRATA_RETURN_IF_ERROR(StopVm(instance_id, force));
  return SetInstanceState(instance_id, InstanceState::kStopped,
                          "Client.UserInitiatedShutdown: User initiated shutdown");
}

absl::StatusOr<InstanceInfo> ImageRegistry::StartInstance(const std::string& instance_id) {
  InstanceInfo instance;
  {
    absl::MutexLock lock(&mu_);
    STRATA_ASSIGN_OR_RETURN(instance, LoadInstance(instance_id));
    if (instance.state == InstanceState::kRunning || instance.state == InstanceState::kPending) {
      return instance;
    }
    if (instance.state != InstanceState::kStopped) return WrongInstanceState(instance, "started");
    instance.state = InstanceState::kPending;
    instance.state_reason.clear();
    STRATA_RETURN_IF_ERROR(StoreInstance(instance));
  }
  return Boot(instance);
}

absl::Status ImageRegistry::RebootInstance(const std::string& instance_id) {
  InstanceInfo instance;
  {
    absl::MutexLock lock(&mu_);
    STRATA_ASSIGN_OR_RETURN(instance, LoadInstance(instance_id));
    if (instance.state != InstanceState::kRunning) return WrongInstanceState(instance, "rebooted");
  }
  STRATA_RETURN_IF_ERROR(StopVm(instance_id, /*force=*/true));
  STRATA_ASSIGN_OR_RETURN(instance, SetInstanceState(instance_id, InstanceState::kPending, ""));
  return Boot(instance).status();
}

absl::StatusOr<InstanceInfo> ImageRegistry::TerminateInstance(const std::string& instance_id) {
  {
    absl::MutexLock lock(&mu_);
    STRATA_ASSIGN_OR_RETURN(InstanceInfo instance, LoadInstance(instance_id));
    if (instance.state == InstanceState::kTerminated) return instance;
    instance.state = InstanceState::kShuttingDown;
    STRATA_RETURN_IF_ERROR(StoreInstance(instance));
  }
  STRATA_RETURN_IF_ERROR(StopVm(instance_id, /*force=*/false));
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(InstanceInfo instance, LoadInstance(instance_id));
  for (const InstanceVolume& v : instance.volumes) {
    absl::Status detached = region_.DetachVolume(v.volume_id, instance_id);
    if (!detached.ok() && detached.code() != absl::StatusCode::kNotFound &&
        detached.code() != absl::StatusCode::kFailedPrecondition) {
      return detached;  // Stays shutting-down; a retry (or the next start) finishes it.
    }
    if (!v.delete_on_termination) continue;
    absl::Status deleted = region_.DeleteVolume(v.volume_id);
    if (!deleted.ok() && deleted.code() != absl::StatusCode::kNotFound) return deleted;
  }
  instance.state = InstanceState::kTerminated;
  instance.state_reason = "Client.UserInitiatedShutdown: User initiated shutdown";
  STRATA_RETURN_IF_ERROR(StoreInstance(instance));
  return instance;
}

absl::Status ImageRegistry::TagInstance(const std::string& instance_id,
                                        const std::map<std::string, std::string>& set,
                                        const std::vector<std::string>& remove) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(InstanceInfo instance, LoadInstance(instance_id));
  volume::ApplyTags(instance.tags, set, remove);
  STRATA_RETURN_IF_ERROR(volume::ValidateTags(instance.tags));
  return StoreInstance(instance);
}

absl::StatusOr<ImageInfo> ImageRegistry::CreateImage(const std::string& instance_id,
                                                     const ImageInfo& request) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(InstanceInfo instance, LoadInstance(instance_id));
  if (instance.state == InstanceState::kTerminated ||
      instance.state == InstanceState::kShuttingDown) {
    return WrongInstanceState(instance, "imaged");
  }
  ImageInfo image = request;
  if (!ValidImageName(image.name)) {  // Before any snapshot is taken.
    return AwsError(absl::StatusCode::kInvalidArgument, "InvalidAMIName.Malformed",
                    absl::StrCat("AMI name '", image.name, "' is not valid"));
  }
  std::vector<CreateSnapshotRequest> snapshots;
  for (const InstanceVolume& v : instance.volumes) {
    CreateSnapshotRequest s;
    s.volume_id = v.volume_id;
    s.description = absl::StrCat("Created by CreateImage(", instance_id, ") for ", image.name);
    s.owner = request.owner;
    snapshots.push_back(std::move(s));
  }
  // One point in time across every volume (NoReboot: the guest is not paused).
  STRATA_ASSIGN_OR_RETURN(std::vector<SnapshotInfo> taken, region_.CreateSnapshots(snapshots));
  ImageInfo source;
  if (absl::StatusOr<ImageInfo> s = LoadImage(instance.image_id); s.ok()) source = *s;
  image.architecture = instance.architecture;
  image.root_device_name = instance.root_device_name;
  image.virtualization_type =
      source.virtualization_type.empty() ? "hvm" : source.virtualization_type;
  image.boot_mode = source.boot_mode;
  image.ena_support = source.ena_support;
  image.source_instance_id = instance_id;
  image.mappings.clear();
  for (size_t i = 0; i < taken.size(); ++i) {
    BlockDeviceMapping m;
    m.device_name = instance.volumes[i].device_name;
    EbsBlockDevice ebs;
    ebs.snapshot_id = taken[i].id;
    ebs.volume_size_gib = (taken[i].volume_size_bytes + kGiB - 1) / kGiB;
    ebs.delete_on_termination = instance.volumes[i].delete_on_termination;
    if (absl::StatusOr<VolumeInfo> v = region_.DescribeVolume(instance.volumes[i].volume_id);
        v.ok()) {
      ebs.volume_type = v->volume_type;
      ebs.iops = v->iops;
      ebs.throughput = v->throughput;
    }
    ebs.encrypted = taken[i].encrypted;
    ebs.kms_key_id = taken[i].kms_key_id;
    m.ebs = ebs;
    image.mappings.push_back(std::move(m));
  }
  absl::StatusOr<ImageInfo> registered = RegisterLocked(image, /*allow_pending=*/true);
  if (!registered.ok()) {  // The snapshots were for the image only.
    for (const SnapshotInfo& s : taken) {
      (void)region_.WaitForSnapshot(s.id, 60000);
      (void)region_.DeleteSnapshot(s.id);
    }
  }
  return registered;
}

absl::StatusOr<ImageInfo> ImageRegistry::CopyImage(const std::string& source_image_id,
                                                   const ImageInfo& request, bool encrypted,
                                                   const std::string& kms_key_id, bool copy_tags) {
  ImageInfo source;
  {
    absl::MutexLock lock(&mu_);
    STRATA_ASSIGN_OR_RETURN(source, LoadImage(source_image_id));
    STRATA_ASSIGN_OR_RETURN(source, Resolve(std::move(source)));
  }
  if (!source.launchable_by(request.owner)) return ImageNotFound(source_image_id);
  return RegisterImageCopy(source, region_.name(), request, copy_tags,
                           [&](const std::string& snapshot_id, const std::string& description) {
                             CreateSnapshotRequest copy;
                             copy.description = description;
                             copy.owner = request.owner;
                             copy.encrypted = encrypted;
                             copy.kms_key_id = kms_key_id;
                             return region_.CopySnapshot(snapshot_id, copy);
                           });
}

absl::StatusOr<ImageInfo> ImageRegistry::RegisterImageCopy(const ImageInfo& source,
                                                           const std::string& source_region,
                                                           const ImageInfo& request, bool copy_tags,
                                                           const SnapshotCopier& copy_snapshot) {
  if (source.state != ImageState::kAvailable) {
    return AwsError(absl::StatusCode::kFailedPrecondition, "InvalidAMIID.Unavailable",
                    absl::StrCat("The image ", source.id, " is ", ImageStateName(source.state)));
  }
  if (!ValidImageName(request.name)) {
    return AwsError(absl::StatusCode::kInvalidArgument, "InvalidAMIName.Malformed",
                    absl::StrCat("AMI name '", request.name, "' is not valid"));
  }
  ImageInfo image = source;
  image.name = request.name;
  image.description = request.description.empty() ? source.description : request.description;
  image.owner = request.owner;
  image.tags = copy_tags ? source.tags : std::map<std::string, std::string>{};
  for (const auto& [k, v] : request.tags) image.tags[k] = v;
  image.launch_permissions.clear();
  image.source_image_id = source.id;
  image.source_image_region = source_region;
  image.source_instance_id.clear();
  image.deprecation_micros = 0;
  image.last_launched_micros = 0;
  // The copies start outside the lock: a cross-region copy asks its source first.
  std::vector<std::string> copies;
  absl::Status copied = absl::OkStatus();
  for (BlockDeviceMapping& m : image.mappings) {
    if (!m.ebs.has_value() || m.ebs->snapshot_id.empty()) continue;
    absl::StatusOr<SnapshotInfo> s = copy_snapshot(
        m.ebs->snapshot_id,
        absl::StrCat("Copied for ", request.name, " from ", m.ebs->snapshot_id, " of ", source.id));
    if (!s.ok()) {
      copied = s.status();
      break;
    }
    copies.push_back(s->id);
    m.ebs->snapshot_id = s->id;
    m.ebs->encrypted = s->encrypted;
    m.ebs->kms_key_id = s->kms_key_id;
  }
  absl::StatusOr<ImageInfo> registered = [&]() -> absl::StatusOr<ImageInfo> {
    if (!copied.ok()) return copied;
    absl::MutexLock lock(&mu_);
    return RegisterLocked(image, /*allow_pending=*/true);
  }();
  if (!registered.ok()) {  // The copies were for the image only.
    for (const std::string& id : copies) {
      (void)region_.WaitForSnapshot(id, 600'000);
      (void)region_.DeleteSnapshot(id);
    }
  }
  return registered;
}

absl::StatusOr<std::string> ImageRegistry::ConsoleOutput(const std::string& instance_id) {
  {
    absl::MutexLock lock(&mu_);
    STRATA_RETURN_IF_ERROR(LoadInstance(instance_id).status());
  }
  if (hypervisor_ == nullptr) return std::string();
  return hypervisor_->Console(instance_id);
}

absl::Status ImageRegistry::StoreImage(const std::string& image_id, const std::string& dir,
                                       const std::string& object_key, const std::string& account,
                                       const std::function<void(int)>& progress) {
  STRATA_ASSIGN_OR_RETURN(ImageInfo image, DescribeImage(image_id));
  if (image.state != ImageState::kAvailable) {
    return AwsError(absl::StatusCode::kFailedPrecondition, "InvalidAMIID.Unavailable",
                    absl::StrCat("The image ", image_id, " is ", ImageStateName(image.state)));
  }
  return WriteBundle(region_, image, dir, object_key, account, progress);
}

absl::StatusOr<ImageInfo> ImageRegistry::RestoreImage(
    const std::string& dir, const std::string& object_key, const std::string& name,
    const std::string& account, const std::map<std::string, std::string>& tags) {
  STRATA_ASSIGN_OR_RETURN(ImageInfo image, ReadBundle(region_, dir, object_key, account));
  if (!name.empty()) image.name = name;
  image.tags = tags;
  absl::StatusOr<ImageInfo> registered = RegisterImage(image);
  if (!registered.ok()) {  // The restored snapshots were for this image only.
    for (const std::string& s : SnapshotIds(image)) (void)region_.DeleteSnapshot(s);
  }
  return registered;
}

}  // namespace strata::image
