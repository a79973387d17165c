#include "volume/sparse_bitmap.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "absl/strings/string_view.h"

namespace strata::volume {
namespace {

uint64_t LeavesFor(uint64_t bits) {
  return (bits + meta::kBitmapLeafBits - 1) / meta::kBitmapLeafBits;
}

}  // namespace

SparseBitmap::SparseBitmap(uint64_t bit_count)
    : bit_count_(bit_count),
      leaf_count_(LeavesFor(bit_count)),
      leaves_(new std::atomic<Leaf*>[leaf_count_]) {
  for (uint64_t i = 0; i < leaf_count_; ++i) leaves_[i].store(nullptr);
}

SparseBitmap::~SparseBitmap() {
  for (uint64_t i = 0; i < leaf_count_; ++i) delete leaves_[i].load();
}

SparseBitmap::Leaf* SparseBitmap::GetOrCreateLeaf(uint64_t leaf_index) {
  Leaf* leaf = FindLeaf(leaf_index);
  if (leaf != nullptr) return leaf;
  auto fresh = std::make_unique<Leaf>();
  if (leaves_[leaf_index].compare_exchange_strong(leaf, fresh.get(), std::memory_order_acq_rel)) {
    return fresh.release();
  }
  return leaf;  // Another thread won the race; `leaf` now holds its leaf.
}

bool SparseBitmap::Test(uint64_t bit) const {
  if (bit >= bit_count_) return false;
  const Leaf* leaf = FindLeaf(bit / meta::kBitmapLeafBits);
  if (leaf == nullptr) return false;
  const uint64_t in_leaf = bit % meta::kBitmapLeafBits;
  return (leaf->words[in_leaf / 64].load(std::memory_order_acquire) >> (in_leaf % 64)) & 1;
}

bool SparseBitmap::Set(uint64_t bit) {
  if (bit >= bit_count_) return false;
  Leaf* leaf = GetOrCreateLeaf(bit / meta::kBitmapLeafBits);
  const uint64_t in_leaf = bit % meta::kBitmapLeafBits;
  const uint64_t mask = uint64_t{1} << (in_leaf % 64);
  const uint64_t old = leaf->words[in_leaf / 64].fetch_or(mask, std::memory_order_acq_rel);
  if (old & mask) return false;
  leaf->modified.store(true, std::memory_order_release);
  return true;
}

void SparseBitmap::SetRange(uint64_t first, uint64_t last) {
  last = std::min(last, bit_count_ - 1);
  for (uint64_t bit = first; bit_count_ > 0 && bit <= last;) {
    const uint64_t leaf_index = bit / meta::kBitmapLeafBits;
    Leaf* leaf = GetOrCreateLeaf(leaf_index);
    const uint64_t leaf_end = std::min(last + 1, (leaf_index + 1) * meta::kBitmapLeafBits);
    while (bit < leaf_end) {
      const uint64_t in_leaf = bit % meta::kBitmapLeafBits;
      const uint64_t n = std::min<uint64_t>(64 - in_leaf % 64, leaf_end - bit);
      const uint64_t mask = (n == 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1) << (in_leaf % 64);
      leaf->words[in_leaf / 64].fetch_or(mask, std::memory_order_acq_rel);
      bit += n;
    }
    leaf->modified.store(true, std::memory_order_release);
  }
}

bool SparseBitmap::Clear(uint64_t bit) {
  if (bit >= bit_count_) return false;
  Leaf* leaf = FindLeaf(bit / meta::kBitmapLeafBits);
  if (leaf == nullptr) return false;
  const uint64_t in_leaf = bit % meta::kBitmapLeafBits;
  const uint64_t mask = uint64_t{1} << (in_leaf % 64);
  const uint64_t old = leaf->words[in_leaf / 64].fetch_and(~mask, std::memory_order_acq_rel);
  if (!(old & mask)) return false;
  leaf->modified.store(true, std::memory_order_release);
  return true;
}

std::optional<uint64_t> SparseBitmap::NextSet(uint64_t from) const {
  for (uint64_t bit = from; bit < bit_count_;) {
    const uint64_t leaf_index = bit / meta::kBitmapLeafBits;
    const Leaf* leaf = FindLeaf(leaf_index);
    if (leaf == nullptr) {
      bit = (leaf_index + 1) * meta::kBitmapLeafBits;
      continue;
    }
    const uint64_t in_leaf = bit % meta::kBitmapLeafBits;
    uint64_t word = leaf->words[in_leaf / 64].load(std::memory_order_acquire);
    word &= ~uint64_t{0} << (in_leaf % 64);
    if (word != 0) {
      const uint64_t found = leaf_index * meta::kBitmapLeafBits + (in_leaf / 64) * 64 +
                             static_cast<uint64_t>(std::countr_zero(word));
      return found < bit_count_ ? std::optional(found) : std::nullopt;
    }
    bit = leaf_index * meta::kBitmapLeafBits + (in_leaf / 64 + 1) * 64;
  }
  return std::nullopt;
}

std::optional<uint64_t> SparseBitmap::NextClear(uint64_t from) const {
  for (uint64_t bit = from; bit < bit_count_;) {
    const uint64_t leaf_index = bit / meta::kBitmapLeafBits;
    const Leaf* leaf = FindLeaf(leaf_index);
    if (leaf == nullptr) return bit;
    const uint64_t in_leaf = bit % meta::kBitmapLeafBits;
    uint64_t word = ~leaf->words[in_leaf / 64].load(std::memory_order_acquire);
    word &= ~uint64_t{0} << (in_leaf % 64);
    if (word != 0) {
      const uint64_t found = leaf_index * meta::kBitmapLeafBits + (in_leaf / 64) * 64 +
                             static_cast<uint64_t>(std::countr_zero(word));
      return found < bit_count_ ? std::optional(found) : std::nullopt;
    }
    bit = leaf_index * meta::kBitmapLeafBits + (in_leaf / 64 + 1) * 64;
  }
  return std::nullopt;
}

uint64_t SparseBitmap::Count() const {
  uint64_t count = 0;
  for (uint64_t i = 0; i < leaf_count_; ++i) {
    const Leaf* leaf = FindLeaf(i);
    if (leaf == nullptr) continue;
    for (const auto& word : leaf->words)
      count += std::popcount(word.load(std::memory_order_relaxed));
  }
  return count;
}

void SparseBitmap::Union(const SparseBitmap& other) {
  for (std::optional<uint64_t> bit = other.NextSet(0); bit.has_value();
       bit = other.NextSet(*bit + 1)) {
    Set(*bit);
  }
}

void SparseBitmap::Resize(uint64_t bit_count) {
  if (bit_count <= bit_count_) return;
  const uint64_t leaf_count = LeavesFor(bit_count);
  if (leaf_count > leaf_count_) {
    std::unique_ptr<std::atomic<Leaf*>[]> leaves(new std::atomic<Leaf*>[leaf_count]);
    for (uint64_t i = 0; i < leaf_count; ++i) {
      leaves[i].store(i < leaf_count_ ? leaves_[i].load() : nullptr);
    }
    leaves_ = std::move(leaves);
    leaf_count_ = leaf_count;
  }
  bit_count_ = bit_count;
}

std::optional<std::string> SparseBitmap::LeafBytes(uint64_t leaf_index) const {
  if (leaf_index >= leaf_count_) return std::nullopt;
  const Leaf* leaf = FindLeaf(leaf_index);
  if (leaf == nullptr) return std::nullopt;
  std::string bytes(meta::kBitmapLeafBytes, '\0');
  for (uint64_t w = 0; w < kWordsPerLeaf; ++w) {
    const uint64_t word = leaf->words[w].load(std::memory_order_acquire);
    std::memcpy(bytes.data() + w * 8, &word, 8);
  }
  return bytes;
}

bool SparseBitmap::LoadLeaf(uint64_t leaf_index, absl::string_view bytes) {
  if (leaf_index >= leaf_count_ || bytes.size() != meta::kBitmapLeafBytes) return false;
  Leaf* leaf = GetOrCreateLeaf(leaf_index);
  for (uint64_t w = 0; w < kWordsPerLeaf; ++w) {
    uint64_t word = 0;
    std::memcpy(&word, bytes.data() + w * 8, 8);
    leaf->words[w].store(word);
  }
  return true;
}

std::vector<std::pair<uint64_t, std::string>> SparseBitmap::TakeModifiedLeaves() {
  std::vector<std::pair<uint64_t, std::string>> out;
  for (uint64_t i = 0; i < leaf_count_; ++i) {
    Leaf* leaf = FindLeaf(i);
    // Clear the flag before copying: a Set racing with the copy flags the leaf again.
    if (leaf == nullptr || !leaf->modified.exchange(false, std::memory_order_acq_rel)) continue;
    out.emplace_back(i, *LeafBytes(i));
  }
  return out;
}

void SparseBitmap::MarkLeavesModified(const std::vector<uint64_t>& leaf_indexes) {
  for (uint64_t i : leaf_indexes) {
    if (Leaf* leaf = i < leaf_count_ ? FindLeaf(i) : nullptr; leaf != nullptr) {
      leaf->modified.store(true, std::memory_order_release);
    }
  }
}

}  // namespace strata::volume
