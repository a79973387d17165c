#pragma once
// The engine's entry point: a Store on a data directory, holding Regions of volumes and
// snapshots.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "strata/ceph_backend.h"
#include "strata/data_protection.h"
#include "strata/env.h"
#include "strata/image.h"
#include "strata/kms.h"
#include "strata/secret.h"
#include "strata/snapshot.h"
#include "strata/transfer.h"
#include "strata/volume.h"

namespace strata {

inline constexpr uint64_t kChunkSizeBytesDefault = 64 * 1024;

struct StoreOptions {
  // Where heads and segments live. Not owned; must outlive the Store. Default: Env::Default().
  // The catalog (RocksDB) always lives on the real file system under the data directory.
  Env* env = nullptr;
  // Chunk size of a new store: a power of two from 4 KiB to 4 MiB. Fixed at creation; an
  // existing store keeps its own. Default: 64 KiB.
  uint64_t chunk_size_bytes = kChunkSizeBytesDefault;
  // Compress chunks with zstd before storing them. Default: false.
  bool compression = false;
  // Create the store when the directory holds none. Default: true.
  bool create_if_missing = true;
  // The region created with a new store. Default: "local-1".
  std::string default_region = "local-1";
  // Run background work (snapshot ingest, hydration, deletion, GC). Tests turn it off to step
  // it by hand with Region::RunBackgroundWork. Default: true.
  bool background_work = true;
  // The KMS root key (32 bytes) that wraps every region's key material. Empty: the store opens,
  // but no KMS key can be used and nothing encrypted can be read; errors say so.
  SecretBytes kms_root_key;
  // Runs the VMs of instances. Not owned; must outlive the Store. Null: an instance is its
  // attached volumes (no VM).
  Hypervisor* hypervisor = nullptr;
  // Regions served by other stratad processes: name -> "host:port" of their transfer listener
  // (Store::ServeTransfer). Copies from them cross a real socket.
  std::map<std::string, std::string> peer_regions;
  // TLS pre-shared keys for the transfer protocol between processes (psktool's IDENTITY:HEXKEY
  // lines; the same file on both sides): needed by peer_regions and by ServeTransfer. A peer
  // connection uses the line named like the source region, else the first.
  std::string transfer_psk_file;
  // The links between regions: key "" is the default, "FROM:TO" one direction of a pair.
  std::map<std::string, LinkModel> links;
  // How long a copy keeps retrying an unreachable source before it fails. Default: 10 min.
  uint64_t copy_retry_window_ms = 600'000;
  // Manifest entries per catalog write when a snapshot completes (its last write makes it
  // visible; a failure part way is undone). Tests make it small so that a crash falls between
  // writes. Default: 4096 (about 1 MB per write).
  size_t manifest_piece_entries = 4096;
  // Holds each volume's NBD I/O to its type's rates (docs/qos.md), as EBS does; false only
  // counts (benchmarks that want raw speed: stratad --qos off). A volume tagged strata:qos=off
  // is not held either. Default: true.
  bool qos = true;
  // How long a ModifyVolume takes as DescribeVolumesModifications shows it: "modifying" for
  // `modifying_ms`, then "optimizing" for the volume's size at `optimize_bytes_per_second`,
  // then "completed" (another ModifyVolume waits for that). The new size and rates apply at
  // once. Default: 2 s, then 1 GiB/s (an 8 GiB volume completes in 10 s).
  struct ModificationTiming {
    uint64_t modifying_ms = 2000;
    uint64_t optimize_bytes_per_second = uint64_t{1} << 30;
  };
  ModificationTiming volume_modification;
  // Where regions' catalogs and chunks live. Empty: the data directory (RocksDB and segment
  // files), the default; set: the RADOS backend.
  std::optional<CephBackendOptions> ceph;
  // RADOS backend: new volumes keep their heads (live data) in the cluster, so that any node
  // can serve them and take them over when their node dies (docs/ceph.md, "Volumes on RADOS");
  // false keeps them in this node's data directory (faster, but bound to this node).
  // Default: true.
  bool volume_heads_in_rados = true;
  // RADOS backend: the term of the lease by which a node holds a RADOS-headed volume's writer
  // lock (renewed every third of it). A node that dies holds its volumes this long; then
  // another node may take them over. Default: 30 s.
  uint32_t volume_lease_seconds = 30;
  // How long one of AWS's days lasts (an hour is a 24th of it) for the periods of data
  // protection: Recycle Bin retention and rule unlock delays, snapshot lock durations and
  // cooling-off periods. Rehearsals and tests shorten it; dates stay wall-clock times.
  // Default: 86400.
  uint64_t seconds_per_day = 86400;
  // How long enabling fast snapshot restore takes (DescribeFastSnapshotRestores): "enabling"
  // for `enabling_ms`, "optimizing" for the snapshot's size at `optimize_bytes_per_second`
  // (AWS: an hour per TiB), then "enabled"; a disable is "disabling" for `disabling_ms`.
  // Default: 1 s, 1 GiB/s, 1 s.
  struct FastRestoreTiming {
    uint64_t enabling_ms = 1000;
    uint64_t optimize_bytes_per_second = uint64_t{1} << 30;
    uint64_t disabling_ms = 1000;
  };
  FastRestoreTiming fast_restore;
  // The archive tier (ModifySnapshotTier): where archived snapshots go, and how long archival
  // and restore take. An archival completes `fixed_ms` plus the snapshot's size at
  // `bytes_per_second` after it was asked (AWS: hours to days), a restore likewise.
  // Default: a directory "archive" in the region's directory, 2 s, 1 GiB/s.
  struct ArchiveTier {
    // An archive directory of its own (each region in a subdirectory named after it).
    std::string dir;
    // S3 instead (the Ceph backend's radosgw): endpoint "http://HOST:PORT", bucket, SigV4
    // region and keys; each region's objects under "<region>/". Every node of a RADOS region
    // must name the same bucket.
    std::string s3_endpoint;
    std::string s3_bucket;
    std::string s3_region = "default";
    std::string s3_access_key_id;
    std::string s3_secret_access_key;
    std::string s3_prefix;  // Before "<region>/" in every key (stores sharing a bucket).
    uint64_t fixed_ms = 2000;
    uint64_t bytes_per_second = uint64_t{1} << 30;
    // About how many bytes of chunks an archive object holds (at least one chunk). Memory of
    // an archival or a restore is about twice this. Default: 16 MiB.
    uint64_t part_bytes = 16 << 20;
  };
  ArchiveTier archive;
};

struct CreateVolumeRequest {
  // Size in bytes: a multiple of 4096, at most 64 TiB. With snapshot_id, 0 means the
  // snapshot's size, and a smaller size is an error.
  uint64_t size_bytes = 0;
  // Empty: a blank volume. When the owner enabled fast snapshot restore for it and a credit is
  // left, the volume holds every chunk when this returns (VolumeInfo::fast_restored); else it
  // reads through the snapshot (lazily, as EBS restores).
  std::string snapshot_id;
  std::map<std::string, std::string> tags;
  std::string owner;  // Account id of the creator. Default: none.
  // Encryption (the owner's KMS, as AWS's rules say): encrypted when `encrypted`, when the
  // snapshot is, or when the owner turned EBS encryption by default on. `kms_key_id` (a key
  // reference) picks the key; empty: the snapshot's key, else the owner's default EBS key. A key
  // other than the snapshot's means a new data key (a new dedup domain).
  bool encrypted = false;
  std::string kms_key_id;
  // gp2, gp3, io1, io2, st1, sc1 or standard, with its provisioned IOPS and throughput (MiB/s;
  // 0: the type's default), checked against AWS's rules for the type (docs/qos.md); errors
  // carry EC2's code. They set the volume's NBD rates (StoreOptions::qos).
  std::string volume_type = "gp3";
  uint64_t iops = 0;
  uint64_t throughput = 0;
};

struct CreateSnapshotRequest {
  std::string volume_id;
  std::string description;
  std::map<std::string, std::string> tags;
  std::string owner;  // Account id of the creator. Default: none.
  // CopySnapshot only: encrypt the copy (an unencrypted source), or re-encrypt it under
  // `kms_key_id` (a key other than the source's means a new data key and a full copy).
  bool encrypted = false;
  std::string kms_key_id;
  // StartDirectSnapshot only: the snapshot stays open across a restart of the store (its
  // builder's flushed blocks are kept) instead of failing; its writer must complete or abort it.
  bool survive_restart = false;
};

// A copy of a snapshot from another region into this one (Store::CopySnapshotAcrossRegions).
struct CrossRegionCopyRequest {
  std::string source_region;
  std::string source_snapshot_id;
  // Description, tags, owner (the caller's account, which must own the source snapshot or have
  // it shared with it), encrypted and kms_key_id of the copy. An encrypted source is always
  // copied encrypted, under kms_key_id or the destination region's default key.
  CreateSnapshotRequest request;
  uint32_t completion_minutes = 0;  // 0, or 15 to 2880 (CompletionDurationMinutes).
};

// A copy of an image from another region (Store::CopyImageAcrossRegions).
struct CrossRegionImageCopyRequest {
  std::string source_region;
  std::string source_image_id;
  ImageInfo request;  // Name, description, tags and owner (the caller's account) of the copy.
  bool encrypted = false;
  std::string kms_key_id;
  bool copy_tags = false;
};

// An account: resources belong to the account that created them. Requests are mapped to an
// account by the access key they are signed with.
struct Account {
  std::string id;  // 12 digits.
  std::string name;
  std::string access_key_id;      // "AKIA" and 16 characters.
  std::string secret_access_key;  // 40 characters.
};

// Statistics of a region's chunk store.
struct StoreStats {
  uint64_t chunk_count = 0;             // Distinct stored chunks.
  uint64_t referenced_chunk_count = 0;  // Sum of refcounts.
  uint64_t stored_bytes = 0;            // Bytes of live chunk records.
  uint64_t segment_file_bytes = 0;      // Bytes of segment files (live and dead).
  uint64_t segment_count = 0;
};

// An account's EBS encryption defaults in a region (EnableEbsEncryptionByDefault and friends).
struct EbsEncryptionDefaults {
  bool enabled = false;
  std::string kms_key_id;  // Empty: alias/aws/ebs.
};

// A region: its own volumes, snapshots and chunk store. Owned by the Store. Thread-safe.
class Region {
 public:
  virtual ~Region() = default;
  virtual const std::string& name() const = 0;
  virtual uint64_t chunk_size_bytes() const = 0;
  // The region's key management service.
  virtual Kms& kms() = 0;
  // The region's machine images and instances.
  virtual Images& images() = 0;
  [[nodiscard]] virtual absl::StatusOr<EbsEncryptionDefaults> GetEbsEncryptionDefaults(
      const std::string& account) = 0;
  // kNotFound (a KMS error) when the key does not exist for the account.
  [[nodiscard]] virtual absl::Status SetEbsEncryptionDefaults(
      const std::string& account, const EbsEncryptionDefaults& defaults) = 0;

