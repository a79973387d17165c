#include "volume/resolve_windows.h"

#include <algorithm>

#include "util/status_macros.h"

namespace strata::volume {

absl::StatusOr<std::vector<ChunkEntry>> ResolveWindows::Resolve(
    const SnapshotTree& tree, const std::string& snapshot_id, uint64_t tree_id,
    const SnapshotTree::Ancestry& ancestry, uint64_t first, uint64_t count) {
  std::vector<ChunkEntry> out;
  out.reserve(count);
  for (uint64_t c = first; c < first + count;) {
    const uint64_t window = c / kWindow;
    std::shared_ptr<const std::vector<ChunkEntry>> entries;
    {
      absl::MutexLock lock(&mu_);
      if (snapshot_id_ == snapshot_id) {
        if (auto it = windows_.find(window); it != windows_.end()) entries = it->second;
      }
    }
    if (entries == nullptr) {
      STRATA_ASSIGN_OR_RETURN(std::vector<ChunkEntry> fetched,
                              tree.ResolveRange(tree_id, ancestry, window * kWindow, kWindow));
      entries = std::make_shared<const std::vector<ChunkEntry>>(std::move(fetched));
      absl::MutexLock lock(&mu_);
      if (snapshot_id_ != snapshot_id || windows_.size() >= kWindowsKept) {
        windows_.clear();
        snapshot_id_ = snapshot_id;
      }
      windows_[window] = entries;
    }
    const uint64_t end = std::min(first + count, (window + 1) * kWindow);
    for (; c < end; ++c) out.push_back((*entries)[c - window * kWindow]);
  }
  return out;
}

}  // namespace strata::volume
