#pragma once
// Machine images (AMIs) and instances. An image is a named set of snapshot references plus a
// block device mapping; an instance is the volumes made from an image's snapshots, attached
// (and so exported over NBD) under the instance's id, and a VM booted from them when the Store
// has a Hypervisor. Errors carry EC2's error code (AwsErrorCode) beside the Status code.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "strata/aws_error.h"
#include "strata/data_protection.h"
#include "strata/snapshot.h"

namespace strata {

struct EbsBlockDevice {
  std::string snapshot_id;       // Empty: a blank volume of volume_size_gib.
  uint64_t volume_size_gib = 0;  // 0: the snapshot's size.
  std::string volume_type = "gp3";
  uint64_t iops = 0;
  uint64_t throughput = 0;
  bool delete_on_termination = true;
  bool encrypted = false;
  std::string kms_key_id;
};

// One entry of a block device mapping: an EBS volume, an instance store volume (virtual name
// "ephemeralN"), or NoDevice (suppresses the image's entry for that device at launch).
struct BlockDeviceMapping {
  std::string device_name;  // "/dev/sda1", "/dev/xvdf", ...
  std::string virtual_name;
  bool no_device = false;
  std::optional<EbsBlockDevice> ebs;
};

enum class ImageState { kPending, kAvailable, kFailed, kDeregistered, kDisabled };
const char* ImageStateName(ImageState state);

struct ImageInfo {
  std::string id;  // "ami-" and 17 hex digits.
  std::string name;
  std::string description;
  std::string owner;                        // Account id.
  std::string architecture = "x86_64";      // x86_64 or arm64.
  std::string virtualization_type = "hvm";  // hvm or paravirtual.
  std::string boot_mode;                    // legacy-bios, uefi, uefi-preferred, or empty.
  std::string root_device_name = "/dev/sda1";
  std::string kernel_id;   // aki-..., paravirtual only.
  std::string ramdisk_id;  // ari-..., paravirtual only.
  bool ena_support = false;
  std::string tpm_support;   // "v2.0" or empty.
  std::string imds_support;  // "v2.0" or empty.
  std::map<std::string, std::string> tags;
  std::vector<BlockDeviceMapping> mappings;
  ImageState state = ImageState::kPending;
  std::string state_reason;
  uint64_t creation_micros = 0;
  // launchPermission: account ids, and "all" when public.
  std::vector<std::string> launch_permissions;
  uint64_t deprecation_micros = 0;  // 0: not deprecated.
  bool deregistration_protection = false;
  bool protection_cooldown = false;     // Protection was enabled WithCooldown.
  uint64_t protected_until_micros = 0;  // Disabled with cooldown: protected until then.
  std::string source_image_id;          // Lineage of copies.
  std::string source_image_region;
  std::string source_instance_id;  // CreateImage.
  uint64_t last_launched_micros = 0;
  // Set while the image waits in the Recycle Bin (deregistered under a rule): hidden from every
  // call but the bin's, its snapshots still referenced.
  std::optional<RecycleBinEntry> recycle_bin;
  bool is_public() const;
  // The owner, or an account its launch permissions name (or everyone when public).
  bool launchable_by(const std::string& account) const;
};

// An account's image governance settings in a region.
struct ImageSettings {
  // Image block public access: on (the default) refuses making an image public.
  bool block_public_access = true;
  // Allowed images: "disabled", "enabled" (only allowed images are described and launched) or
  // "audit-mode" (everything works; DescribeImages says which images are allowed).
  std::string allowed_images_state = "disabled";
  // Each criterion is a list of image providers: "amazon", "aws-marketplace",
  // "aws-backup-vault", "none" (the account's own images) or account ids. An image is allowed
  // when any criterion names its provider.
  std::vector<std::vector<std::string>> image_criteria;
};

// Whether `image` is allowed by `settings` for `account`. Images of the account itself are
// always allowed.
bool ImageAllowed(const ImageSettings& settings, const ImageInfo& image,
                  const std::string& account);

enum class InstanceState { kPending, kRunning, kStopping, kStopped, kShuttingDown, kTerminated };
const char* InstanceStateName(InstanceState state);
int InstanceStateCode(InstanceState state);  // EC2's numeric code: 0, 16, 64, 80, 32, 48.

struct InstanceVolume {
  std::string device_name;
  std::string volume_id;
  bool delete_on_termination = true;
};

struct InstanceType {
  std::string name;
  int vcpus = 1;
  uint64_t memory_mib = 512;
};
// The instance types Strata knows (t3.nano ... m5.xlarge), or nullopt.
std::optional<InstanceType> FindInstanceType(const std::string& name);
std::vector<InstanceType> InstanceTypes();

struct InstanceInfo {
  std::string id;  // "i-" and 17 hex digits.
  std::string image_id;
  std::string owner;
  std::string instance_type;
  InstanceState state = InstanceState::kPending;
  std::string state_reason;  // Why it last stopped or failed to start.
  uint64_t launch_micros = 0;
  std::map<std::string, std::string> tags;
  std::string user_data;  // Raw bytes (not base64).
  std::string root_device_name;
  std::string architecture;
  std::vector<InstanceVolume> volumes;  // In mapping order; the VM's disks in that order.
  std::string hypervisor;               // What runs it ("qemu-system-x86_64 (tcg)"), or "".
};

struct LaunchRequest {
  std::string image_id;
  std::string owner;  // The launching account.
  std::string instance_type = "t3.micro";
  // Overrides of the image's mapping, by device name (NoDevice removes one).
  std::vector<BlockDeviceMapping> mappings;
  std::map<std::string, std::string> tags;
  std::map<std::string, std::string> volume_tags;
  std::string user_data;
};

// Runs VMs for instances. Implemented outside the engine (QEMU in vm/); the Store uses the one
// in StoreOptions::hypervisor, if any. Thread-safe.
class Hypervisor {
 public:
  virtual ~Hypervisor() = default;
  struct Machine {
    std::string instance_id;
    InstanceType type;
    std::vector<std::string> volume_ids;  // Disks, in order (NBD exports of the volumes).
    std::string user_data;
    std::string account;  // The owner (for export access).
  };
  // Called (on any thread) when a machine's VM exits, with why.
  // `clean`: the guest powered off (QEMU exited 0); else the VM failed, and `reason` says how.
  using ExitFn =
      std::function<void(const std::string& instance_id, bool clean, const std::string& reason)>;
  virtual std::string name() const = 0;
  // Boots `machine`; returns once the VM process is started (a VM that then fails is reported
  // through `on_exit`).
  [[nodiscard]] virtual absl::Status Start(const Machine& machine, ExitFn on_exit) = 0;
  // Asks the VM to power off, then ends it after a grace period (at once with `force`). Returns
  // when it has exited; `on_exit` has been called by then.
  [[nodiscard]] virtual absl::Status Stop(const std::string& instance_id, bool force) = 0;
  // The serial console's output so far ("" before the first boot).
  [[nodiscard]] virtual absl::StatusOr<std::string> Console(const std::string& instance_id) = 0;
};

// A region's images and instances. Thread-safe.
class Images {
 public:
  virtual ~Images() = default;