  [[nodiscard]] virtual absl::StatusOr<VolumeInfo> CreateVolume(
      const CreateVolumeRequest& request) = 0;
  // Returns the live volume; valid until it is deleted or the Store closes.
  [[nodiscard]] virtual absl::StatusOr<Volume*> GetVolume(const std::string& volume_id) = 0;
  // Returns the volume pinned: DeleteVolume refuses it (kFailedPrecondition) until every pin is
  // destroyed. For front ends that hold a volume across calls (NBD connections).
  // REQUIRES: pins are destroyed before the Store.
  class VolumePin {
   public:
    virtual ~VolumePin() = default;
    virtual Volume& volume() = 0;
  };
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<VolumePin>> PinVolume(
      const std::string& volume_id) = 0;
  [[nodiscard]] virtual absl::StatusOr<VolumeInfo> DescribeVolume(const std::string& volume_id) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<VolumeInfo>> ListVolumes() = 0;
  // Attaches a volume to `instance_id` (an instance, or a local attachment group named like one)
  // as `device`. kFailedPrecondition if it is attached already or the device is taken.
  [[nodiscard]] virtual absl::Status AttachVolume(const std::string& volume_id,
                                                  const std::string& instance_id,
                                                  const std::string& device) = 0;
  // Makes this node serve a volume whose head is in RADOS (docs/ceph.md, "Volumes on RADOS"):
  // takes its writer lock, fencing (blocklisting) a previous holder whose lease lapsed, and
  // moves it here. A volume another live node holds is asked for, and handed over if nothing
  // uses it there; else kFailedPrecondition (VolumeInUse), unless `force`: the holder is
  // blocklisted in the cluster (its late writes are refused) and loses the volume. Writes it
  // had not flushed may be lost; every flushed write is kept.
  [[nodiscard]] virtual absl::StatusOr<VolumeInfo> TakeOverVolume(const std::string& volume_id,
                                                                  bool force) = 0;
  // Detaches a volume (flushing it first). With a non-empty `instance_id`, it must match.
  [[nodiscard]] virtual absl::Status DetachVolume(const std::string& volume_id,
                                                  const std::string& instance_id) = 0;
  // Snapshots several volumes at one point in time (crash-consistent across them): writes
  // completed before the call are in every snapshot, none begun after. All or nothing.
  [[nodiscard]] virtual absl::StatusOr<std::vector<SnapshotInfo>> CreateSnapshots(
      const std::vector<CreateSnapshotRequest>& requests) = 0;
  // Copies a completed snapshot within the region in O(1): the copy shares the source's data
  // (it is the source's child with an empty delta), so deleting the source keeps it intact.
  // `request.volume_id` is ignored.
  [[nodiscard]] virtual absl::StatusOr<SnapshotInfo> CopySnapshot(
      const std::string& source_snapshot_id, const CreateSnapshotRequest& request) = 0;
  // EBS direct snapshots, written block by block. StartDirectSnapshot makes a pending snapshot
  // backed by a hidden builder volume of `size_bytes` (from `parent_snapshot_id` when given, so
  // unwritten blocks keep the parent's data); returns the snapshot and the builder's id, which
  // takes the blocks through GetVolume. CompleteDirectSnapshot freezes the builder and ingests
  // it like any snapshot; the builder is deleted afterwards. A direct snapshot not completed
  // before a stop fails, unless it asked to survive the restart (`survive_restart`).
  struct DirectSnapshot {
    SnapshotInfo snapshot;
    std::string builder_volume_id;
  };
  [[nodiscard]] virtual absl::StatusOr<DirectSnapshot> StartDirectSnapshot(
      uint64_t size_bytes, const std::string& parent_snapshot_id,
      const CreateSnapshotRequest& request) = 0;
  [[nodiscard]] virtual absl::Status CompleteDirectSnapshot(const std::string& snapshot_id) = 0;
  // Sets the progress a direct snapshot in progress shows (0 to 99) until it is completed;
  // its writer knows it (a cross-region copy: the share of chunks arrived). Unknown ids: no-op.
  virtual void ReportDirectSnapshotProgress(const std::string& snapshot_id, int percent) = 0;
  // The direct snapshots this node holds open: those reopened after a restart (survive_restart)
  // and any started since. Another node's (RADOS) are not listed.
  virtual std::vector<std::string> OpenDirectSnapshots() = 0;
  // Fails a direct snapshot that will not be completed (e.g. its timeout passed).
  [[nodiscard]] virtual absl::Status AbortDirectSnapshot(const std::string& snapshot_id,
                                                         const std::string& reason) = 0;
  // ModifyVolume: gives the volume `change`'s size (0: its own; never smaller), type, IOPS and
  // throughput (checked whole, as CreateVolume checks them, before anything changes; gp2's IOPS
  // follow from its size), records the modification (VolumeInfo::modification) and returns the
  // volume as it is now. Its NBD connections keep going at the new rates at once.
  // kFailedPrecondition with AWS code IncorrectModificationState while the previous
  // modification has not completed.
  struct VolumeChange {
    uint64_t size_bytes = 0;
    std::string volume_type;
    uint64_t iops = 0, throughput = 0;  // 0: the type's default.
  };
  [[nodiscard]] virtual absl::StatusOr<VolumeInfo> ModifyVolume(const std::string& volume_id,
                                                                const VolumeChange& change) = 0;
  // Replaces a snapshot's createVolumePermission list (account ids, or "all").
  [[nodiscard]] virtual absl::Status SetSnapshotPermissions(
      const std::string& snapshot_id, const std::vector<std::string>& shared_with) = 0;
  // Grows a volume. A smaller size is kInvalidArgument: volumes never shrink.
  [[nodiscard]] virtual absl::Status GrowVolume(const std::string& volume_id,
                                                uint64_t new_size_bytes) = 0;
  // Deletes a volume and its head; its snapshots stay. Any Volume* for it becomes invalid.
  [[nodiscard]] virtual absl::Status DeleteVolume(const std::string& volume_id) = 0;
  // Replaces tags named in `set` and removes those in `remove`.
  [[nodiscard]] virtual absl::Status TagVolume(const std::string& volume_id,
                                               const std::map<std::string, std::string>& set,
                                               const std::vector<std::string>& remove) = 0;
  // Starts copying the base snapshot's chunks into the head at most `bytes_per_second`
  // (0: unlimited); progress shows in VolumeInfo.
  [[nodiscard]] virtual absl::Status StartHydration(const std::string& volume_id,
                                                    uint64_t bytes_per_second) = 0;

