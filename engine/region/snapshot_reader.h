#pragma once
// A completed snapshot opened for reading: its chunks resolved through the region's tree (by
// windows, ResolveWindows), read from the chunk store and deciphered with its domain's key.

#include <cstdint>
#include <functional>
#include <span>

#include "chunk/chunk_store.h"
#include "meta/schema.h"
#include "strata/snapshot.h"
#include "volume/domain_keys.h"
#include "volume/resolve_windows.h"
#include "volume/snapshot_tree.h"

namespace strata::region {

// Thread-safe (its members are const or thread-safe). `tree`, `chunks` and `keys` must outlive
// it.
class SnapshotReader final : public Snapshot {
 public:
  SnapshotReader(const volume::SnapshotTree& tree, chunk::ChunkStore& chunks,
                 const volume::DomainKeys& keys, meta::SnapshotRecord record,
                 volume::SnapshotTree::Ancestry ancestry, uint64_t chunk_size_bytes)
      : tree_(tree),
        chunks_(chunks),
        keys_(keys),
        record_(std::move(record)),
        ancestry_(std::move(ancestry)),
        chunk_size_bytes_(chunk_size_bytes) {}
  ~SnapshotReader() override {
    if (on_close_) on_close_();
  }
  // Called when the reader is destroyed (the region counts the readers of each snapshot).
  void set_on_close(std::function<void()> on_close) { on_close_ = std::move(on_close); }
  const std::string& id() const override { return record_.id; }
  uint64_t size_bytes() const override { return record_.volume_size_bytes; }
  bool reads_wait_on_network() const override { return chunks_.reads_wait_on_network(); }
  // Fails (kNotFound) when the snapshot was deleted while it read: a deletion may merge the
  // snapshot's entries into its child, so what it resolved may be stale.
  absl::Status Read(uint64_t offset_bytes, std::span<std::byte> out) override;

 private:
  const volume::SnapshotTree& tree_;
  chunk::ChunkStore& chunks_;
  const volume::DomainKeys& keys_;
  const meta::SnapshotRecord record_;
  const volume::SnapshotTree::Ancestry ancestry_;
  const uint64_t chunk_size_bytes_;
  volume::ResolveWindows resolved_;
  std::function<void()> on_close_;
};

}  // namespace strata::region
