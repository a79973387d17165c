#pragma once
// Offline consistency check of a store: every reference, refcount and chunk checksum.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "strata/env.h"
#include "strata/store.h"

namespace strata {

struct FsckReport {
  std::vector<std::string> findings;  // Each an inconsistency; empty means the store is sound.
  uint64_t regions_checked = 0;
  uint64_t volumes_checked = 0;
  uint64_t snapshots_checked = 0;
  uint64_t manifest_entries_checked = 0;
  uint64_t chunks_checked = 0;
  uint64_t reclaimable_chunks = 0;  // Unreferenced, awaiting garbage collection (not an error).
  // RADOS: chunk objects with no index entry, younger than the grace period (a node's snapshot
  // that has not committed yet; not an error). Older ones are findings: leaks.
  uint64_t unindexed_chunks = 0;
};

// Checks the store in `path` without changing it. The store must not be open elsewhere (the
// lock is taken). `env` as in StoreOptions (nullptr: Env::Default()). A store on the RADOS
// backend (DIR/backend names its pools and namespace) is reached with `ceph`'s conf file, client
// id, timeout and grace period (nullopt: the defaults, $CEPH_CONF as client.admin).
[[nodiscard]] absl::StatusOr<FsckReport> CheckStore(
    const std::string& path, Env* env = nullptr,
    const std::optional<CephBackendOptions>& ceph = std::nullopt);

}  // namespace strata
