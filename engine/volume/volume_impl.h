#pragma once
// A live volume: its head (an extent file written in place), its owned and dirty bitmaps, and
// the pending snapshots whose frozen chunks it must ingest before overwriting them.

#include <atomic>
#include <bitset>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "chunk/chunk_store.h"
#include "meta/catalog.h"
#include "meta/schema.h"
#include "qos/volume_limiter.h"
#include "strata/env.h"
#include "strata/volume.h"
#include "volume/domain_keys.h"
#include "volume/head.h"
#include "volume/resolve_windows.h"
#include "volume/snapshot_tree.h"
#include "volume/sparse_bitmap.h"

namespace strata::volume {

// A snapshot between CreateSnapshot and completion. Its frozen bitmap holds the chunks still to
// ingest; a chunk leaves it (under the chunk's stripe lock) once its content is stored.
struct PendingSnapshot {
  meta::SnapshotRecord record;             // As created (state kPending).
  SnapshotTree::Ancestry parent_ancestry;  // Null when there is no parent.
  uint64_t parent_seq = 0;
  // An EBS direct snapshot: created before its builder volume is frozen (at completion); its
  // builder is deleted when it completes or fails.
  bool direct = false;
  bool frozen_yet = true;
  // False when the parent was itself pending at creation: its entries may not be resolvable
  // yet, so every frozen chunk is recorded rather than compared with the parent.
  bool compare_with_parent = true;
  std::unique_ptr<SparseBitmap> frozen;
  std::atomic<uint64_t> frozen_count{0};  // Set by the ingest driver for progress.
  std::atomic<uint64_t> ingested_count{0};
  std::atomic<int> writer_percent{0};  // A direct snapshot's, until it is frozen.

  absl::Mutex mu;
  std::map<uint64_t, ChunkEntry> entries ABSL_GUARDED_BY(mu);  // The delta, by chunk index.
  std::vector<chunk::ChunkKey> pinned ABSL_GUARDED_BY(mu);     // Keys of non-zero entries.
  absl::Status error ABSL_GUARDED_BY(mu);
};

// What a volume borrows from its region. All must outlive the volume.
struct VolumeDeps {
  Env* env = nullptr;
  meta::Catalog* catalog = nullptr;
  chunk::ChunkStore* chunks = nullptr;
  const SnapshotTree* tree = nullptr;
  const DomainKeys* keys = nullptr;
  uint64_t chunk_size_bytes = 0;
  bool qos = true;  // StoreOptions::qos.
};

class VolumeImpl final : public Volume, private VolumeIo::Completer {
 public:
  VolumeImpl(const VolumeDeps& deps, meta::VolumeRecord record, std::unique_ptr<Head> head);
  ~VolumeImpl() override;

  const std::string& id() const override { return id_; }
  uint64_t size_bytes() const override { return size_bytes_.load(std::memory_order_acquire); }
  IoLimiter& limiter() override { return limiter_; }
  absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) override;
  absl::Status Write(uint64_t offset_bytes, std::span<const std::byte> data, bool fua) override;
  absl::Status Trim(uint64_t offset_bytes, uint64_t length_bytes) override;
  absl::Status WriteZeroes(uint64_t offset_bytes, uint64_t length_bytes, bool fua) override;
  absl::Status Flush() override;
  bool reads_wait_on_network() const override {
    return head_->reads_wait_on_network() || deps_.chunks->reads_wait_on_network();
  }
  void SubmitRead(uint64_t offset_bytes, std::span<std::byte> out, IoRing& ring,
                  VolumeIo& io) override;
  void SubmitWrite(uint64_t offset_bytes, std::span<std::byte> data, bool fua, IoRing& ring,
                   VolumeIo& io) override;
  bool SplicesWrite(uint64_t offset_bytes, uint64_t length_bytes) override;
  std::optional<absl::Status> WriteSpliced(uint64_t offset_bytes, int pipe_fd,
                                           uint64_t length_bytes) override;
  absl::StatusOr<std::vector<AllocationExtent>> Allocation(uint64_t offset_bytes,
                                                           uint64_t length_bytes,
                                                           size_t max_extents) override;
  absl::StatusOr<std::vector<ChangeExtent>> Changes(uint64_t offset_bytes, uint64_t length_bytes,
                                                    size_t max_extents) override;

