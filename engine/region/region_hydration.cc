// RegionImpl: hydration of volumes made from snapshots (a rate-limited slice of chunks, then a
// wait).
#include "absl/strings/str_cat.h"
#include "region/region_impl.h"
#include "util/log.h"
#include "util/status_macros.h"

namespace strata::region {

namespace {

// Hydration copies a slice of chunks, then waits this long; the rate sets the slice size.
inline constexpr uint64_t kHydrateSliceMicros = 100 * 1000;
inline constexpr uint64_t kHydrateUnlimitedSliceChunks = 256;

}  // namespace

absl::Status RegionImpl::StartHydration(const std::string& volume_id, uint64_t bytes_per_second) {
  absl::MutexLock lock(&mu_);
  STRATA_ASSIGN_OR_RETURN(VolumeImpl * volume, FindVolumeLocked(volume_id));
  meta::VolumeRecord r = volume->record();
  if (r.base_snapshot_id.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("volume ", volume_id, " was not created from a snapshot"));
  }
  const bool already = r.hydrating;
  volume->set_record_fields(r.tags, true, bytes_per_second);
  STRATA_RETURN_IF_ERROR(PersistVolume(*volume));
  if (!already) tasks_.Push({Task::Kind::kHydrate, volume_id, nullptr, 0});
  return absl::OkStatus();
}

std::optional<Task> RegionImpl::HydrateStep(const std::string& volume_id) {
  // mu_ is held across this slice's I/O so the volume cannot be deleted under it; slices are
  // small (kHydrateUnlimitedSliceChunks at most).
  absl::MutexLock lock(&mu_);
  absl::StatusOr<VolumeImpl*> found = FindVolumeLocked(volume_id);
  if (!found.ok() || !(*found)->record().hydrating) return std::nullopt;
  VolumeImpl* volume = *found;
  const uint64_t rate = volume->record().hydrate_bytes_per_second;
  const uint64_t slice_chunks = std::min<uint64_t>(
      kHydrateUnlimitedSliceChunks,
      rate == 0 ? kHydrateUnlimitedSliceChunks
                : std::max<uint64_t>(1, rate * kHydrateSliceMicros / 1000000 / chunk_size_bytes_));
  absl::StatusOr<uint64_t> copied = volume->Hydrate(slice_chunks);
  absl::Status status = copied.status();
  if (status.ok()) status = volume->Flush();
  if (!status.ok()) {
    STRATA_LOG(kError, "volume ", volume_id, ": hydration paused: ", status.ToString());
    return Task{.kind = Task::Kind::kHydrate,
                .id = volume_id,
                .not_before_micros = env_->NowMicros() + 10 * kHydrateSliceMicros,
                .retry = true};
  }
  if (*copied > 0) {
    return Task{Task::Kind::kHydrate, volume_id, nullptr, env_->NowMicros() + kHydrateSliceMicros};
  }
  const meta::VolumeRecord r = volume->record();
  volume->set_record_fields(r.tags, false, r.hydrate_bytes_per_second);
  if (absl::Status s = PersistVolume(*volume); !s.ok()) {
    STRATA_LOG(kError, "volume ", volume_id, ": recording hydration: ", s.ToString());
  }
  return std::nullopt;
}

}  // namespace strata::region
