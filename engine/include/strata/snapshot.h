#pragma once
// Snapshots: point-in-time, incremental, read-only copies of a volume (EBS snapshots).

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "strata/data_protection.h"

namespace strata {

// The block size of the changed-block APIs (as EBS direct APIs), whatever the chunk size.
inline constexpr uint64_t kApiBlockBytes = 512 * 1024;

enum class SnapshotState { kPending, kCompleted, kError };
const char* SnapshotStateName(SnapshotState state);

struct SnapshotInfo {
  std::string id;         // "snap-" and 17 hex digits.
  std::string volume_id;  // The volume it was taken from.
  std::string parent_id;  // The snapshot it is incremental to; empty for a first snapshot.
  SnapshotState state = SnapshotState::kPending;
  std::string state_message;  // Why it is in kError.
  int progress_percent = 0;
  uint64_t volume_size_bytes = 0;  // Logical size.
  uint64_t incremental_bytes = 0;  // Bytes of chunks this snapshot added (stored size).
  uint64_t changed_chunk_count = 0;
  uint64_t start_time_micros = 0;
  std::string description;
  std::map<std::string, std::string> tags;
  std::string owner;                     // Account id.
  std::vector<std::string> shared_with;  // createVolumePermission: account ids or "all".
  bool encrypted = false;
  std::string kms_key_id;  // The ARN of the KMS key that wraps its data key.
  // LockSnapshot's lock, kept after it expires (until the snapshot is unlocked or relocked), and
  // its state when the info was read ("governance", "compliance-cooloff", "compliance",
  // "expired").
  std::optional<SnapshotLock> lock;
  std::string lock_state;
  // Set while the snapshot waits in the Recycle Bin (Region::ListRecycledSnapshots only).
  std::optional<RecycleBinEntry> recycle_bin;
  // "standard", or "archive" once archived (ModifySnapshotTier); a temporarily restored
  // snapshot is "standard" with the end of its restore period.
  std::string storage_tier = "standard";
  uint64_t restore_expiry_micros = 0;
};

// Fast snapshot restore of a snapshot, as enabled by one account (EnableFastSnapshotRestores).
// Its state follows the clock through StoreOptions::fast_restore's model: enabling, optimizing,
// enabled; after a disable, disabling, then disabled. A volume the account makes from the
// snapshot while it is enabled takes a credit of the bucket and is hydrated at creation.
struct FastRestoreInfo {
  std::string snapshot_id;
  std::string account;
  std::string state;  // "enabling", "optimizing", "enabled", "disabling" or "disabled".
  // When each state began (0: not reached, or not yet: future times are the model's).
  uint64_t enabling_micros = 0;
  uint64_t optimizing_micros = 0;
  uint64_t enabled_micros = 0;
  uint64_t disabling_micros = 0;
  uint64_t disabled_micros = 0;
  uint32_t bucket_size = 0;  // MAX(1, MIN(10, FLOOR(1024 / snapshot GiB))), as AWS's.
  double credits = 0;        // Volume creation credits now (refilled bucket_size per hour).
};

// One block of a changed-block listing, in kApiBlockBytes units.
struct BlockRef {
  uint64_t block_index = 0;
  // Opaque token naming the block's content in a snapshot ("" when the block is all zeros in
  // that snapshot). Equal tokens mean equal content.
  std::string first_token;
  std::string second_token;  // ListChangedBlocks only.
};

struct BlockListing {
  std::vector<BlockRef> blocks;
  uint64_t block_size_bytes = kApiBlockBytes;
  uint64_t volume_size_bytes = 0;
  std::string next_token;  // Non-empty when more blocks follow; pass to continue.
};

// A snapshot's chunks as Region::ListChunks reports them (what a cross-region copy sends).
struct ChunkListing {
  uint64_t chunk_size_bytes = 0;
  uint64_t volume_size_bytes = 0;
  // Names the snapshot's lineage within its region: snapshots of one volume (and of volumes
  // made from them) share it, so one can be listed against another.
  std::string lineage;
  struct Chunk {
    uint64_t index = 0;
    bool zero = false;  // All zeros in the snapshot (only listed against a base).
  };
  std::vector<Chunk> chunks;  // Ascending index.
};

// A read-only view of a completed snapshot. Thread-safe.
class Snapshot {
 public:
  virtual ~Snapshot() = default;
  virtual const std::string& id() const = 0;
  virtual uint64_t size_bytes() const = 0;
  // True when reads wait on the network (a region on RADOS): callers gain from several at once.
  virtual bool reads_wait_on_network() const = 0;
  // Fills `out` with the snapshot's data from `offset_bytes`. Corrupt stored bytes are
  // kDataLoss naming the chunk, never wrong data.
  [[nodiscard]] virtual absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) = 0;
};

}  // namespace strata