  // Registers an image (`request.id`, state and times are ignored). Validated as EC2 does:
  // a valid unique name per owner, unique device names, the root device mapped, Ebs snapshots
  // the owner may use with sizes at least theirs.
  [[nodiscard]] virtual absl::StatusOr<ImageInfo> RegisterImage(const ImageInfo& request) = 0;
  // An image (pending images whose snapshots have all completed become available here).
  [[nodiscard]] virtual absl::StatusOr<ImageInfo> DescribeImage(const std::string& image_id) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<ImageInfo>> ListImages() = 0;
  // Changes an image atomically: `change` edits a copy, which is stored if it returns OK.
  [[nodiscard]] virtual absl::StatusOr<ImageInfo> UpdateImage(
      const std::string& image_id, const std::function<absl::Status(ImageInfo&)>& change) = 0;
  // Deregisters an image (refused while deregistration protection holds); its snapshots are
  // deleted too with `delete_snapshots` (those no other image uses). Returns the deleted ids.
  // An image a Recycle Bin rule of its owner covers goes to the bin instead, with its snapshots
  // (none is deleted), until its retention ends.
  [[nodiscard]] virtual absl::StatusOr<std::vector<std::string>> DeregisterImage(
      const std::string& image_id, bool delete_snapshots) = 0;
  // The images in the Recycle Bin (ImageInfo::recycle_bin set), oldest first.
  [[nodiscard]] virtual absl::StatusOr<std::vector<ImageInfo>> ListRecycledImages() = 0;
  // Brings an image back from the bin. kNotFound when it is not in it.
  [[nodiscard]] virtual absl::StatusOr<ImageInfo> RestoreImageFromRecycleBin(
      const std::string& image_id) = 0;
  // The image that references a snapshot, if any.
  [[nodiscard]] virtual absl::StatusOr<std::optional<std::string>> ImageUsingSnapshot(
      const std::string& snapshot_id) = 0;

  [[nodiscard]] virtual absl::StatusOr<ImageSettings> GetSettings(const std::string& account) = 0;
  [[nodiscard]] virtual absl::Status SetSettings(const std::string& account,
                                                 const ImageSettings& settings) = 0;

