#pragma once
// The connection to a Ceph cluster (librados) that a region's catalog and chunk store share on
// the RADOS backend (docs/ceph.md). librados errors become absl::Status here, once. Like
// pool.h, this header names no librados type (cluster.cc does, as C++17).

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rados/pool.h"
#include "strata/ceph_backend.h"

namespace strata::rados {

// A librados return code (0 or -errno) as a status naming `context`: ECANCELED (a guard failed)
// and ERANGE/EOVERFLOW (a version assertion) are kAborted, ETIMEDOUT and the connection errors
// kUnavailable (the cluster is unreachable: retry later), the rest as io::ErrnoToStatus maps
// a file's errors (ENOENT kNotFound, EEXIST kAlreadyExists, EIO kDataLoss, ...).
absl::Status FromRados(int rc, absl::string_view context);

// One node's claim on its part of a region: a cls "lock" named after the node on the region's
// catalog object, taken at open and released at a clean stop. Several nodes share a region;
// the claim keeps two processes from serving one node's volumes (docs/ceph.md).
class RegionClaim {
 public:
  RegionClaim(Pool pool, std::string object, std::string lock, std::string cookie)
      : pool_(std::move(pool)),
        object_(std::move(object)),
        lock_(std::move(lock)),
        cookie_(std::move(cookie)) {}
  ~RegionClaim();
  RegionClaim(const RegionClaim&) = delete;
  RegionClaim& operator=(const RegionClaim&) = delete;

 private:
  Pool pool_;
  const std::string object_;
  const std::string lock_;
  const std::string cookie_;
};

// Thread-safe: librados clients and IoCtx copies may be used from any thread.
class Cluster {
 public:
  // Connects within options.timeout_seconds, then checks that both pools exist. A missing conf
  // file, an unreachable cluster, refused credentials or a missing pool is a clear error.
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<Cluster>> Connect(
      const CephBackendOptions& options);
  ~Cluster();

  // An I/O context on the index pool (catalog, omap) or the data pool (chunk objects), in the
  // RADOS namespace `name_space`.
  Pool IndexPool(const std::string& name_space) const;
  Pool DataPool(const std::string& name_space) const;
  // Claims node `node_id`'s part of the region whose catalog is `object` in the index pool's
  // namespace `name_space`. A claim the same node left (it stopped without releasing: a crash)
  // is taken over; other nodes' claims are theirs.
  [[nodiscard]] absl::StatusOr<std::unique_ptr<RegionClaim>> Claim(const std::string& name_space,
                                                                   const std::string& object,
                                                                   const std::string& node_id,
                                                                   const std::string& description);
  // This client's entity name in the cluster ("client.<instance id>"), as cls lock lists lockers.
  std::string ClientName() const;
  // This client's addresses, as librados prints them ("[v2:IP:PORT/NONCE,...]" or one).
  std::string ClientAddresses() const;
  // Blocklists a client `address` (as cls lock lists lockers) for `expire_seconds`, then waits
  // for the cluster's newest OSD map: from then on the OSDs refuse that client's operations.
  int Blocklist(const std::string& address, uint32_t expire_seconds);
  // The namespace of a region's objects: "<options.name_space>.<region>".
  std::string RegionNamespace(absl::string_view region) const;
  const CephBackendOptions& options() const { return options_; }
  // "rados (pool P, data pool D, namespace N, client.ID, conf F, node X)", for status and logs.
  std::string Describe() const;

 private:
  struct State;  // librados's client and I/O contexts (cluster.cc).
  explicit Cluster(CephBackendOptions options);

  const CephBackendOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace strata::rados
