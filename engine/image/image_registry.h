#pragma once
// ImageRegistry: a region's images, image settings and instances, kept in the region's catalog
// (keys "i/...", meta/schema.h) and built on the public Region API for volumes and snapshots.
// Snapshots an image references are guarded by RegionImpl::DeleteSnapshot, and an image's
// references are written with RegionImpl::CommitWithSnapshots, so neither can slip past the
// other.

#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "meta/catalog.h"
#include "region/region_impl.h"
#include "strata/image.h"

namespace strata::image {

class ImageRegistry final : public Images {
 public:
  // `region` and `hypervisor` (nullable) must outlive the registry. Instances that were running
  // when the process last stopped are marked stopped (their VMs are gone).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<ImageRegistry>> Open(
      region::RegionImpl& region, Hypervisor* hypervisor);

  // Ends the VMs of running instances first: their exit callbacks need the registry.
  ~ImageRegistry() override;

  absl::StatusOr<ImageInfo> RegisterImage(const ImageInfo& request) override;
  absl::StatusOr<ImageInfo> DescribeImage(const std::string& image_id) override;
  absl::StatusOr<std::vector<ImageInfo>> ListImages() override;
  absl::StatusOr<ImageInfo> UpdateImage(
      const std::string& image_id, const std::function<absl::Status(ImageInfo&)>& change) override;
  absl::StatusOr<std::vector<std::string>> DeregisterImage(const std::string& image_id,
                                                           bool delete_snapshots) override;
  absl::StatusOr<std::optional<std::string>> ImageUsingSnapshot(
      const std::string& snapshot_id) override;
  // image_recycle_bin.cc
  absl::StatusOr<std::vector<ImageInfo>> ListRecycledImages() override;
  absl::StatusOr<ImageInfo> RestoreImageFromRecycleBin(const std::string& image_id) override;
  absl::StatusOr<ImageSettings> GetSettings(const std::string& account) override;
  absl::Status SetSettings(const std::string& account, const ImageSettings& settings) override;

  absl::StatusOr<InstanceInfo> RunInstance(const LaunchRequest& request) override;
  absl::StatusOr<InstanceInfo> DescribeInstance(const std::string& instance_id) override;
  absl::StatusOr<std::vector<InstanceInfo>> ListInstances() override;
  absl::StatusOr<InstanceInfo> StopInstance(const std::string& instance_id, bool force) override;
  absl::StatusOr<InstanceInfo> StartInstance(const std::string& instance_id) override;
  absl::Status RebootInstance(const std::string& instance_id) override;
  absl::StatusOr<InstanceInfo> TerminateInstance(const std::string& instance_id) override;
  absl::Status TagInstance(const std::string& instance_id,
                           const std::map<std::string, std::string>& set,
                           const std::vector<std::string>& remove) override;
  absl::StatusOr<ImageInfo> CreateImage(const std::string& instance_id,
                                        const ImageInfo& request) override;
  absl::StatusOr<std::string> ConsoleOutput(const std::string& instance_id) override;
  absl::StatusOr<ImageInfo> CopyImage(const std::string& source_image_id, const ImageInfo& request,
                                      bool encrypted, const std::string& kms_key_id,
                                      bool copy_tags) override;
  absl::StatusOr<ImageInfo> RegisterImageCopy(const ImageInfo& source,
                                              const std::string& source_region,
                                              const ImageInfo& request, bool copy_tags,
                                              const SnapshotCopier& copy_snapshot) override;
  absl::Status StoreImage(const std::string& image_id, const std::string& dir,
                          const std::string& object_key, const std::string& account,
                          const std::function<void(int)>& progress) override;
  absl::StatusOr<ImageInfo> RestoreImage(const std::string& dir, const std::string& object_key,
                                         const std::string& name, const std::string& account,
                                         const std::map<std::string, std::string>& tags) override;

 private:
  ImageRegistry(region::RegionImpl& region, Hypervisor* hypervisor);
  absl::Status RecoverInstances();

  // Validates `request` and fills in what EC2 derives (sizes, encryption); `allow_pending`
  // admits pending snapshots (CreateImage's own).
  absl::Status ValidateImage(ImageInfo& image, bool allow_pending);
  absl::StatusOr<ImageInfo> RegisterLocked(ImageInfo image, bool allow_pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::vector<ImageInfo>> ScanImages();  // As stored, unresolved.
  // An image, unless it is in the Recycle Bin (kNotFound, as for an unknown one).
  absl::StatusOr<ImageInfo> LoadImage(const std::string& image_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An image, in the bin or not.
  absl::StatusOr<ImageInfo> LoadAnyImage(const std::string& image_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes an image's record and its snapshot references (deregistration for good).
  absl::Status RemoveImageLocked(const ImageInfo& image) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // image_recycle_bin.cc: deregisters the images whose retention ended by `now_micros`; returns
  // when the next one's does (0: none is in the bin).
  uint64_t SweepRecycledImages(uint64_t now_micros) ABSL_LOCKS_EXCLUDED(mu_);
  // A pending image whose snapshots all completed becomes available (failed if one failed).
  absl::StatusOr<ImageInfo> Resolve(ImageInfo image) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SaveImage(const ImageInfo& image) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<InstanceInfo> LoadInstance(const std::string& instance_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StoreInstance(const InstanceInfo& instance) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An instance another node of the region launched (RADOS), as that node recorded it.
  struct OtherNodesInstance {
    std::string node;
    InstanceInfo instance;
  };
  absl::StatusOr<std::optional<OtherNodesInstance>> FindOnOtherNodes(
      const std::string& instance_id);
  // Sets an instance's state (and reason), unless it is terminated.
  absl::StatusOr<InstanceInfo> SetInstanceState(const std::string& instance_id, InstanceState state,
                                                const std::string& reason) ABSL_LOCKS_EXCLUDED(mu_);
  // Boots the instance's VM (or marks it running without a hypervisor).
  absl::StatusOr<InstanceInfo> Boot(const InstanceInfo& instance) ABSL_LOCKS_EXCLUDED(mu_);
  void OnVmExit(const std::string& instance_id, bool clean, const std::string& reason)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Stops the VM if one runs; returns once it has exited.
  absl::Status StopVm(const std::string& instance_id, bool force) ABSL_LOCKS_EXCLUDED(mu_);
  // The mapping an instance of `owner` launches with: the image's, with `overrides` applied by
  // device (a device the image lacks may name a snapshot `owner` may use).
  absl::StatusOr<std::vector<BlockDeviceMapping>> LaunchMapping(
      const ImageInfo& image, const std::vector<BlockDeviceMapping>& overrides,
      const std::string& owner) const;
  std::string NewId(const std::string& prefix, absl::string_view key_prefix);

  region::RegionImpl& region_;
  meta::Catalog& catalog_;
  Hypervisor* const hypervisor_;
  // Serializes changes to images, settings and instances. Never held across a VM start or stop
  // (the exit callback takes it). Lock order: mu_ before the region's.
  absl::Mutex mu_;
  // Instances whose VM Strata itself is stopping: their exit is user-initiated.
  std::set<std::string> stopping_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::image
