#pragma once
// RegionImpl: one region's volumes and snapshots over its catalog and chunk store, and the
// background worker that ingests snapshots, prunes deleted ones and hydrates volumes.

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "chunk/chunk_store.h"
#include "crypto/kms_impl.h"
#include "meta/catalog.h"
#include "strata/store.h"
#include "volume/snapshot_tree.h"
#include "volume/volume_impl.h"

namespace strata::region {

using volume::DomainKeys;
using volume::PendingSnapshot;
using volume::SnapshotTree;
using volume::VolumeImpl;

class RegionImpl final : public Region {
 public:
  // Opens (creating when missing) the region stored in `dir`. `env` must outlive it.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RegionImpl>> Open(
      Env* env, const std::string& name, const std::string& dir, const StoreOptions& options);
  // Stops cleanly: finishes pending snapshots, flushes volumes, records the clean stop.
  ~RegionImpl() override;

  const std::string& name() const override { return name_; }
  uint64_t chunk_size_bytes() const override { return chunk_size_bytes_; }

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
  absl::Status StartHydration(const std::string& volume_id, uint64_t bytes_per_second) override;
  absl::Status AttachVolume(const std::string& volume_id, const std::string& instance_id,
                            const std::string& device) override;
  absl::Status DetachVolume(const std::string& volume_id, const std::string& instance_id) override;
  absl::StatusOr<std::vector<SnapshotInfo>> CreateSnapshots(
      const std::vector<CreateSnapshotRequest>& requests) override;
  absl::StatusOr<SnapshotInfo> CopySnapshot(const std::string& source_snapshot_id,
                                            const CreateSnapshotRequest& request) override;
  absl::StatusOr<DirectSnapshot> StartDirectSnapshot(uint64_t size_bytes,
                                                     const std::string& parent_snapshot_id,
                                                     const CreateSnapshotRequest& request) override;
  absl::Status CompleteDirectSnapshot(const std::string& snapshot_id) override;
  void ReportDirectSnapshotProgress(const std::string& snapshot_id, int percent) override;
  absl::Status AbortDirectSnapshot(const std::string& snapshot_id,
                                   const std::string& reason) override;
  absl::Status SetVolumeType(const std::string& volume_id, const std::string& volume_type,
                             uint64_t iops, uint64_t throughput) override;
  absl::Status SetSnapshotPermissions(const std::string& snapshot_id,
                                      const std::vector<std::string>& shared_with) override;

  absl::StatusOr<SnapshotInfo> CreateSnapshot(const CreateSnapshotRequest& request) override;
  absl::StatusOr<SnapshotInfo> DescribeSnapshot(const std::string& snapshot_id) override;
  absl::StatusOr<std::vector<SnapshotInfo>> ListSnapshots() override;
  absl::StatusOr<SnapshotInfo> WaitForSnapshot(const std::string& snapshot_id,
                                               uint64_t timeout_ms) override;
  absl::Status DeleteSnapshot(const std::string& snapshot_id) override;
  absl::Status TagSnapshot(const std::string& snapshot_id,
                           const std::map<std::string, std::string>& set,
                           const std::vector<std::string>& remove) override;
  absl::StatusOr<std::unique_ptr<Snapshot>> OpenSnapshot(const std::string& snapshot_id) override;

  absl::StatusOr<BlockListing> ListSnapshotBlocks(const std::string& snapshot_id,
                                                  const std::string& next_token,
                                                  uint64_t max_results) override;
  absl::StatusOr<ChunkListing> ListChunks(const std::string& snapshot_id,
                                          const std::string& base_snapshot_id) override;
  absl::StatusOr<BlockListing> ListChangedBlocks(const std::string& first_snapshot_id,
                                                 const std::string& second_snapshot_id,
                                                 const std::string& next_token,
                                                 uint64_t max_results) override;
  absl::StatusOr<std::string> GetSnapshotBlock(const std::string& snapshot_id,
                                               uint64_t block_index) override;

  absl::StatusOr<uint64_t> CollectGarbage() override;
  absl::StatusOr<StoreStats> GetStats() override;
  absl::Status RunBackgroundWork() override;

  // For strata-fsck and tests.
  meta::Catalog* catalog() { return catalog_.get(); }
  Kms& kms() override { return *kms_; }
  Images& images() override { return *images_; }
  // Installs the image registry (engine/image builds on this module, so the Store wires it).
  void set_images(std::unique_ptr<Images> images) { images_ = std::move(images); }
  // Writes `batch` if every snapshot in `snapshot_ids` exists and is not deleted, atomically
  // with DeleteSnapshot (which refuses snapshots an image references).
  absl::Status CommitWithSnapshots(const std::vector<std::string>& snapshot_ids,
                                   const meta::WriteBatch& batch);
  absl::StatusOr<EbsEncryptionDefaults> GetEbsEncryptionDefaults(
      const std::string& account) override;
  absl::Status SetEbsEncryptionDefaults(const std::string& account,
                                        const EbsEncryptionDefaults& defaults) override;
  chunk::ChunkStore* chunks() { return chunks_.get(); }
  const SnapshotTree& tree() const { return *tree_; }

