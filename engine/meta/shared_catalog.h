#pragma once
// SharedCatalog: the catalog of a region that several stratad nodes share (the RADOS backend),
// and the region's shared section. docs/ceph.md ("Several nodes, one region") and
// docs/formats/rados.md.
//
// Node-scoped keys. A node's own state (its volumes and their bitmaps, its instances, its
// clean-stop mark, its resumable direct snapshots) lives under "n/" node "/": this node names
// them as the schema does ("v/" ...), and reaches other nodes' through "n/" (NodeKey). The rest
// (snapshots, manifests, the chunk index, images, KMS records, counters) is shared.
//
// The region lease. A cls lock on the catalog object, held by one node at a time for a
// control-plane change (util::SharedSection): threads of the holding node share it; other nodes
// wait. It expires after `lease_seconds` unless renewed (a generation-changing write or a nested
// Enter renews a lease older than a third of that), so a killed node holds the region for at
// most that long.
//
// The generation. Every write that changes a shared record nodes cache or read-modify-write
// (any shared key but the chunk index "c/" and manifest entries "m/", "r/") also replaces
// "x/gen" with a fresh token, guarded by the token this node last saw. So a node that entered
// the lease sees at once whether another node changed the region since (foreign_changes()), and
// a write made on stale state (a lapsed lease) fails with kAborted instead of losing an update.

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "meta/catalog.h"
#include "util/shared_section.h"

namespace strata::meta {

struct SharedCatalogOptions {
  std::string node_id;                      // This node (DIR/node-id).
  std::string description;                  // Shown to other nodes ("stratad pid P, data dir D").
  int lease_seconds = 30;                   // A lease not renewed expires after this.
  absl::Duration wait = absl::Seconds(60);  // Enter gives up (kUnavailable) after this.
};

// Thread-safe.
class SharedCatalog final : public Catalog, public util::SharedSection {
 public:
  // Wraps `base`, the omap catalog of `object` in `pool`, and registers this node in it.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<SharedCatalog>> Open(
      std::unique_ptr<Catalog> base, rados::Pool pool, std::string object,
      SharedCatalogOptions options);
  ~SharedCatalog() override;

  // Catalog: node-scoped keys map to this node's; generation-changing writes carry the guard.
  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override;
  absl::StatusOr<std::vector<std::optional<std::string>>> GetMany(
      const std::vector<std::string>& keys) override;
  absl::Status Write(const WriteBatch& batch) override;
  absl::Status Scan(absl::string_view prefix, absl::string_view start, const ScanFn& fn) override;

  // util::SharedSection: the region lease.
  absl::StatusOr<util::SharedHold> Enter() override;
  uint64_t foreign_changes() const override { return foreign_changes_.load(); }

  // The nodes that have served the region ("x/node/" keys), this one included.
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> Nodes();
  // The key `key` (node-scoped, as the schema names it) of node `node`.
  static std::string NodeKey(absl::string_view node, absl::string_view key);
  const std::string& node_id() const { return options_.node_id; }

 private:
  SharedCatalog(std::unique_ptr<Catalog> base, rados::Pool pool, std::string object,
                SharedCatalogOptions options);
  std::string Map(absl::string_view key) const;
  absl::Status TakeLease();
  void Leave();
  // Extends a held lease older than a third of its term.
  void RenewIfOld() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  const std::unique_ptr<Catalog> base_;
  const rados::Pool pool_;
  const std::string object_;
  const SharedCatalogOptions options_;
  const std::string node_prefix_;  // "n/" node "/"

  absl::Mutex mu_;  // The lease's holders in this process.
  int holders_ ABSL_GUARDED_BY(mu_) = 0;
  bool acquiring_ ABSL_GUARDED_BY(mu_) = false;

  absl::Mutex write_mu_;  // Orders generation-changing writes, and the lease's term.
  std::string seen_gen_ ABSL_GUARDED_BY(write_mu_);
  bool held_ ABSL_GUARDED_BY(write_mu_) = false;
  absl::Time taken_at_ ABSL_GUARDED_BY(write_mu_);
  std::atomic<uint64_t> foreign_changes_{0};
};

}  // namespace strata::meta
