#pragma once
// RegionImpl: one region's volumes and snapshots over its catalog and chunk store.
//
// The region is split into rooms, one file each:
//   region_impl.cc             open, recovery after a stop, clean stop, ids, store maintenance
//   region_volumes.cc          the volume table: create, describe, grow, tag, type, delete
//   region_attachments.cc      attach and detach (the local attachment groups)
//   region_snapshots.cc        the snapshot catalog: create (crash-consistent sets), copy,
//                              describe, tag, share, delete, open for reading
//   region_direct_snapshots.cc EBS direct snapshots (StartSnapshot ... CompleteSnapshot) and
//                              the hidden builder volumes they and re-encrypting copies use
//   region_snapshot_work.cc    background work: ingest (pending -> completed or error), prune
//                              of deleted snapshots (merge into a child, rebase a volume)
//   region_hydration.cc        hydration of volumes made from snapshots
//   region_data_protection.cc  snapshot locks, the Recycle Bin's snapshots and its sweep
//   region_fast_restore.cc     fast snapshot restore: its states, credits, hydrated creation
//   region_archive.cc          the archive tier: archival, restore, their records and tasks
// and classes of their own, each with its header: EncryptionPolicy (which key, which domain),
// BlockListings (EBS direct listings), SnapshotReader, KmsCatalogStorage, TaskQueue.
//
// One lock, mu_, serializes control-plane changes across the volume table and the snapshot
// catalog: they are one consistency domain (CreateSnapshots writes volume and snapshot records in
// one batch while the volumes' gates are held; deletion checks pins, pending snapshots and
// attachments under it; pruning rebases volumes). The rooms with state of their own have their
// own locks, taken after mu_: the task queue's (never held while a task runs) and the encryption
// policy's (held across the one catalog write that records the next dedup domain).

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "archive/archive_store.h"
#include "chunk/chunk_store.h"
#include "crypto/kms_impl.h"
#include "meta/catalog.h"
#include "meta/shared_catalog.h"
#include "qos/volume_performance.h"
#include "rados/cluster.h"
#include "rados/volume_locks.h"
#include "region/archive_format.h"
#include "region/block_listings.h"
#include "region/encryption_policy.h"
#include "region/recycle_rules.h"
#include "region/task_queue.h"
#include "strata/store.h"
#include "util/shared_section.h"
#include "volume/snapshot_tree.h"
#include "volume/volume_impl.h"

namespace strata::region {

using volume::DomainKeys;
using volume::PendingSnapshot;
using volume::SnapshotTree;
using volume::VolumeImpl;

class RegionImpl final : public Region {
 public:
  // Opens (creating when missing) the region stored in `dir` (its volume heads) and, with
  // `cluster` (the RADOS backend), in the cluster (catalog and chunks; else in `dir` too).
  // `env` must outlive it.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RegionImpl>> Open(
      Env* env, const std::string& name, const std::string& dir, const StoreOptions& options,
      std::shared_ptr<rados::Cluster> cluster = nullptr);
  // Stops cleanly: finishes pending snapshots, flushes volumes, records the clean stop.
  ~RegionImpl() override;

  const std::string& name() const override { return name_; }
  uint64_t chunk_size_bytes() const override { return chunk_size_bytes_; }

  // region_volumes.cc
  absl::StatusOr<VolumeInfo> CreateVolume(const CreateVolumeRequest& request) override;
  absl::StatusOr<Volume*> GetVolume(const std::string& volume_id) override;
  absl::StatusOr<std::unique_ptr<VolumePin>> PinVolume(const std::string& volume_id) override;
  absl::StatusOr<VolumeInfo> DescribeVolume(const std::string& volume_id) override;
  absl::StatusOr<std::vector<VolumeInfo>> ListVolumes() override;
  absl::Status GrowVolume(const std::string& volume_id, uint64_t new_size_bytes) override;
  absl::Status DeleteVolume(const std::string& volume_id) override;
  absl::Status TagVolume(const std::string& volume_id,
                         const std::map<std::string, std::string>& set,
                         const std::vector<std::string>& remove) override;
  absl::StatusOr<VolumeInfo> ModifyVolume(const std::string& volume_id,
                                          const VolumeChange& change) override;