 private:
  struct Task {
    enum class Kind { kIngest, kPrune, kHydrate } kind;
    std::string id;  // Snapshot (ingest, prune) or volume (hydrate).
    std::shared_ptr<PendingSnapshot> pending;
    uint64_t not_before_micros = 0;
  };

  RegionImpl(Env* env, std::string name, std::string dir, const StoreOptions& options);
  // Unwraps an encrypted domain's data key (as `owner`) into domain_keys_, or records why not.
  absl::Status LoadDomainKey(const meta::EncryptionRecord& encryption, const std::string& owner);
  // The encryption of a new volume (AWS's rules); makes and registers a new data key when the
  // volume needs its own domain.
  // A hidden builder volume and its pending snapshot (recorded, not yet frozen).
  absl::StatusOr<std::pair<std::shared_ptr<PendingSnapshot>, VolumeImpl*>>
  StartBuilderSnapshotLocked(const CreateVolumeRequest& builder_request,
                             const CreateSnapshotRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<SnapshotInfo> CopyIntoNewDomainLocked(const CreateVolumeRequest& as_volume,
                                                       const CreateSnapshotRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<meta::EncryptionRecord> ChooseEncryption(const CreateVolumeRequest& request,
                                                          const meta::EncryptionRecord& base)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Init();
  absl::Status RecoverPendingSnapshots(bool clean);
  absl::Status LoadVolumes(bool clean);
  // Reopens the direct snapshots that asked to survive a restart, on their kept builders.
  absl::Status ReopenResumableDirectSnapshots() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Their ids, between RecoverPendingSnapshots and reopening (Open only, single-threaded).
  std::set<std::string> resumable_;
  std::string HeadPath(const std::string& volume_id) const;

  void Enqueue(Task task);
  void WorkerLoop();
  // Runs one task; returns a follow-up task to queue, if any.
  std::optional<Task> RunTask(Task task);
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
  absl::Status MergeIntoChild(const meta::SnapshotRecord& record, meta::SnapshotRecord child)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<Task> HydrateStep(const std::string& volume_id) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status PersistVolume(VolumeImpl& volume) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::StatusOr<VolumeImpl*> FindVolumeLocked(const std::string& volume_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status DeleteVolumeLocked(const std::string& volume_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<VolumeInfo> CreateVolumeLocked(const CreateVolumeRequest& request, bool hidden)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Builds the pending snapshot of `volume` (not yet frozen) for `request`.
  absl::StatusOr<std::shared_ptr<PendingSnapshot>> NewPending(VolumeImpl& volume,
                                                              const CreateSnapshotRequest& request,
                                                              uint64_t seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The pending direct snapshot `snapshot_id`, not yet completed.
  absl::StatusOr<std::shared_ptr<PendingSnapshot>> FindOpenDirectLocked(
      const std::string& snapshot_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<meta::SnapshotRecord> FindSnapshot(const std::string& snapshot_id) const;
  absl::StatusOr<meta::SnapshotRecord> FindCompletedSnapshot(const std::string& snapshot_id) const;
  VolumeInfo ToInfo(VolumeImpl& volume) const;
  SnapshotInfo ToInfo(const meta::SnapshotRecord& record) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NewId(absl::string_view prefix) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Block tokens and ids of the chunks of block `block_index` in a snapshot.
  absl::StatusOr<std::string> BlockToken(const meta::SnapshotRecord& record,
                                         const SnapshotTree::Ancestry& ancestry,
                                         uint64_t block_index) const;

  Env* const env_;
  const std::string name_;
  const std::string dir_;
  const StoreOptions options_;
  uint64_t chunk_size_bytes_ = 0;
  std::unique_ptr<meta::Catalog> catalog_;
  std::unique_ptr<crypto::KmsStorage> kms_storage_;
  std::unique_ptr<crypto::KmsImpl> kms_;
  DomainKeys domain_keys_;
  uint32_t next_domain_ ABSL_GUARDED_BY(mu_) = 1;  // Domain 0 is plaintext.
  std::unique_ptr<chunk::ChunkStore> chunks_;
  std::unique_ptr<SnapshotTree> tree_;

  // mu_ serializes control-plane changes (it is held across their catalog writes, never across
  // volume data I/O). Lock order: mu_ before any VolumeImpl lock.
  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<VolumeImpl>> volumes_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<PendingSnapshot>> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t id_state_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex queue_mu_ ABSL_ACQUIRED_AFTER(mu_);
  absl::CondVar queue_cv_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  std::thread worker_;
  std::unique_ptr<Images> images_;  // Last: destroyed first.
};

}  // namespace strata::region
