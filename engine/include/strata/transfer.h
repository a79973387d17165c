#pragma once
// Cross-region copy: the simulated WAN link between two regions and what each copy records.
// The copy itself is Store::CopySnapshotAcrossRegions (strata/store.h); every copy, also
// between two regions of one process, crosses the transfer protocol over a socket
// (docs/formats/transfer.md).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace strata {

// One direction of a region pair's link. The sender waits on a token bucket for the bandwidth
// and before each reply for the round trip (plus uniform jitter), so measured copy time reflects
// the link. Faults are injected per chunk sent, from a seeded generator.
struct LinkModel {
  uint64_t bandwidth_bytes_per_second = 100'000'000;  // Shared by the copy's streams.
  uint32_t rtt_ms = 70;
  uint32_t jitter_ms = 0;
  double corrupt_rate = 0;  // Share of chunks that arrive with a flipped byte.
  double drop_rate = 0;     // Share of chunks after which the connection is cut.
  uint32_t streams = 4;     // Parallel connections per copy.
  // All copies into one region together never exceed this (0: no limit beyond the link's).
  uint64_t region_bytes_per_second = 0;
};

// Parses "bandwidth=100MB,rtt=70ms,jitter=5ms,corrupt=0.01,drop=0.001,streams=4,
// region=200MB" (any subset; bandwidth in B, KB, MB, GB per second, decimal; times in ms or s)
// over the defaults above. Unknown keys and bad values are kInvalidArgument naming them.
absl::StatusOr<LinkModel> ParseLinkModel(absl::string_view spec, LinkModel base = {});
std::string FormatLinkModel(const LinkModel& link);

// What one cross-region copy records (strata copy-stats). Persisted with the store, so it
// outlives the process that made the copy.
struct CopyRecord {
  std::string destination_region;
  std::string snapshot_id;  // The copy, in the destination region.
  std::string source_region;
  std::string source_snapshot_id;
  std::string lineage;               // The source snapshot's lineage, as ListChunks names it.
  std::string base_source_snapshot;  // Empty: a full copy.
  std::string base_snapshot_id;      // The destination's copy of that base.
  std::string state;                 // "pending", "completed" or "error".
  std::string message;               // Why, for "error".
  uint64_t logical_bytes = 0;        // The source snapshot's size.
  uint64_t chunks_total = 0;         // Chunks to transfer after the manifest.
  uint64_t chunks_done = 0;          // Arrived and verified.
  uint64_t chunks_skipped = 0;       // Not sent: the destination's base holds them.
  uint64_t changed_bytes = 0;        // Raw bytes of the chunks sent.
  uint64_t bytes_sent = 0;           // On the wire, framing included.
  uint64_t retries = 0;              // Chunks re-requested plus reconnections.
  uint64_t start_micros = 0;
  uint64_t end_micros = 0;
  uint64_t transfer_micros = 0;        // Time on the link: from the start to the last chunk landed.
  uint32_t completion_minutes = 0;     // CompletionDurationMinutes, 0 when not asked.
  uint64_t rate_bytes_per_second = 0;  // What the scheduler gave the copy.
  std::string link;                    // FormatLinkModel of the link used.
  // What a copy needs to resume after the destination restarts: the caller's account, the
  // builder the chunks land in, the manifest's digest, and the chunks verified and durable
  // there (ascending [first, last] runs of chunk indexes).
  std::string account;
  std::string builder_volume_id;
  std::string manifest_digest;
  std::vector<std::pair<uint64_t, uint64_t>> done_runs;
};

// Reads the copy records of the store in `data_dir` (DIR/copies.json), oldest first. Works
// while a stratad holds the store: the file is only ever replaced whole.
absl::StatusOr<std::vector<CopyRecord>> ReadCopyRecords(const std::string& data_dir);

}  // namespace strata