  // region_hydration.cc
  absl::Status StartHydration(const std::string& volume_id, uint64_t bytes_per_second) override;

  // region_volume_owners.cc
  absl::StatusOr<VolumeInfo> TakeOverVolume(const std::string& volume_id, bool force) override;

  // region_attachments.cc
  absl::Status AttachVolume(const std::string& volume_id, const std::string& instance_id,
                            const std::string& device) override;
  absl::Status DetachVolume(const std::string& volume_id, const std::string& instance_id) override;

  // region_snapshots.cc
  absl::StatusOr<SnapshotInfo> CreateSnapshot(const CreateSnapshotRequest& request) override;
  absl::StatusOr<std::vector<SnapshotInfo>> CreateSnapshots(
      const std::vector<CreateSnapshotRequest>& requests) override;
  absl::StatusOr<SnapshotInfo> CopySnapshot(const std::string& source_snapshot_id,
                                            const CreateSnapshotRequest& request) override;
  absl::StatusOr<SnapshotInfo> DescribeSnapshot(const std::string& snapshot_id) override;
  absl::StatusOr<std::vector<SnapshotInfo>> ListSnapshots() override;
  absl::StatusOr<SnapshotInfo> WaitForSnapshot(const std::string& snapshot_id,
                                               uint64_t timeout_ms) override;
  absl::Status DeleteSnapshot(const std::string& snapshot_id) override;
  absl::Status TagSnapshot(const std::string& snapshot_id,
                           const std::map<std::string, std::string>& set,
                           const std::vector<std::string>& remove) override;
  absl::Status SetSnapshotPermissions(const std::string& snapshot_id,
                                      const std::vector<std::string>& shared_with) override;
  absl::StatusOr<std::unique_ptr<Snapshot>> OpenSnapshot(const std::string& snapshot_id) override;
  absl::Status CheckSnapshotKeyAccess(const std::string& account,
                                      const std::string& snapshot_id) override;
  absl::StatusOr<std::string> GetSnapshotBlock(const std::string& snapshot_id,
                                               uint64_t block_index) override;
  // region_data_protection.cc
  RecycleBin& recycle_bin() override { return *recycle_rules_; }
  absl::StatusOr<SnapshotInfo> LockSnapshot(const std::string& snapshot_id,
                                            const SnapshotLockRequest& request) override;
  absl::StatusOr<SnapshotInfo> UnlockSnapshot(const std::string& snapshot_id) override;
  absl::StatusOr<std::vector<SnapshotInfo>> ListRecycledSnapshots() override;
  absl::StatusOr<SnapshotInfo> RestoreSnapshotFromRecycleBin(
      const std::string& snapshot_id) override;
  // region_fast_restore.cc
  absl::StatusOr<FastRestoreInfo> EnableFastSnapshotRestore(
      const std::string& account, const std::string& snapshot_id) override;
  absl::StatusOr<FastRestoreInfo> DisableFastSnapshotRestore(
      const std::string& account, const std::string& snapshot_id) override;
  absl::StatusOr<std::vector<FastRestoreInfo>> ListFastSnapshotRestores() override;
  // region_archive.cc
  absl::StatusOr<SnapshotTierStatus> ArchiveSnapshot(const std::string& snapshot_id) override;
  absl::StatusOr<SnapshotTierStatus> RestoreArchivedSnapshot(
      const std::string& snapshot_id, const SnapshotTierRestoreRequest& request) override;
  absl::StatusOr<std::vector<SnapshotTierStatus>> ListSnapshotTierStatuses() override;
  // Installs what tells whether a snapshot is the source of a pending cross-region copy (the
  // store's copies): such a snapshot cannot be archived.
  void set_copy_source_check(std::function<bool(const std::string&)> check);

