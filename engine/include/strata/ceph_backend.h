#pragma once
// The settings of the RADOS backend (StoreOptions::ceph). Kept apart from store.h, and free of
// C++20, because engine/rados compiles as C++17 (librados's headers need it).

#include <cstdint>
#include <string>

namespace strata {

// The RADOS backend: a region's catalog and chunks live in a Ceph cluster, shared by every
// stratad given the same options; volume heads stay in the data directory. docs/ceph.md.
struct CephBackendOptions {
  std::string conf_file;            // ceph.conf. Empty: $CEPH_CONF, then Ceph's own search path.
  std::string pool;                 // Catalog and chunk index (omap: a replicated pool). Required.
  std::string data_pool;            // Chunk objects (may be erasure-coded). Empty: `pool`.
  std::string client_id = "admin";  // The cephx user, without "client.".
  std::string name_space = "strata";  // Region R's objects live in RADOS namespace "<this>.R".
  // Bounds connecting and every cluster operation: past it a call fails (kUnavailable) instead
  // of waiting for a cluster that is down. Default: 30 s.
  uint32_t timeout_seconds = 30;
  // Garbage collection frees an unreferenced chunk only once it has been untouched this long, so
  // that a chunk another node has stored for a snapshot it has not committed yet survives.
  // Default: 1 h (a pending snapshot commits well within it).
  uint64_t gc_grace_seconds = 3600;
  // This node's name in the cluster (its claims on regions). Empty: the data directory's own,
  // DIR/node-id, made at the first start.
  std::string node_id;
};

}  // namespace strata
