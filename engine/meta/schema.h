#pragma once
// Catalog schema of a region: key layout and record encodings. docs/formats/catalog.md.
//
// Keys (integers big-endian so byte order is numeric order):
//   "x/format"                         -> format version (fixed32) and chunk size (fixed64)
//   "x/clean"                          -> present while the region is closed cleanly
//   "x/next_seq"                       -> next snapshot sequence number (fixed64)
//   "x/next_domain"                    -> next dedup domain number (fixed32)
//   "e/" account                       -> EBS encryption defaults of an account
//   "v/" volume_id                     -> VolumeRecord
//   "o/" volume_id "/" leaf(8)         -> owned bitmap leaf (kBitmapLeafBytes)
//   "d/" volume_id "/" leaf(8)         -> dirty bitmap leaf, written at a clean stop only
//   "s/" snapshot_id                   -> SnapshotRecord
//   "m/" seq(8) chunk(8)               -> manifest entry of snapshot `seq` (its delta)
//   "r/" tree(8) chunk(8) ~seq(8)      -> the same entry, indexed for resolution
//   "c/" chunk key (22)                -> chunk index entry (chunk/chunk_store.h)
//   "k/key/" key id                    -> KMS key record (JSON; material wrapped by the root key)
//   "k/alias/" account "/" alias       -> KMS key id
//   "i/img/" image_id                  -> image record (JSON, engine/image)
//   "i/ref/" snapshot_id "/" image_id  -> empty: the image references the snapshot
//   "i/set/" account                   -> image settings of an account (JSON)
//   "i/ins/" instance_id               -> instance record (JSON)
//   "x/resumable/" snapshot_id         -> empty: a direct snapshot kept open across restarts
//   "a/" snapshot_id                   -> archive tier record (JSON, region/archive_format.h)
// A manifest entry is a 22-byte chunk key, or empty for an all-zero chunk.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata::meta {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kBitmapLeafBytes = 4096;
inline constexpr uint64_t kBitmapLeafBits = kBitmapLeafBytes * 8;

std::string FormatKey();
std::string CleanKey();
std::string NextSeqKey();
std::string NextDomainKey();
std::string EbsDefaultsKey(absl::string_view account);
std::string ResumableDirectKey(absl::string_view snapshot_id);
std::string VolumeKey(absl::string_view volume_id);
inline constexpr absl::string_view kVolumePrefix = "v/";
inline constexpr absl::string_view kKmsPrefix = "k/";
std::string ImageKey(absl::string_view image_id);
inline constexpr absl::string_view kImagePrefix = "i/img/";
std::string ImageRefKey(absl::string_view snapshot_id, absl::string_view image_id);
std::string ImageRefPrefix(absl::string_view snapshot_id);
std::string ImageSettingsKey(absl::string_view account);
std::string InstanceKey(absl::string_view instance_id);
std::string RecycleRuleKey(absl::string_view rule_id);
// Fast snapshot restore of a snapshot, enabled by an account (docs/data-protection.md).
std::string FastRestoreKey(absl::string_view snapshot_id, absl::string_view account);
std::string FastRestorePrefix(absl::string_view snapshot_id);
inline constexpr absl::string_view kFastRestorePrefix = "f/";
inline constexpr absl::string_view kRecycleRulePrefix = "b/rule/";
// The archive tier's record of a snapshot (JSON, engine/region/archive_format.h).
std::string ArchiveKey(absl::string_view snapshot_id);
inline constexpr absl::string_view kArchivePrefix = "a/";
inline constexpr absl::string_view kInstancePrefix = "i/ins/";
std::string OwnedLeafKey(absl::string_view volume_id, uint64_t leaf_index);
std::string OwnedPrefix(absl::string_view volume_id);
std::string DirtyLeafKey(absl::string_view volume_id, uint64_t leaf_index);
std::string DirtyPrefix(absl::string_view volume_id);
std::string SnapshotKey(absl::string_view snapshot_id);
inline constexpr absl::string_view kSnapshotPrefix = "s/";
std::string ManifestKey(uint64_t seq, uint64_t chunk_index);
std::string ManifestPrefix(uint64_t seq);
std::string ResolveKey(uint64_t tree, uint64_t chunk_index, uint64_t seq);
std::string ResolvePrefix(uint64_t tree, uint64_t chunk_index);
std::string ResolveTreePrefix(uint64_t tree);
// Decodes the chunk index of a manifest key, or the (chunk, seq) of a resolve key.
uint64_t ManifestKeyChunk(absl::string_view key);
uint64_t ResolveKeyChunk(absl::string_view key);
uint64_t ResolveKeySeq(absl::string_view key);
// The leaf index at the end of an owned/dirty leaf key.
uint64_t LeafKeyIndex(absl::string_view key);