  // Installs what the bin's sweep runs for images (the image registry's): called with the time,
  // it deletes what is due and returns when the next entry is (0: none).
  void set_recycle_bin_sweeper(std::function<uint64_t(uint64_t)> sweeper);
  // Sweeps the bin at `at_micros` (an entry's retention ends then).
  void ScheduleRecycleSweep(uint64_t at_micros);
  // The length of a day (StoreOptions::seconds_per_day), in µs.
  uint64_t day_micros() const { return options_.seconds_per_day * 1'000'000; }
  Env* env() const { return env_; }

  // Writes `batch` if every snapshot in `snapshot_ids` exists and is not deleted, atomically
  // with DeleteSnapshot (which refuses snapshots an image references).
  absl::Status CommitWithSnapshots(const std::vector<std::string>& snapshot_ids,
                                   const meta::WriteBatch& batch);

  // region_direct_snapshots.cc
  absl::StatusOr<DirectSnapshot> StartDirectSnapshot(uint64_t size_bytes,
                                                     const std::string& parent_snapshot_id,
                                                     const CreateSnapshotRequest& request) override;
  absl::Status CompleteDirectSnapshot(const std::string& snapshot_id) override;
  void ReportDirectSnapshotProgress(const std::string& snapshot_id, int percent) override;
  std::vector<std::string> OpenDirectSnapshots() override;
  absl::Status AbortDirectSnapshot(const std::string& snapshot_id,
                                   const std::string& reason) override;

  // BlockListings
  absl::StatusOr<BlockListing> ListSnapshotBlocks(const std::string& snapshot_id,
                                                  const std::string& next_token,
                                                  uint64_t max_results) override {
    return listings_->ListSnapshotBlocks(snapshot_id, next_token, max_results);
  }
  absl::StatusOr<ChunkListing> ListChunks(const std::string& snapshot_id,
                                          const std::string& base_snapshot_id) override {
    return listings_->ListChunks(snapshot_id, base_snapshot_id);
  }
  absl::StatusOr<BlockListing> ListChangedBlocks(const std::string& first_snapshot_id,
                                                 const std::string& second_snapshot_id,
                                                 const std::string& next_token,
                                                 uint64_t max_results) override {
    return listings_->ListChangedBlocks(first_snapshot_id, second_snapshot_id, next_token,
                                        max_results);
  }

  // EncryptionPolicy
  absl::StatusOr<EbsEncryptionDefaults> GetEbsEncryptionDefaults(
      const std::string& account) override {
    return encryption_->GetEbsEncryptionDefaults(account);
  }
  absl::Status SetEbsEncryptionDefaults(const std::string& account,
                                        const EbsEncryptionDefaults& defaults) override {
    absl::StatusOr<util::SharedHold> shared = EnterShared();
    if (!shared.ok()) return shared.status();
    return encryption_->SetEbsEncryptionDefaults(account, defaults);
  }

  // region_impl.cc
  absl::StatusOr<uint64_t> CollectGarbage() override;
  absl::StatusOr<StoreStats> GetStats() override;
  absl::Status RunBackgroundWork() override;

  Kms& kms() override { return *kms_; }
  Images& images() override { return *images_; }
  // Installs the image registry (engine/image builds on this module, so the Store wires it).
  void set_images(std::unique_ptr<Images> images) { images_ = std::move(images); }
  // The section of the region that one node at a time runs (the region lease on RADOS; free on
  // the local backend), with the snapshot tree reloaded when another node changed the region.
  // Taken before mu_; control-plane changes of shared state run in it.
  [[nodiscard]] absl::StatusOr<util::SharedHold> EnterShared() ABSL_LOCKS_EXCLUDED(mu_);
  util::SharedSection& shared_section() { return *shared_; }
  // The other nodes that have served the region (RADOS; none on the local backend).
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> OtherNodes();
  // For strata-fsck and tests.
  meta::Catalog* catalog() { return catalog_.get(); }
  chunk::ChunkStore* chunks() { return chunks_.get(); }
  const SnapshotTree& tree() const { return *tree_; }

