#pragma once
// Offline consistency check of a store: every reference, refcount and chunk checksum.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "strata/env.h"

namespace strata {

struct FsckReport {
  std::vector<std::string> findings;  // Each an inconsistency; empty means the store is sound.
  uint64_t regions_checked = 0;
  uint64_t volumes_checked = 0;
  uint64_t snapshots_checked = 0;
  uint64_t manifest_entries_checked = 0;
  uint64_t chunks_checked = 0;
  uint64_t reclaimable_chunks = 0;  // Unreferenced, awaiting garbage collection (not an error).
};

// Checks the store in `path` without changing it. The store must not be open elsewhere (the
// lock is taken). `env` as in StoreOptions (nullptr: Env::Default()).
[[nodiscard]] absl::StatusOr<FsckReport> CheckStore(const std::string& path, Env* env = nullptr);

}  // namespace strata
