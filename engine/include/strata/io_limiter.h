#pragma once
// A volume's I/O budget: what its type, IOPS and throughput allow (docs/qos.md). Every NBD
// connection of the volume asks the same limiter before it runs a read or a write, so multi-conn
// shares one budget.

#include <cstdint>

#include "absl/time/time.h"

namespace strata {

// Counters a volume's users look at (CloudWatch's EBS metrics), since the volume was opened.
struct VolumeIoStats {
  uint64_t read_ops = 0, write_ops = 0;
  uint64_t read_bytes = 0, write_bytes = 0;
  uint64_t queued = 0;         // Requests held back right now (VolumeQueueLength's share).
  uint64_t held_back = 0;      // Requests ever held back.
  double burst_balance = 100;  // Percent of the credit bucket left (gp2, st1, sc1; else 100).
  bool enforced = false;       // False: counted only (--qos off, or the volume's strata:qos tag).
};

// Thread-safe; Admit takes no lock.
class IoLimiter {
 public:
  virtual ~IoLimiter() = default;
  // Charges one request of `bytes` at `offset_bytes` to the budget and returns how long the
  // caller must hold it back so that the volume keeps to its rates (zero below them). The
  // request is charged either way: a caller that waits keeps the volume at its rate.
  [[nodiscard]] virtual absl::Duration Admit(bool write, uint64_t offset_bytes, uint64_t bytes) = 0;
  // The caller finished holding a request back (for the queue length figure).
  virtual void Released() = 0;
  [[nodiscard]] virtual VolumeIoStats Stats() const = 0;
};

}  // namespace strata