  // --- For the region. ---
  meta::VolumeRecord record() const;
  void set_record_fields(const std::map<std::string, std::string>& tags, bool hydrating,
                         uint64_t hydrate_bytes_per_second);
  void set_type(const std::string& volume_type, uint64_t iops, uint64_t throughput);
  void set_fast_restored(bool fast_restored);
  void set_modification(const meta::ModificationRecord& modification);
  // Holds the limiter to the record's type, IOPS, throughput and size (and its strata:qos and
  // strata:burst-balance tags).
  void ConfigureLimiter();
  uint64_t chunk_count() const;
  uint64_t owned_count() const { return owned_.Count(); }
  // An encrypted volume's data key (its domain's), or why it is not available (then every I/O
  // fails with that reason). Set once, before the volume is used.
  void set_encryption(std::shared_ptr<const DomainKeys::Key> key, absl::Status unavailable) {
    key_ = std::move(key);
    key_status_ = std::move(unavailable);
  }
  uint32_t domain() const { return domain_; }
  // Marks every chunk changed (a volume whose domain differs from its snapshot's).
  void MarkAllChanged();
  // Pins held by front ends (Region::PinVolume); the volume cannot be deleted while any is.
  std::atomic<int>& pins() { return pins_; }

  // Loads the owned bitmap from the catalog, and the dirty bitmap too when `clean` (the store
  // stopped cleanly); otherwise every owned chunk counts as dirty (the rescan of invariant 3).
  [[nodiscard]] absl::Status LoadBitmaps(bool clean);
  // Writes the dirty bitmap to `batch` for a clean stop.
  [[nodiscard]] absl::Status SaveDirtyBitmap(meta::WriteBatch& batch);

  // Freezes the dirty set into `pending` (O(1)) and makes it the volume's last snapshot.
  void Freeze(const std::shared_ptr<PendingSnapshot>& pending);
  // For snapshots of several volumes at one point in time: hold every volume's gate (in
  // volume id order), freeze each, then release them all.
  void LockGate() ABSL_NO_THREAD_SAFETY_ANALYSIS { gate_.Lock(); }
  void UnlockGate() ABSL_NO_THREAD_SAFETY_ANALYSIS { gate_.Unlock(); }
  // REQUIRES: LockGate() held.
  void FreezeLocked(const std::shared_ptr<PendingSnapshot>& pending);
  void set_attachment(const std::string& instance_id, const std::string& device, uint64_t micros);
  // Undoes Freeze after its catalog write failed.
  void Unfreeze(const std::shared_ptr<PendingSnapshot>& pending);
  // Ingests chunk `chunk_index` of `pending` if still frozen; errors land in pending.error.
  void IngestChunk(PendingSnapshot& pending, uint64_t chunk_index);
  // Snapshots not yet completed, oldest first.
  std::vector<std::shared_ptr<PendingSnapshot>> PendingList() const;
  // Forgets a finished pending snapshot.
  void FinishPending(const PendingSnapshot* pending);
  // Forgets a failed pending snapshot and the ones after it; the volume's last snapshot goes
  // back to its parent and every owned chunk becomes dirty, so nothing is missed.
  // Returns the failed snapshots.
  std::vector<std::shared_ptr<PendingSnapshot>> FailPending(
      const std::shared_ptr<PendingSnapshot>& pending);
  bool HasPending() const;

  // Makes the volume's next snapshot incremental to `new_last` (the parent of its deleted last
  // snapshot) instead, by marking dirty `delta_chunks` (the deleted snapshot's changes). Only
  // possible when the volume owns all of them (else it still reads them through the snapshot):
  // returns false and changes nothing otherwise. REQUIRES: no pending snapshot.
  bool Rebase(const std::string& new_last, const std::vector<uint64_t>& delta_chunks);
  // Grows the head; the region then persists the record.
  [[nodiscard]] absl::Status Grow(uint64_t new_size_bytes);
  // Copies up to `max_chunks` unowned chunks from the last snapshot into the head. Returns how
  // many it copied (0: fully hydrated).
  [[nodiscard]] absl::StatusOr<uint64_t> Hydrate(uint64_t max_chunks);

