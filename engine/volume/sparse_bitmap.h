#pragma once
// A bitmap over a volume's chunks whose 4 KiB leaves are allocated on first set, so a thin
// 1 TiB volume costs a few KiB until written. Leaves are also the unit of persistence
// (meta::kBitmapLeafBytes per catalog value).

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"
#include "meta/schema.h"

namespace strata::volume {

// Test, Set and Clear are thread-safe with each other. Resize, Load and move need exclusive
// access (the owner's lock).
class SparseBitmap {
 public:
  explicit SparseBitmap(uint64_t bit_count);
  ~SparseBitmap();
  SparseBitmap(const SparseBitmap&) = delete;
  SparseBitmap& operator=(const SparseBitmap&) = delete;

  uint64_t bit_count() const { return bit_count_; }
  bool Test(uint64_t bit) const;
  // Sets `bit`; returns true if it was clear. Marks the leaf modified.
  bool Set(uint64_t bit);
  // Sets bits [first, last] a word at a time. Marks the leaves modified.
  void SetRange(uint64_t first, uint64_t last);
  // Clears `bit`; returns true if it was set. Marks the leaf modified.
  bool Clear(uint64_t bit);
  // Returns the first set bit >= `from`, or nullopt.
  std::optional<uint64_t> NextSet(uint64_t from) const;
  // Returns the first clear bit >= `from` below bit_count(), or nullopt.
  std::optional<uint64_t> NextClear(uint64_t from) const;
  uint64_t Count() const;
  // Sets every bit set in `other`.
  void Union(const SparseBitmap& other);
  // Grows to `bit_count` bits (new bits clear). REQUIRES: exclusive access.
  void Resize(uint64_t bit_count);

  uint64_t leaf_count() const { return leaf_count_; }
  // Bytes of leaf `leaf_index` (kBitmapLeafBytes), or nullopt if it was never allocated.
  std::optional<std::string> LeafBytes(uint64_t leaf_index) const;
  // Replaces leaf `leaf_index` with `bytes`; false if the size is wrong or the index out of range.
  // REQUIRES: exclusive access.
  bool LoadLeaf(uint64_t leaf_index, absl::string_view bytes);
  // Returns (index, bytes) of leaves modified since the last call and clears their flags.
  std::vector<std::pair<uint64_t, std::string>> TakeModifiedLeaves();
  // Marks every allocated leaf modified (after a failed persist, or to persist all).
  void MarkLeavesModified(const std::vector<uint64_t>& leaf_indexes);

 private:
  static constexpr uint64_t kWordsPerLeaf = meta::kBitmapLeafBytes / 8;
  struct Leaf {
    std::atomic<uint64_t> words[kWordsPerLeaf] = {};
    std::atomic<bool> modified{false};
  };
  Leaf* GetOrCreateLeaf(uint64_t leaf_index);
  Leaf* FindLeaf(uint64_t leaf_index) const {
    return leaves_[leaf_index].load(std::memory_order_acquire);
  }

  uint64_t bit_count_;
  uint64_t leaf_count_;
  std::unique_ptr<std::atomic<Leaf*>[]> leaves_;
};

}  // namespace strata::volume
