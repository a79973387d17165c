#pragma once
// The archive tier's formats (docs/formats/archive.md): the catalog record "a/<snapshot>" that
// follows a snapshot through archival and restore, and the objects of its archive: parts of
// chunks as the main store keeps them (an encrypted domain's still enciphered), then a manifest,
// written last, that names them with their checksums and carries the snapshot's record.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "meta/schema.h"

namespace strata::region {

// Where a snapshot is in the archive tier.
enum class TierState {
  kArchiving,  // Asked; the snapshot is still standard and usable.
  kArchived,   // Its archive is complete and its chunks left the main store.
  kRestoring,  // Asked; archived until the restore completes.
  kRestored,   // Temporarily restored: standard until restore_expiry_micros, then archived.
  kStandard,   // Back for good, or its archival failed: the record keeps the last operation.
};

struct ArchiveRecord {
  meta::SnapshotRecord snapshot;  // As it was when archived (its id, tags, lock, key).
  TierState state = TierState::kArchiving;
  std::string operation;         // "archival", "temporary-restore" or "permanent-restore".
  std::string status;            // "in-progress", "completed" or "failed".
  std::string detail;            // Why it failed.
  uint64_t start_micros = 0;     // Of the operation.
  uint64_t due_micros = 0;       // When the timing model lets it complete.
  uint64_t archived_micros = 0;  // When the archival completed.
  uint32_t restore_days = 0;     // A temporary restore's period; 0: permanent.
  uint64_t restore_expiry_micros = 0;
  // A restore from the archive rebuilds the manifest under a fresh sequence number and tree,
  // recorded before the first piece commits so that a crash part way is cleaned up.
  uint64_t restore_seq = 0;
  uint64_t restore_tree = 0;
  uint64_t chunk_count = 0;   // Non-zero chunks in the archive.
  uint64_t stored_bytes = 0;  // Their bytes as stored.

  std::string Encode() const;
  static absl::StatusOr<ArchiveRecord> Decode(absl::string_view bytes);
};

// The names of a snapshot's archive objects; every one starts with "<snapshot_id>.".
std::string ArchivePartName(const std::string& snapshot_id, uint64_t part);
std::string ArchiveManifestName(const std::string& snapshot_id);

struct ArchiveManifest {
  meta::SnapshotRecord snapshot;
  uint64_t chunk_size_bytes = 0;
  uint64_t chunk_count = 0;
  uint64_t stored_bytes = 0;
  struct Part {
    std::string name;
    uint64_t bytes = 0;
    uint64_t xxh3 = 0;  // XXH3-64 of the part's bytes.
  };
  std::vector<Part> parts;

  std::string Encode() const;
  static absl::StatusOr<ArchiveManifest> Decode(absl::string_view bytes);
};

// A part is a run of entries: chunk index (8) | domain (4) | length (4), little-endian, then
// the chunk as stored.
void AppendArchiveEntry(std::string& part, uint64_t chunk_index, uint32_t domain,
                        absl::string_view stored);
// Checks `part` against `expected` (size and checksum) and visits its entries in order;
// kDataLoss naming the part when it does not match or does not parse.
[[nodiscard]] absl::Status ForEachArchiveEntry(
    const ArchiveManifest::Part& expected, absl::string_view part,
    const std::function<absl::Status(uint64_t chunk_index, uint32_t domain,
                                     absl::string_view stored)>& visit);
uint64_t ArchiveChecksum(absl::string_view bytes);

}  // namespace strata::region