  // Freezes the volume's changes in O(1) and returns a pending snapshot; a background task
  // completes it. Writes completed before this returns are in it; none begun after are.
  [[nodiscard]] virtual absl::StatusOr<SnapshotInfo> CreateSnapshot(
      const CreateSnapshotRequest& request) = 0;
  [[nodiscard]] virtual absl::StatusOr<SnapshotInfo> DescribeSnapshot(
      const std::string& snapshot_id) = 0;
  [[nodiscard]] virtual absl::StatusOr<std::vector<SnapshotInfo>> ListSnapshots() = 0;
  // Waits until the snapshot leaves kPending or `timeout_ms` passes; returns its info.
  [[nodiscard]] virtual absl::StatusOr<SnapshotInfo> WaitForSnapshot(const std::string& snapshot_id,
                                                                     uint64_t timeout_ms) = 0;
  // Deletes a snapshot: only data that no other snapshot or volume needs goes. A pending
  // snapshot, one an image references (AWS code InvalidSnapshot.InUse) or one locked
  // (SnapshotLocked) cannot be deleted (kFailedPrecondition). A snapshot a Recycle Bin rule of
  // its owner covers goes to the bin instead, keeping its data, until its retention ends.
  [[nodiscard]] virtual absl::Status DeleteSnapshot(const std::string& snapshot_id) = 0;

