// RegionImpl: attach and detach (local attachment groups).
#include "absl/strings/str_cat.h"
#include "region/region_impl.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata::region {

absl::Status RegionImpl::AttachVolume(const std::string& volume_id, const std::string& instance_id,
                                      const std::string& device) {
  auto hex = [](absl::string_view s) {
    return s.find_first_not_of("0123456789abcdef") == absl::string_view::npos;
  };
  if (!(instance_id.size() == 19 || instance_id.size() == 10) || instance_id.substr(0, 2) != "i-" ||
      !hex(absl::string_view(instance_id).substr(2))) {
    return absl::InvalidArgumentError(
        absl::StrCat("instance id \"", instance_id, "\" must be i- and 17 (or 8) hex digits"));
  }
  if (device.size() < 6 || device.size() > 32 || device.substr(0, 5) != "/dev/" ||
      device.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789/") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("device \"", device, "\" must look like /dev/sdf"));
  }
  // A volume another node serves and does not use is asked for first, holding no lock here.
  AskForVolume(volume_id);
  // In the region lease: a volume that comes from another node reads through snapshots that
  // node may have made since this one last looked.
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, EnterShared());
  absl::MutexLock lock(&mu_);
  // A volume with its head in RADOS that another node serves comes here first.
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, AdoptVolumeLocked(volume_id, /*force=*/false));
  const meta::VolumeRecord r = volume->record();
  if (r.encryption.encrypted()) {
    // As on AWS: a disabled (or pending deletion) key stops new attachments; attached volumes
    // keep working until detached.
    STRATA_RETURN_IF_ERROR(kms_->CheckUsable(r.owner, r.encryption.kms_key_arn));
  }
  if (!r.attached_to.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "volume ", volume_id, " is already attached to ", r.attached_to, "; detach it first"));
  }
  for (const auto& [id, other] : volumes_) {
    const meta::VolumeRecord o = other->record();
    if (o.attached_to == instance_id && o.device == device) {
      return absl::AlreadyExistsError(
          absl::StrCat("device ", device, " of ", instance_id, " is taken by ", id));
    }
  }
  volume->set_attachment(instance_id, device, env_->NowMicros());
  if (absl::Status s = PersistVolume(*volume); !s.ok()) {
    volume->set_attachment("", "", 0);
    return s;
  }
  return absl::OkStatus();
}

absl::Status RegionImpl::DetachVolume(const std::string& volume_id,
                                      const std::string& instance_id) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  const meta::VolumeRecord r = volume->record();
  if (r.attached_to.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("volume ", volume_id, " is not attached"));
  }
  if (!instance_id.empty() && instance_id != r.attached_to) {
    return absl::FailedPreconditionError(absl::StrCat("volume ", volume_id, " is attached to ",
                                                      r.attached_to, ", not ", instance_id));
  }
  STRATA_RETURN_IF_ERROR(volume->Flush());
  volume->set_attachment("", "", 0);
  if (absl::Status s = PersistVolume(*volume); !s.ok()) {
    volume->set_attachment(r.attached_to, r.device, r.attach_time_micros);
    return s;
  }
  return absl::OkStatus();
}

}  // namespace strata::region