 private:
  class StripeLocks;
  static constexpr size_t kStripeCount = 256;
  // A queued request to an encrypted volume of this size or more has its cipher run beside the
  // loop (about 55 us at this size without VAES): a write is enciphered and written on the
  // ring's helpers (SubmitWrite); a read is split in two, one half read and deciphered on a
  // helper while a processor is idle (SubmitRead). Measured at 1 MiB, and for reads at
  // 256 KiB too (docs/benchmarks.md); 4 KiB requests stay on the loop, whose 1 us cipher is
  // less than a hand-off; sizes in between are not measured.
  static constexpr size_t kCipherBesideBytes = 256 * 1024;
  // The stripes of chunks [first_chunk, last_chunk].
  static std::bitset<kStripeCount> StripesOf(uint64_t first_chunk, uint64_t last_chunk);

  absl::Status CheckRange(uint64_t offset_bytes, uint64_t length_bytes) const;
  // Whether the volume holds every chunk of a range in its head. REQUIRES: gate_ shared.
  bool HoldsAll(uint64_t offset_bytes, uint64_t length_bytes) const;
  // Writes through a ring: a write may be queued only while no one holds its chunks' stripes
  // exclusively; it is then counted (per stripe) until it lands, and exclusive
  // holders of a stripe (and a freeze) wait for its count to drop to zero. False when a stripe
  // is held: take the synchronous path.
  bool BeginQueuedWrite(uint64_t first_chunk, uint64_t last_chunk);
  // Whether a write of the range can be one head write: in range, every chunk held, no
  // snapshot pending. REQUIRES: gate_ shared.
  bool IsOneHeadWrite(uint64_t offset_bytes, uint64_t length_bytes) const
      ABSL_SHARED_LOCKS_REQUIRED(gate_);
  // Starts a write that is one head write and a dirty bit per chunk: the volume holds every
  // chunk, no snapshot is pending, an encrypted volume's write covers whole units, and
  // BeginQueuedWrite took the chunks. True with gate_ held shared (end with EndHeadWrite, then
  // unlock); false, holding nothing, when the write must take the synchronous path.
  bool BeginHeadWrite(uint64_t offset_bytes, uint64_t length_bytes)
      ABSL_SHARED_TRYLOCK_FUNCTION(true, gate_);
  void EndQueuedWrite(uint64_t first_chunk, uint64_t last_chunk);
  // A queued head write of `length` bytes at `offset_bytes` has landed: the next Sync covers it
  // and EndQueuedWrite releases its chunks.
  void EndHeadWrite(uint64_t offset_bytes, size_t length);
  void WaitForQueuedWrites(size_t stripe) const;
  // A read of whole units of an encrypted volume's head, split in two: false when the ring has
  // no idle processor for the second half (nothing is done then). REQUIRES: gate_ shared, the
  // range held.
  bool SubmitSplitRead(uint64_t offset_bytes, std::span<std::byte> out, IoRing& ring, VolumeIo& io);
  // VolumeIo::Completer: a queued head read or write has finished with `result`.
  void Complete(VolumeIo& io, int result) override;
  // Deciphers whole 4 KiB units read from the head at `offset_bytes` in place, leaving
  // all-zero units (holes) as zeros.
  void DecipherUnits(uint64_t offset_bytes, std::span<std::byte> units) const;
  // Head I/O in plaintext: through AES-256-XTS per 4 KiB unit (tweak: the unit's number) when
  // the volume is encrypted. An all-zero unit on disk (a hole) reads as zeros. HeadWrite
  // rewrites partly covered units whole. REQUIRES for HeadWrite and HeadZero: the chunks'
  // stripes held exclusively.
  absl::Status HeadRead(uint64_t offset_bytes, std::span<std::byte> out) const;
  absl::Status HeadWrite(uint64_t offset_bytes, std::span<const std::byte> data);
  absl::Status HeadZero(uint64_t offset_bytes, uint64_t length_bytes);
  uint64_t ChunkLength(uint64_t chunk_index) const;
  // Prepares chunk `chunk_index` for a write that covers it fully or partially.
  // REQUIRES: gate_ shared and the chunk's stripe held exclusively.
  absl::Status PrepareForWrite(uint64_t chunk_index, bool covers_whole_chunk);
  absl::Status CopyUp(uint64_t chunk_index);
  absl::StatusOr<ChunkEntry> ResolveBase(uint64_t chunk_index);
  // The base snapshot's entries of chunks [first, first + count), with one index scan.
  absl::StatusOr<std::vector<ChunkEntry>> ResolveBaseRange(uint64_t first, uint64_t count);
  absl::Status ReadUnowned(uint64_t chunk_index, uint64_t offset_in_chunk,
                           std::span<std::byte> out);
  // Whether chunk `chunk_index` differs from the last snapshot. A chunk marked dirty only by the
  // rescan after an unclean stop is compared (and unmarked if equal) on first use.
  // REQUIRES: gate_ shared.
  absl::StatusOr<bool> ChunkChanged(uint64_t chunk_index) ABSL_SHARED_LOCKS_REQUIRED(gate_);
  // Shared by Trim and WriteZeroes.
  // Trim and WriteZeroes; `keep_held` makes every chunk of the range the volume's own.
  absl::Status ZeroRange(uint64_t offset_bytes, uint64_t length_bytes, bool keep_held);
  // REQUIRES: gate_ shared and the chunk's stripe held exclusively.
  void IngestChunkLocked(PendingSnapshot& pending, uint64_t chunk_index);
  // A chunk the volume does not hold, as the pending snapshot's parent has it.
  absl::Status ReadThroughParent(const PendingSnapshot& pending, uint64_t chunk_index,
                                 std::span<std::byte> out);
  void StoreIngested(PendingSnapshot& pending, uint64_t chunk_index,
                     std::span<const std::byte> data);