  // Fast snapshot restore, per account (FastRestoreInfo). Enabling again an enabled or enabling
  // snapshot changes nothing; the snapshot must be completed and usable by the account.
  [[nodiscard]] virtual absl::StatusOr<FastRestoreInfo> EnableFastSnapshotRestore(
      const std::string& account, const std::string& snapshot_id) = 0;
  // kNotFound (InvalidSnapshot.NotFound) when the account never enabled it.
  [[nodiscard]] virtual absl::StatusOr<FastRestoreInfo> DisableFastSnapshotRestore(
      const std::string& account, const std::string& snapshot_id) = 0;
  // Every account's, snapshot by snapshot.
  [[nodiscard]] virtual absl::StatusOr<std::vector<FastRestoreInfo>> ListFastSnapshotRestores() = 0;

  // Snapshot locks and the Recycle Bin (strata/data_protection.h, docs/data-protection.md).
  virtual RecycleBin& recycle_bin() = 0;
  // Locks a snapshot, or changes its lock as EC2 allows (a compliance lock past its cooling-off
  // period may only be extended). kInvalidArgument for a bad request, kFailedPrecondition for a
  // change the lock forbids.
  [[nodiscard]] virtual absl::StatusOr<SnapshotInfo> LockSnapshot(
      const std::string& snapshot_id, const SnapshotLockRequest& request) = 0;
  // Removes a governance lock, or a compliance lock in its cooling-off period (an expired lock
  // too); kFailedPrecondition for a compliance lock past it, or a snapshot not locked.
  [[nodiscard]] virtual absl::StatusOr<SnapshotInfo> UnlockSnapshot(
      const std::string& snapshot_id) = 0;
  // The snapshots in the Recycle Bin (with SnapshotInfo::recycle_bin set), oldest first.
  [[nodiscard]] virtual absl::StatusOr<std::vector<SnapshotInfo>> ListRecycledSnapshots() = 0;
  // Brings a snapshot back from the bin as it was. kNotFound when it is not in the bin (never
  // was, or its retention ended and it was deleted).
  [[nodiscard]] virtual absl::StatusOr<SnapshotInfo> RestoreSnapshotFromRecycleBin(
      const std::string& snapshot_id) = 0;
  // ModifySnapshotTier to "archive": starts archiving a completed snapshot (SnapshotTierStatus).
  // IncorrectState (kFailedPrecondition) when it is pending or failed, archived or being tiered
  // already, in use by a pending copy or registered in an image.
  [[nodiscard]] virtual absl::StatusOr<SnapshotTierStatus> ArchiveSnapshot(
      const std::string& snapshot_id) = 0;
  // RestoreSnapshotTier: starts restoring an archived snapshot (or changes a temporary restore).
  [[nodiscard]] virtual absl::StatusOr<SnapshotTierStatus> RestoreArchivedSnapshot(
      const std::string& snapshot_id, const SnapshotTierRestoreRequest& request) = 0;
  // DescribeSnapshotTierStatus: every snapshot's tier, archived ones included.
  [[nodiscard]] virtual absl::StatusOr<std::vector<SnapshotTierStatus>>
  ListSnapshotTierStatuses() = 0;
  [[nodiscard]] virtual absl::Status TagSnapshot(const std::string& snapshot_id,
                                                 const std::map<std::string, std::string>& set,
                                                 const std::vector<std::string>& remove) = 0;
  // Opens a completed snapshot for reading.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<Snapshot>> OpenSnapshot(
      const std::string& snapshot_id) = 0;
  // OK when `account` may read the data of snapshot `snapshot_id` out of the region: always
  // when it is unencrypted; when encrypted, only if the account may Decrypt under its KMS key
  // (its own, or shared by key policy or grant), as AWS requires kms:Decrypt on the source key.
  // Front ends that hand a snapshot's data to another account (a cross-region copy's source,
  // EBS direct reads) ask this first; CreateVolume and CopySnapshot check it themselves.
  [[nodiscard]] virtual absl::Status CheckSnapshotKeyAccess(const std::string& account,
                                                            const std::string& snapshot_id) = 0;