// How a volume or snapshot is encrypted. Domain 0 is plaintext; an encrypted lineage has its own
// dedup domain and one 512-bit data key, stored only as a KMS ciphertext blob.
struct EncryptionRecord {
  uint32_t domain = 0;
  std::string kms_key_arn;
  std::string wrapped_key;  // KMS ciphertext of the data key (context: strata:domain=<domain>).
  bool encrypted() const { return domain != 0; }
};

// A volume's latest ModifyVolume: what it was before, and when the change ends its modifying
// phase and completes (DescribeVolumesModifications derives the state from the clock).
// start_time_micros 0: never modified.
struct ModificationRecord {
  uint64_t start_time_micros = 0;
  uint64_t optimizing_time_micros = 0;  // When "modifying" ends and "optimizing" begins.
  uint64_t end_time_micros = 0;         // When it is "completed".
  uint64_t original_size_bytes = 0;
  std::string original_type;
  uint64_t original_iops = 0, original_throughput = 0;
};

// Where a volume's head (its live data) is kept.
enum class HeadStore : uint8_t {
  kFiles = 0,  // Extent files in the serving node's data directory.
  kRados = 1,  // Objects in the region's data pool: any node may serve the volume.
};

struct VolumeRecord {
  std::string id;
  uint64_t size_bytes = 0;
  std::string base_snapshot_id;  // Created from; informational.
  std::string last_snapshot_id;  // The next snapshot is incremental to this; unowned chunks read
                                 // through it. Empty for a blank volume with no snapshot.
  uint64_t tree = 0;             // Lineage tree of its snapshots.
  uint64_t create_time_micros = 0;
  uint64_t hydrate_bytes_per_second = 0;
  bool hydrating = false;
  std::map<std::string, std::string> tags;
  std::string owner;        // Account id (12 digits); empty in stores made before accounts.
  std::string volume_type;  // gp2, gp3, io1, ... (informational). Default: "gp3".
  uint64_t iops = 0;
  uint64_t throughput = 0;
  bool hidden = false;      // A builder for an EBS direct snapshot; not listed.
  std::string attached_to;  // Instance id (an attachment group), or empty.
  std::string device;       // Device name of the attachment, e.g. /dev/sdf.
  uint64_t attach_time_micros = 0;
  EncryptionRecord encryption;
  ModificationRecord modification;
  HeadStore head = HeadStore::kFiles;
  bool fast_restored = false;  // Version 6: made hydrated at once by fast snapshot restore.

  std::string Encode() const;
  static absl::StatusOr<VolumeRecord> Decode(absl::string_view bytes);
};

enum class SnapshotRecordState : uint8_t { kPending = 0, kCompleted = 1, kError = 2 };

struct SnapshotRecord {
  std::string id;
  uint64_t seq = 0;  // Unique, increasing: an ancestor's seq is below its descendants'.
  std::string volume_id;
  uint64_t tree = 0;
  std::string parent_id;
  SnapshotRecordState state = SnapshotRecordState::kPending;
  std::string state_message;
  uint64_t volume_size_bytes = 0;
  uint64_t incremental_bytes = 0;
  uint64_t changed_chunk_count = 0;
  uint64_t start_time_micros = 0;
  bool deleted = false;  // Deleted by the user; kept hidden while others need its data.
  std::string description;
  std::map<std::string, std::string> tags;
  std::string owner;  // Account id; empty in stores made before accounts.
  // createVolumePermission: account ids, or "all" for public.
  std::vector<std::string> shared_with;
  EncryptionRecord encryption;
  // Version 4: LockSnapshot's lock (mode 0: never locked, or unlocked), and the Recycle Bin.
  struct Lock {
    uint8_t mode = 0;  // 0 none, 1 governance, 2 compliance.
    uint64_t created_micros = 0;
    uint64_t duration_start_micros = 0;
    uint64_t cool_off_until_micros = 0;
    uint64_t expires_micros = 0;
    uint32_t duration_days = 0;
    uint32_t cool_off_hours = 0;
  };
  Lock lock;
  // In the Recycle Bin since (0: not in it; hidden from every call but the bin's), until.
  uint64_t recycled_micros = 0;
  uint64_t recycle_until_micros = 0;

  std::string Encode() const;
  static absl::StatusOr<SnapshotRecord> Decode(absl::string_view bytes);
};

}  // namespace strata::meta
