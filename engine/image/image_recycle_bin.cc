// ImageRegistry: the images of the Recycle Bin (docs/data-protection.md). DeregisterImage puts an
// image a rule covers there; the region's sweep deregisters it for good when its retention ends.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "image/image_records.h"
#include "image/image_registry.h"
#include "image/registry_rules.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata::image {

absl::Status ImageRegistry::RemoveImageLocked(const ImageInfo& image) {
  meta::WriteBatch batch;
  batch.Delete(meta::ImageKey(image.id));
  for (const std::string& s : SnapshotIds(image)) batch.Delete(meta::ImageRefKey(s, image.id));
  return catalog_.Write(batch);
}

absl::StatusOr<std::vector<ImageInfo>> ImageRegistry::ListRecycledImages() {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, region_.EnterShared());
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(std::vector<ImageInfo> all, ScanImages());
  std::erase_if(all, [](const ImageInfo& i) { return !i.recycle_bin.has_value(); });
  std::sort(all.begin(), all.end(), [](const ImageInfo& a, const ImageInfo& b) {
    return a.recycle_bin->enter_micros < b.recycle_bin->enter_micros;
  });
  return all;
}

absl::StatusOr<ImageInfo> ImageRegistry::RestoreImageFromRecycleBin(const std::string& image_id) {
  STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, region_.EnterShared());
  absl::MutexLock lock(&mu_);
  absl::StatusOr<ImageInfo> image = LoadAnyImage(image_id);
  if (!image.ok() && !absl::IsNotFound(image.status())) return image.status();
  if (!image.ok() || !image->recycle_bin.has_value() ||
      image->recycle_bin->exit_micros <= region_.env()->NowMicros()) {
    return AwsError(absl::StatusCode::kNotFound, "InvalidAMIID.NotFound",
                    absl::StrCat("the image ", image_id,
                                 " is not in the Recycle Bin (never deregistered, restored "
                                 "already, or its retention period has ended)"));
  }
  image->recycle_bin.reset();
  STRATA_RETURN_IF_ERROR(SaveImage(*image));
  return *image;
}

uint64_t ImageRegistry::SweepRecycledImages(uint64_t now_micros) {
  uint64_t next = 0;
  absl::Status status = [&]() -> absl::Status {
    STRATA_ASSIGN_OR_RETURN(util::SharedHold shared, region_.EnterShared());
    absl::MutexLock lock(&mu_);
    STRATA_ASSIGN_OR_RETURN(std::vector<ImageInfo> all, ScanImages());
    for (const ImageInfo& image : all) {
      if (!image.recycle_bin.has_value()) continue;
      if (image.recycle_bin->exit_micros > now_micros) {
        next = next == 0 ? image.recycle_bin->exit_micros
                         : std::min(next, image.recycle_bin->exit_micros);
        continue;
      }
      STRATA_RETURN_IF_ERROR(RemoveImageLocked(image));
      STRATA_LOG(kInfo, "image ", image.id, ": its Recycle Bin retention ended; deregistered");
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) {
    STRATA_LOG(kWarning, "the Recycle Bin's sweep of images failed: ", status.ToString());
  }
  return next;
}

}  // namespace strata::image
