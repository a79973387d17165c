// Images the registry makes from other things: from an instance (CreateImage, crash-consistent
// across its volumes), from an image of another region (CopyImage), and from or to a bundle
// (store and restore tasks).

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
#include "image/image_registry.h"
#include "image/registry_rules.h"
#include "meta/schema.h"
#include "util/log.h"
#include "util/status_macros.h"
#include "volume/tags.h"

namespace strata::image {

absl::StatusOr<ImageInfo> ImageRegistry::CreateImage(const std::string& instance_id,
                                                     const ImageInfo& request) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, region_.EnterShared());
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
    STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, region_.EnterShared());
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
    STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, region_.EnterShared());
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