 private:
  RegionImpl(Env* env, std::string name, std::string dir, const StoreOptions& options,
             std::shared_ptr<rados::Cluster> cluster);

  // region_impl.cc
  absl::Status Init();
  absl::Status RecoverPendingSnapshots(bool clean);
  absl::Status LoadVolumes(bool clean);
  // `id`, or its nearest ancestor that exists, did not fail and is not in `failing`: what a
  // volume whose last snapshot was `id` reads through ("" when none is left).
  std::string LastUsableSnapshot(std::string id, const std::set<std::string>& failing) const;
  // Reloads what this node caches of shared state (the snapshot tree, the next sequence number,
  // domain keys of snapshots made elsewhere).
  absl::Status ReloadShared() ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status LoadNextSeq() ABSL_LOCKS_EXCLUDED(mu_);
  // Whether another node's volume reads through snapshot `id` (RADOS: every node's records).
  absl::StatusOr<bool> OtherNodeVolumeUses(const std::string& id);
  // Every other node's volume records (RADOS; none on the local backend), with their node.
  absl::StatusOr<std::vector<std::pair<std::string, meta::VolumeRecord>>> OtherNodesVolumes();
  // The other node that serves volume `id` (RADOS), if one does.
  absl::StatusOr<std::optional<std::string>> NodeServingVolume(const std::string& id);
  std::string HeadPath(const std::string& volume_id) const;
  std::string NewId(absl::string_view prefix) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A new lineage's tree id (random, so that lineages made on any node never meet).
  uint64_t NewTreeId() const;
  // Runs one background task; returns a follow-up task to queue, if any.
  std::optional<Task> RunTask(Task task);

