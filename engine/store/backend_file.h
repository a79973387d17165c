#pragma once
// DIR/backend: which backend holds a store's catalogs and chunks (docs/formats/layout.md).
// Lines "key=value": backend (local or rados), and for rados pool, data_pool, namespace, conf,
// client_id and gc_grace_seconds (the settings it was made with; tools that open the store
// without flags use them). Written once, when the store is made; a store never changes backend.

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "strata/env.h"
#include "strata/store.h"

namespace strata::store {

struct BackendRecord {
  bool present = false;                    // The file exists.
  std::optional<CephBackendOptions> ceph;  // Set: the RADOS backend.
};

// Reads DIR/backend (absent: present == false).
[[nodiscard]] absl::StatusOr<BackendRecord> ReadBackendFile(Env* env, const std::string& dir);
// Writes DIR/backend atomically (a temporary file, synced, renamed).
[[nodiscard]] absl::Status WriteBackendFile(Env* env, const std::string& dir,
                                            const std::optional<CephBackendOptions>& ceph);
// Settles the backend a store opens on: the recorded one, with `requested` connection settings
// when given. A request for another backend or other pools than the store's is
// kFailedPrecondition: its catalogs would seem empty there. `has_regions`: a store made before
// DIR/backend existed (local).
[[nodiscard]] absl::StatusOr<std::optional<CephBackendOptions>> SettleBackend(
    const BackendRecord& recorded, const std::optional<CephBackendOptions>& requested,
    bool has_regions, const std::string& dir);

}  // namespace strata::store