  // Launches one instance: checks the launch permission and the allowed-images setting,
  // creates a volume per Ebs mapping from its snapshot (O(1)), attaches them under the new
  // instance id, and boots the VM when there is a Hypervisor.
  [[nodiscard]] virtual absl::StatusOr<InstanceInfo> RunInstance(const LaunchRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<InstanceInfo> DescribeInstance(
      const std::string& instance_id) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<InstanceInfo>> ListInstances() = 0;
  // StopInstances / StartInstances / RebootInstances / TerminateInstances. Stop waits for the
  // VM to exit; terminate then detaches every volume and deletes those marked
  // delete_on_termination.
  [[nodiscard]] virtual absl::StatusOr<InstanceInfo> StopInstance(const std::string& instance_id,
                                                                  bool force) = 0;
  [[nodiscard]] virtual absl::StatusOr<InstanceInfo> StartInstance(
      const std::string& instance_id) = 0;
  [[nodiscard]] virtual absl::Status RebootInstance(const std::string& instance_id) = 0;
  [[nodiscard]] virtual absl::StatusOr<InstanceInfo> TerminateInstance(
      const std::string& instance_id) = 0;
  [[nodiscard]] virtual absl::Status TagInstance(const std::string& instance_id,
                                                 const std::map<std::string, std::string>& set,
                                                 const std::vector<std::string>& remove) = 0;
  // CreateImage: snapshots every volume of the instance at one point in time (crash-consistent,
  // NoReboot semantics) and registers an image with the instance's mapping; it is pending until
  // the snapshots complete. `request` gives name, description, tags and the owner.
  [[nodiscard]] virtual absl::StatusOr<ImageInfo> CreateImage(const std::string& instance_id,
                                                              const ImageInfo& request) = 0;
  // Store and restore (CreateStoreImageTask / CreateRestoreImageTask): an image as a bundle of
  // files in `dir` (a local stand-in for an S3 bucket): `object_key` is its XML manifest, the
  // parts are `object_key`.part.NNN (docs/images.md). The data is compressed (zstd), encrypted
  // (AES-256-GCM under a data key wrapped by `account`'s default EBS KMS key) and split into
  // 10 MiB parts; the manifest lists each part's SHA-256 and is signed (HMAC-SHA256).
  // `progress` (0..100) is called as the bundle is written.
  [[nodiscard]] virtual absl::Status StoreImage(const std::string& image_id, const std::string& dir,
                                                const std::string& object_key,
                                                const std::string& account,
                                                const std::function<void(int)>& progress) = 0;
  // Verifies the signature and every part's digest before anything else (an error names the
  // bad part), then restores the data into new snapshots and registers an image named `name`
  // (the manifest's when empty) owned by `account`. Nothing is registered on any failure.
  [[nodiscard]] virtual absl::StatusOr<ImageInfo> RestoreImage(
      const std::string& dir, const std::string& object_key, const std::string& name,
      const std::string& account, const std::map<std::string, std::string>& tags) = 0;
  // CopyImage within the region: each snapshot of the mapping is copied (CopySnapshot: O(1)
  // with the same key; `encrypted` or another `kms_key_id` re-encrypt, and the image is pending
  // until those copies complete) and a new image is registered for `request.owner` with
  // SourceImageId and SourceImageRegion; launch permissions are not copied, tags only with
  // `copy_tags` (merged with `request.tags`). The caller must own or be allowed to launch it.
  [[nodiscard]] virtual absl::StatusOr<ImageInfo> CopyImage(const std::string& source_image_id,
                                                            const ImageInfo& request,
                                                            bool encrypted,
                                                            const std::string& kms_key_id,
                                                            bool copy_tags) = 0;
  // Registers here a copy of `source`, an image of `source_region` as that region describes
  // it (the caller checked that `request.owner` may launch it): `copy_snapshot` copies each
  // snapshot of the mapping into this region (given the source snapshot id and a description)
  // and the image is pending until those copies complete, failed if one fails. Lineage, tags
  // and launch permissions as CopyImage. CopyImage is this with Region::CopySnapshot.
  using SnapshotCopier = std::function<absl::StatusOr<SnapshotInfo>(
      const std::string& source_snapshot_id, const std::string& description)>;
  [[nodiscard]] virtual absl::StatusOr<ImageInfo> RegisterImageCopy(
      const ImageInfo& source, const std::string& source_region, const ImageInfo& request,
      bool copy_tags, const SnapshotCopier& copy_snapshot) = 0;
  // The serial console output of an instance.
  [[nodiscard]] virtual absl::StatusOr<std::string> ConsoleOutput(
      const std::string& instance_id) = 0;
};

}  // namespace strata
