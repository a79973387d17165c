// The image registry's instances: launch (a volume per mapping from its snapshot, a VM booted
// from them), state changes as on EC2, the VM's exit, tags and console output.

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

absl::StatusOr<InstanceInfo> ImageRegistry::LoadInstance(const std::string& instance_id) {
  STRATA_ASSIGN_OR_RETURN(std::optional<std::string> bytes,
                          catalog_.Get(meta::InstanceKey(instance_id)));
  if (bytes.has_value()) return DecodeInstance(*bytes);
  STRATA_ASSIGN_OR_RETURN(std::optional<OtherNodesInstance> other, FindOnOtherNodes(instance_id));
  if (other.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("instance ", instance_id, " runs on node ", other->node,
                     " of this region; call that node (an instance stays on the node that "
                     "launched it)"));
  }
  return InstanceNotFound(instance_id);
}

absl::StatusOr<std::optional<ImageRegistry::OtherNodesInstance>> ImageRegistry::FindOnOtherNodes(
    const std::string& instance_id) {
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> nodes, region_.OtherNodes());
  for (const std::string& node : nodes) {
    STRATA_ASSIGN_OR_RETURN(
        std::optional<std::string> bytes,
        catalog_.Get(meta::SharedCatalog::NodeKey(node, meta::InstanceKey(instance_id))));
    if (!bytes.has_value()) continue;
    STRATA_ASSIGN_OR_RETURN(InstanceInfo instance, DecodeInstance(*bytes));
    return OtherNodesInstance{node, std::move(instance)};
  }
  return std::nullopt;
}

absl::Status ImageRegistry::StoreInstance(const InstanceInfo& instance) {
  meta::WriteBatch batch;
  batch.Put(meta::InstanceKey(instance.id), EncodeInstance(instance));
  return catalog_.Write(batch);
}

absl::StatusOr<InstanceInfo> ImageRegistry::DescribeInstance(const std::string& instance_id) {
  absl::MutexLock lock(&mu_);
  // Another node's (RADOS) is described as that node last recorded it.
  STRATA_ASSIGN_OR_RETURN(std::optional<OtherNodesInstance> other, FindOnOtherNodes(instance_id));
  if (other.has_value()) return other->instance;
  return LoadInstance(instance_id);
}

absl::StatusOr<std::vector<InstanceInfo>> ImageRegistry::ListInstances() {
  // This node's, then (RADOS) every other node's of the region.
  std::vector<std::string> prefixes = {std::string(meta::kInstancePrefix)};
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> nodes, region_.OtherNodes());
  for (const std::string& node : nodes) {
    prefixes.push_back(meta::SharedCatalog::NodeKey(node, meta::kInstancePrefix));
  }
  std::vector<InstanceInfo> out;
  absl::Status decode = absl::OkStatus();
  for (const std::string& prefix : prefixes) {
    STRATA_RETURN_IF_ERROR(catalog_.Scan(prefix, "", [&](auto, absl::string_view v) {
      absl::StatusOr<InstanceInfo> instance = DecodeInstance(std::string(v));
      if (!instance.ok()) {
        decode = instance.status();
        return false;
      }
      out.push_back(*std::move(instance));
      return true;
    }));
    STRATA_RETURN_IF_ERROR(decode);
  }
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

absl::StatusOr<std::string> ImageRegistry::ConsoleOutput(const std::string& instance_id) {
  {
    absl::MutexLock lock(&mu_);
    STRATA_RETURN_IF_ERROR(LoadInstance(instance_id).status());
  }
  if (hypervisor_ == nullptr) return std::string();
  return hypervisor_->Console(instance_id);
}

}  // namespace strata::image