  // Lists the non-zero blocks of a snapshot (EBS ListSnapshotBlocks), from `starting_block`,
  // at most `max_results` (1..10000).
  [[nodiscard]] virtual absl::StatusOr<BlockListing> ListSnapshotBlocks(
      const std::string& snapshot_id, const std::string& next_token, uint64_t max_results) = 0;
  // Lists blocks whose content differs between two snapshots of one lineage (EBS
  // ListChangedBlocks). Snapshots of unrelated volumes are kInvalidArgument.
  [[nodiscard]] virtual absl::StatusOr<BlockListing> ListChangedBlocks(
      const std::string& first_snapshot_id, const std::string& second_snapshot_id,
      const std::string& next_token, uint64_t max_results) = 0;
  // The chunks of a completed snapshot whose content differs from `base_snapshot_id`'s (a
  // completed snapshot of the same lineage), or every non-zero chunk when the base is empty.
  // Costs O(chunks changed between them), as ListChangedBlocks, or O(chunks held) in full.
  [[nodiscard]] virtual absl::StatusOr<ChunkListing> ListChunks(
      const std::string& snapshot_id, const std::string& base_snapshot_id) = 0;
  // Reads block `block_index` (kApiBlockBytes) of a snapshot (EBS GetSnapshotBlock).
  [[nodiscard]] virtual absl::StatusOr<std::string> GetSnapshotBlock(const std::string& snapshot_id,
                                                                     uint64_t block_index) = 0;