  // region_volumes.cc
  absl::StatusOr<VolumeImpl*> FindVolumeLocked(const std::string& volume_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<VolumeInfo> CreateVolumeLocked(const CreateVolumeRequest& request, bool hidden)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A VolumeImpl over `head` for `record`, with its domain's key when encrypted.
  std::unique_ptr<VolumeImpl> MakeVolume(meta::VolumeRecord record,
                                         std::unique_ptr<volume::Head> head);
  absl::Status DeleteVolumeLocked(const std::string& volume_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PersistVolume(VolumeImpl& volume) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  VolumeInfo ToInfo(VolumeImpl& volume) const;
  static VolumeInfo ToInfo(const meta::VolumeRecord& record);
  // A volume another node serves, as this node lists it.
  static VolumeInfo ToOtherNodesInfo(const std::string& node, const meta::VolumeRecord& record);

  // region_snapshots.cc
  // Builds the pending snapshot of `volume` (not yet frozen) for `request`.
  absl::StatusOr<std::shared_ptr<PendingSnapshot>> NewPending(VolumeImpl& volume,
                                                              const CreateSnapshotRequest& request,
                                                              uint64_t seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes a new snapshot's `record`, which takes the next sequence number, and puts it in the
  // tree.
  absl::Status CommitNewSnapshotRecord(const meta::SnapshotRecord& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SnapshotInfo ToInfo(const meta::SnapshotRecord& record) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // region_direct_snapshots.cc
  // A hidden builder volume and its pending snapshot (recorded, not yet frozen).
  absl::StatusOr<std::pair<std::shared_ptr<PendingSnapshot>, VolumeImpl*>>
  StartBuilderSnapshotLocked(const CreateVolumeRequest& builder_request,
                             const CreateSnapshotRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A copy of a snapshot under another data key: a builder of the source, frozen at once.
  absl::StatusOr<SnapshotInfo> CopyIntoNewDomainLocked(const CreateVolumeRequest& as_volume,
                                                       const CreateSnapshotRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The pending direct snapshot `snapshot_id`, not yet completed.
  absl::StatusOr<std::shared_ptr<PendingSnapshot>> FindOpenDirectLocked(
      const std::string& snapshot_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reopens the direct snapshots that asked to survive a restart, on their kept builders.
  absl::Status ReopenResumableDirectSnapshots() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // region_snapshot_work.cc
  void RunIngest(const std::shared_ptr<PendingSnapshot>& pending);
  absl::Status CompleteSnapshot(VolumeImpl& volume, PendingSnapshot& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailSnapshot(VolumeImpl& volume, const std::shared_ptr<PendingSnapshot>& pending,
                    const absl::Status& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes or merges a deleted snapshot when nothing needs it as it is.
  absl::Status Prune(const std::string& snapshot_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves a volume off its deleted last snapshot when it can (VolumeImpl::Rebase).
  absl::StatusOr<bool> RebaseVolume(VolumeImpl& volume, const meta::SnapshotRecord& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RemoveSnapshotData(const meta::SnapshotRecord& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes a snapshot's manifest entries, dropping their references, in pieces: a failed
  // snapshot's committed pieces (its record stays, in state error), or a pruned snapshot's.
  absl::Status DropManifest(const meta::SnapshotRecord& record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets a volume's type, IOPS (as requested: none for gp2) and throughput, checked against the
  // type's rules (AWS's codes).
  absl::Status SetTypeLocked(VolumeImpl& volume, const std::string& volume_type, uint64_t iops,
                             uint64_t throughput) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status MergeIntoChild(const meta::SnapshotRecord& record, meta::SnapshotRecord child)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // region_volume_owners.cc: volumes whose heads are in RADOS, served by one node at a time.
  // Opens (with `create`, makes) a volume's head where its record says it lives.
  absl::StatusOr<std::unique_ptr<volume::Head>> OpenHead(const meta::VolumeRecord& record,
                                                         bool create);
  // Deletes a volume's head (and a RADOS head's lock object).
  absl::Status DeleteHead(const meta::VolumeRecord& record);
  // Takes the writer lock of a RADOS-headed volume this node is about to serve; kFailedPrecondition
  // (VolumeInUse) naming the node that serves it when another live node does.
  absl::Status LockHead(const meta::VolumeRecord& record, bool force);
  // Asks the live node that serves volume `volume_id` (its head in RADOS, not attached) to hand
  // it over, and waits up to 10 s for its lock to be free. Holds no lock meanwhile.
  void AskForVolume(const std::string& volume_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Moves volume `volume_id`, served by another node (or left by one that died), to this node:
  // its lock, then its records (volume, owned and dirty bitmaps) in one guarded write, then
  // opens it. The other node's snapshots of it still pending fail. Never waits for a live
  // holder: it fails (kFailedPrecondition) unless `force` (call AskForVolume first).
  absl::StatusOr<VolumeImpl*> AdoptVolumeLocked(const std::string& volume_id, bool force)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Another node asked for `volume_id`: hands it over if nothing here uses it (no attachment,
  // client connection or pending snapshot): flushes it, records its dirty bitmap, closes it and
  // releases its lock.
  void HandOverVolume(const std::string& volume_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Releases the locks of every RADOS-headed volume (a clean stop).
  void ReleaseVolumeLocks() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // region_data_protection.cc
  static std::optional<SnapshotLock> ToLock(const meta::SnapshotRecord::Lock& lock);
  // The record LockSnapshot and UnlockSnapshot change: the snapshot's, or (`archived` set) the
  // one an archived snapshot keeps in its archive record.
  absl::StatusOr<meta::SnapshotRecord> FindForLockLocked(const std::string& snapshot_id,
                                                         std::optional<ArchiveRecord>& archived)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores `r` with its new lock where FindForLockLocked found it.
  absl::StatusOr<SnapshotInfo> WriteLockLocked(const meta::SnapshotRecord& r,
                                               std::optional<ArchiveRecord>& archived)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // kFailedPrecondition (SnapshotLocked) while the snapshot's lock holds.
  absl::Status CheckNotLocked(const meta::SnapshotRecord& r) const;
  // Moves a deleted snapshot to the Recycle Bin when a rule of its owner covers it; false when
  // none does (it is deleted).
  absl::StatusOr<bool> RecycleSnapshotLocked(meta::SnapshotRecord r)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues the sweep that comes back (at the next expiry, or a minute).
  void StartRecycleSweeps();
  // Deletes what the bin holds past its retention (snapshots, then images through the sweeper).
  std::optional<Task> SweepRecycleBin(const Task& task) ABSL_LOCKS_EXCLUDED(mu_);

  // region_fast_restore.cc
  // The state of the fast restore record `value` stored at `key`, now.
  FastRestoreInfo ToFastRestoreInfo(const std::string& key, const std::string& value) const;
  // Spends a credit of `account`'s fast restore of `snapshot_id` when it is enabled and has one.
  absl::StatusOr<bool> TakeFastRestoreCreditLocked(const std::string& snapshot_id,
                                                   const std::string& account)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Copies every chunk of the volume's snapshot into its head, then records it fast restored.
  absl::Status HydrateNowLocked(VolumeImpl& volume) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds the deletion of every account's fast restore of `snapshot_id` to `batch`.
  absl::Status DropFastRestores(const std::string& snapshot_id, meta::WriteBatch& batch);

  // region_archive.cc
  // The archive store, opened at first use (an S3 endpoint may be down at the region's open).
  absl::StatusOr<archive::ArchiveStore*> Archive() ABSL_LOCKS_EXCLUDED(archive_mu_);
  // Where the directory archive is when there is no S3 (StoreOptions::archive.dir).
  std::string ArchiveDir() const;
  // How long archiving or restoring `bytes` takes in the timing model, in µs.
  uint64_t TierMicros(uint64_t bytes) const;
  absl::StatusOr<std::optional<ArchiveRecord>> GetArchiveRecord(const std::string& snapshot_id);
  // Every "a/" record, by snapshot id.
  absl::StatusOr<std::map<std::string, ArchiveRecord>> ArchiveRecords();
  // What DescribeSnapshots lists: the snapshots neither deleted nor in the Recycle Bin in
  // creation order, then the archived ones (as they were), each with its archive record.
  struct ListedSnapshot {
    meta::SnapshotRecord record;
    std::optional<ArchiveRecord> archive;
  };
  absl::StatusOr<std::vector<ListedSnapshot>> ListedSnapshots() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SnapshotTierStatus ToTierStatus(const meta::SnapshotRecord& r, const ArchiveRecord* a) const;
  // Sets the storage tier and restore expiry `a` gives the snapshot.
  static void AnnotateTier(SnapshotInfo& info, const ArchiveRecord& a);
  // IncorrectState unless the snapshot is completed, in no image and no pending copy.
  absl::Status CheckArchivable(const meta::SnapshotRecord& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // An archived (or restoring) snapshot as DescribeSnapshots shows it; nullopt when it is not.
  absl::StatusOr<std::optional<SnapshotInfo>> DescribeArchivedLocked(const std::string& snapshot_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The completed snapshot `snapshot_id` for a new volume or a copy; IncorrectState when it is
  // archived.
  absl::StatusOr<meta::SnapshotRecord> FindUsableSnapshotLocked(const std::string& snapshot_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // DeleteSnapshot's part for a snapshot with an archive record: true when that was all there
  // was to delete (an archived snapshot); false when the snapshot is deleted as usual next.
  absl::StatusOr<bool> DeleteArchivedLocked(const std::string& snapshot_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Deletes a snapshot's archive objects, logging a failure (the next open retries).
  void DeleteArchiveObjects(const std::string& snapshot_id) ABSL_LOCKS_EXCLUDED(mu_);
  // The same later, by a tier task (the caller holds mu_; the archive store may be remote).
  void QueueArchiveDeletion(const std::string& snapshot_id);
  // At open: queues the tiering that was under way, and deletes objects no record needs.
  void ResumeTiering();
  std::optional<Task> RunTierTask(const Task& task) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status ArchiveNow(const std::string& snapshot_id) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status RestoreNow(const std::string& snapshot_id) ABSL_LOCKS_EXCLUDED(mu_);
  // Writes `batch` with the restore's completion: temporary (its expiry queued) or permanent
  // (the archive deleted).
  absl::Status FinishRestoreLocked(ArchiveRecord& a, meta::WriteBatch& batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A temporary restore ended: the snapshot is archived again (its archive is still whole).
  absl::Status ReturnToArchive(const std::string& snapshot_id) ABSL_LOCKS_EXCLUDED(mu_);

  // region_hydration.cc
  std::optional<Task> HydrateStep(const std::string& volume_id) ABSL_LOCKS_EXCLUDED(mu_);

  Env* const env_;
  const std::string name_;
  const std::string dir_;
  const StoreOptions options_;
  const std::shared_ptr<rados::Cluster> cluster_;     // Null: the local backend.
  std::unique_ptr<rados::RegionClaim> claim_;         // RADOS: released after the catalog closes.
  std::optional<rados::Pool> head_pool_;              // RADOS: the data pool, for volume heads.
  std::unique_ptr<rados::VolumeLocks> volume_locks_;  // RADOS: writer locks of RADOS heads.
  uint64_t chunk_size_bytes_ = 0;
  bool opened_ = false;  // Init finished: the destructor stops cleanly.
  std::unique_ptr<meta::Catalog> catalog_;
  meta::SharedCatalog* shared_catalog_ = nullptr;            // RADOS: catalog_, shared.
  util::SharedSection* shared_ = &util::SoleProcess();       // Or shared_catalog_.
  absl::Mutex reload_mu_;                                    // Before mu_.
  uint64_t loaded_changes_ ABSL_GUARDED_BY(reload_mu_) = 0;  // foreign_changes() at a reload.
  std::unique_ptr<crypto::KmsStorage> kms_storage_;
  std::unique_ptr<crypto::KmsImpl> kms_;
  DomainKeys domain_keys_;
  std::unique_ptr<EncryptionPolicy> encryption_;
  std::unique_ptr<chunk::ChunkStore> chunks_;
  std::unique_ptr<SnapshotTree> tree_;
  std::unique_ptr<BlockListings> listings_;
  std::unique_ptr<RecycleRules> recycle_rules_;
  absl::Mutex sweeper_mu_;
  std::function<uint64_t(uint64_t)> sweeper_ ABSL_GUARDED_BY(sweeper_mu_);
  // Open SnapshotReaders (copies' sources, snapshot exports) by snapshot: such a snapshot is
  // not archived.
  absl::Mutex readers_mu_;
  std::map<std::string, int> open_readers_ ABSL_GUARDED_BY(readers_mu_);
  absl::Mutex archive_mu_;
  std::unique_ptr<archive::ArchiveStore> archive_ ABSL_GUARDED_BY(archive_mu_);

  // mu_ serializes control-plane changes (it is held across their catalog writes, never across
  // volume data I/O). Lock order: mu_ before any VolumeImpl lock, the task queue's and the
  // encryption policy's.
  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<VolumeImpl>> volumes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<PendingSnapshot>> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t id_state_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<bool(const std::string&)> copy_source_check_ ABSL_GUARDED_BY(mu_);
  // Ids of direct snapshots to reopen, between RecoverPendingSnapshots and reopening (Open only,
  // single-threaded).
  std::set<std::string> resumable_;

  TaskQueue tasks_;
  std::unique_ptr<Images> images_;  // Last: destroyed first.
};

}  // namespace strata::region
