#pragma once
// A seeded block workload and the model that judges what must survive a crash (DESIGN.md
// invariants 1-3). Every 512-byte sector written carries (value id, sector index), so a read
// tells which write each sector holds, torn writes included.

#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace strata::crash {

inline constexpr uint64_t kBlockBytes = 4096;
inline constexpr uint64_t kSector = 512;

// Fills `out` (a whole number of sectors) with value `id` for blocks starting at `block`.
inline void FillValue(std::span<std::byte> out, uint64_t id, uint64_t first_sector) {
  for (uint64_t s = 0; s < out.size() / kSector; ++s) {
    std::byte* p = out.data() + s * kSector;
    const uint64_t sector = first_sector + s;
    std::memset(p, static_cast<int>(id & 0xFF) | 1, kSector);
    std::memcpy(p, &id, 8);
    std::memcpy(p + 8, &sector, 8);
  }
}

// The value id a sector holds: 0 for zeros, UINT64_MAX for garbage.
inline uint64_t SectorValue(std::span<const std::byte> sector, uint64_t sector_index) {
  static const std::vector<std::byte> zeros(kSector);
  if (std::memcmp(sector.data(), zeros.data(), kSector) == 0) return 0;
  uint64_t id = 0, index = 0;
  std::memcpy(&id, sector.data(), 8);
  std::memcpy(&index, sector.data() + 8, 8);
  std::vector<std::byte> want(kSector);
  FillValue(want, id, sector_index);
  if (index != sector_index || std::memcmp(want.data(), sector.data(), kSector) != 0)
    return UINT64_MAX;
  return id;
}

enum class OpKind { kWrite, kWriteFua, kTrim, kFlush, kSnapshot, kDeleteSnapshot, kGc };

struct Op {
  OpKind kind;
  uint64_t block = 0;  // First block (writes, trims).
  uint64_t block_count = 0;
  uint64_t value = 0;  // Value id for writes; index into snapshots for deletions.
};

// Generates the op sequence for `seed` over a volume of `block_count` blocks.
inline std::vector<Op> MakeWorkload(uint64_t seed, uint64_t block_count, size_t op_count) {
  std::mt19937_64 rng(seed);
  std::vector<Op> ops;
  uint64_t snapshots = 0;
  for (size_t i = 0; i < op_count; ++i) {
    const uint64_t r = rng() % 100;
    Op op{OpKind::kWrite};
    op.block = rng() % block_count;
    op.block_count = 1 + rng() % std::min<uint64_t>(32, block_count - op.block);
    op.value = i + 1;
    if (r < 55) {
      op.kind = OpKind::kWrite;
    } else if (r < 65) {
      op.kind = OpKind::kWriteFua;
    } else if (r < 72) {
      op.kind = OpKind::kTrim;
    } else if (r < 85) {
      op.kind = OpKind::kFlush;
    } else if (r < 93) {
      op.kind = OpKind::kSnapshot;
      ++snapshots;
    } else if (r < 98 && snapshots > 0) {
      op.kind = OpKind::kDeleteSnapshot;
      op.value = rng() % snapshots;
    } else {
      op.kind = OpKind::kGc;
    }
    ops.push_back(op);
  }
  return ops;
}

inline constexpr uint64_t kSectorsPerBlock = kBlockBytes / kSector;

// What each sector may hold after a crash, given the ops that completed (and one that may have
// been in flight). Sectors, not blocks: a torn write leaves a block part old, part new.
class Model {
 public:
  explicit Model(uint64_t block_count)
      : durable_(block_count * kSectorsPerBlock, 0),
        since_(block_count * kSectorsPerBlock),
        current_(block_count * kSectorsPerBlock, 0) {}

  // Declares what sector `sector` durably holds (at the start, after a crash).
  void SetDurable(uint64_t sector, uint64_t value) {
    durable_[sector] = current_[sector] = value;
    since_[sector].clear();
  }

  void Apply(const Op& op) {
    switch (op.kind) {
      case OpKind::kWrite:
      case OpKind::kWriteFua:
      case OpKind::kTrim: {
        const uint64_t value = op.kind == OpKind::kTrim ? 0 : op.value;
        for (uint64_t b = op.block * kSectorsPerBlock;
             b < (op.block + op.block_count) * kSectorsPerBlock; ++b) {
          current_[b] = value;
          if (op.kind == OpKind::kWriteFua) {
            durable_[b] = value;
            since_[b].clear();
          } else {
            since_[b].insert(value);
          }
        }
        break;
      }
      case OpKind::kFlush:
        durable_ = current_;
        for (auto& s : since_) s.clear();
        break;
      default:
        break;
    }
  }
  // An op that may or may not have happened (in flight at the crash).
  void ApplyMaybe(const Op& op) {
    if (op.kind == OpKind::kWrite || op.kind == OpKind::kWriteFua || op.kind == OpKind::kTrim) {
      const uint64_t value = op.kind == OpKind::kTrim ? 0 : op.value;
      for (uint64_t b = op.block * kSectorsPerBlock;
           b < (op.block + op.block_count) * kSectorsPerBlock; ++b) {
        since_[b].insert(value);
      }
    }
  }
  bool Allowed(uint64_t sector, uint64_t value) const {
    return value == durable_[sector] || since_[sector].contains(value);
  }
  // Per sector.
  const std::vector<uint64_t>& current() const { return current_; }
  uint64_t durable(uint64_t sector) const { return durable_[sector]; }

 private:
  std::vector<uint64_t> durable_;
  std::vector<std::set<uint64_t>> since_;
  std::vector<uint64_t> current_;
};

}  // namespace strata::crash