  // Reclaims the space of unreferenced chunks: compacts segments whose live share is below
  // half and deletes empty ones. Returns the bytes given back to the file system.
  [[nodiscard]] virtual absl::StatusOr<uint64_t> CollectGarbage() = 0;
  [[nodiscard]] virtual absl::StatusOr<StoreStats> GetStats() = 0;
  // Runs queued background work to completion on the calling thread (for tests that turned
  // background_work off).
  [[nodiscard]] virtual absl::Status RunBackgroundWork() = 0;
};

// What DIR/backend records for the store in `dir`: "the local backend", or "RADOS (pool P, data
// pool D, namespace N)"; kNotFound when the directory holds no record (not a store, or one never
// opened since backends were recorded).
[[nodiscard]] absl::StatusOr<std::string> DescribeStoreBackend(const std::string& dir);

class Store {
 public:
  // Opens (or creates) the store in `path` and takes its exclusive lock: a second open of the
  // same directory fails with kFailedPrecondition until this Store is destroyed.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path,
                                                                   const StoreOptions& options);
  // Closes cleanly: finishes background work, flushes every volume and records a clean stop.
  virtual ~Store() = default;

  virtual std::vector<std::string> ListRegions() = 0;
  // Where the regions' catalogs and chunks live: "local (DIR)" or "rados (pool P, ...)".
  virtual std::string DescribeBackend() const = 0;
  [[nodiscard]] virtual absl::StatusOr<Region*> GetRegion(const std::string& name) = 0;
  // Creates a region with its own store area. kAlreadyExists if it exists.
  [[nodiscard]] virtual absl::StatusOr<Region*> CreateRegion(const std::string& name) = 0;
  virtual Region* DefaultRegion() = 0;

  // Accounts (store-wide, kept in DIR/accounts, written atomically).
  // Creates an account with a fresh id and key pair. kInvalidArgument for a bad name.
  [[nodiscard]] virtual absl::StatusOr<Account> CreateAccount(const std::string& name) = 0;
  [[nodiscard]] virtual absl::StatusOr<Account> FindAccessKey(const std::string& access_key_id) = 0;
  virtual std::vector<Account> ListAccounts() = 0;

  // Cross-region copy (docs/regions.md). Starts copying a snapshot of another region, local or
  // a peer, into `destination_region` and returns the copy, pending: it completes when every
  // chunk arrived and was verified, or fails (kError with a reason). Only chunks the
  // destination's copy of an earlier snapshot of the same lineage lacks are sent.
  [[nodiscard]] virtual absl::StatusOr<SnapshotInfo> CopySnapshotAcrossRegions(
      const std::string& destination_region, const CrossRegionCopyRequest& request) = 0;
  // Copies an image of another region: its record is asked over the transfer protocol (the
  // caller must be allowed to launch it), each snapshot of its mapping is copied as by
  // CopySnapshotAcrossRegions, and the new image, with SourceImageId and SourceImageRegion, is
  // pending until they complete. Launch permissions are not copied; tags with copy_tags.
  [[nodiscard]] virtual absl::StatusOr<ImageInfo> CopyImageAcrossRegions(
      const std::string& destination_region, const CrossRegionImageCopyRequest& request) = 0;
  // The record of a cross-region copy, by the copy's snapshot id. kNotFound if none.
  [[nodiscard]] virtual absl::StatusOr<CopyRecord> DescribeCopy(const std::string& snapshot_id) = 0;
  // Every cross-region copy into this store's regions, oldest first.
  virtual std::vector<CopyRecord> ListCopies() = 0;
  // Peer regions (StoreOptions::peer_regions) by name.
  virtual std::vector<std::string> ListPeerRegions() = 0;
  // Serves the transfer protocol's source side on a connected socket until the peer closes it;
  // stratad calls it for each connection to its transfer listener. Takes ownership of `fd`.
  // The peer must first prove a key of StoreOptions::transfer_psk_file (TLS); without the file
  // every connection is refused.
  virtual void ServeTransfer(int fd) = 0;
};

}  // namespace strata