  const VolumeDeps deps_;
  const std::string id_;
  const unsigned chunk_shift_;
  const std::unique_ptr<Head> head_;
  const uint32_t domain_;
  std::shared_ptr<const DomainKeys::Key> key_;  // Null for plaintext volumes.
  absl::Status key_status_;
  std::atomic<uint64_t> size_bytes_;

  // Lock order: flush_mu_, gate_, stripes_ (ascending), mu_, PendingSnapshot::mu.
  // flush_mu_ serializes Flush (held across its I/O). gate_ is held shared by I/O and
  // exclusively to freeze the dirty set or resize. Stripe locks are range locks on chunks,
  // held across the head I/O they protect.
  absl::Mutex flush_mu_;
  mutable absl::Mutex gate_ ABSL_ACQUIRED_AFTER(flush_mu_);
  absl::Mutex stripes_[kStripeCount];
  // Writes queued in an IoRing and not landed yet, per stripe.
  std::atomic<uint32_t> queued_writes_[kStripeCount] = {};
  mutable absl::Mutex mu_;

  SparseBitmap owned_;                                          // Resized under gate_ exclusive.
  std::unique_ptr<SparseBitmap> dirty_ ABSL_GUARDED_BY(gate_);  // Swapped under gate_ exclusive.
  // Dirty chunks not known to be changed: marked by the rescan after an unclean stop, cleared
  // once compared with the last snapshot, emptied by a freeze. Null when there are none.
  std::unique_ptr<SparseBitmap> suspect_ ABSL_GUARDED_BY(gate_);
  meta::VolumeRecord record_ ABSL_GUARDED_BY(mu_);
  qos::VolumeLimiter limiter_;  // Configured from record_ by ConfigureLimiter.
  std::string applied_burst_balance_ ABSL_GUARDED_BY(mu_);  // The tag's value last applied.
  std::deque<std::shared_ptr<PendingSnapshot>> pending_ ABSL_GUARDED_BY(mu_);
  // pending_.size(), readable without mu_: the write path checks it before copying the list.
  // Changes under gate_ exclusive or with no write in flight on a frozen chunk, so a writer
  // holding gate_ shared sees every snapshot frozen before its write began.
  std::atomic<size_t> pending_count_{0};
  SnapshotTree::Ancestry base_ancestry_ ABSL_GUARDED_BY(mu_);  // Of record_.last_snapshot_id.
  volume::ResolveWindows resolved_;  // The base snapshot's entries, for reads.
  uint64_t hydrate_cursor_ = 0;      // Used by the single hydration driver only.
  std::atomic<int> pins_{0};
};

}  // namespace strata::volume
