#pragma once
// A volume's I/O budget: what its type, IOPS and throughput allow (docs/qos.md). Every NBD
// connection of the volume asks the same limiter before it runs a read or a write, so multi-conn
// shares one budget.

#include <cstdint>
#include <vector>

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
  bool has_burst_bucket = false;  // gp2, st1, sc1: burst_balance means something.
};

// What a volume did in `seconds` seconds from Unix second `start_second` (CloudWatch's AWS/EBS
// metrics are made from these): requests finished, their bytes, their summed latency from
// admission to reply (VolumeTotalReadTime; with the write time over the span, the average
// VolumeQueueLength), the seconds without a request, and the burst balance at the end.
struct VolumeIoSample {
  int64_t start_second = 0;
  uint32_t seconds = 1;  // 1, or 60 for samples older than 15 minutes.
  uint64_t read_ops = 0, write_ops = 0;
  uint64_t read_bytes = 0, write_bytes = 0;
  uint64_t read_time_ns = 0, write_time_ns = 0;
  uint32_t idle_seconds = 0;
  double burst_balance = 100;
};

// Thread-safe; Admit takes no lock.
class IoLimiter {
 public:
  virtual ~IoLimiter() = default;
  // Charges one request of `bytes` at `offset_bytes` to the budget and returns how long the
  // caller must hold it back so that the volume keeps to its rates (zero below them). The
  // request is charged either way: a caller that waits keeps the volume at its rate. `now_ns`
  // is the caller's clock reading (absl::GetCurrentTimeNanos), which it also uses to time the
  // request for Finished: one clock read per request.
  [[nodiscard]] virtual absl::Duration Admit(bool write, uint64_t offset_bytes, uint64_t bytes,
                                             int64_t now_ns) = 0;
  // The caller finished holding a request back (VolumeIoStats::queued).
  virtual void Released() = 0;
  // A request admitted `latency` ago has been answered (its time counts toward the metrics).
  virtual void Finished(bool write, absl::Duration latency) = 0;
  [[nodiscard]] virtual VolumeIoStats Stats() const = 0;
  // The volume's samples that start in [from_second, to_second) (Unix seconds), oldest first:
  // one per second for the last 15 minutes, one per minute before that for 24 hours, since the
  // volume was opened on this node.
  [[nodiscard]] virtual std::vector<VolumeIoSample> Samples(int64_t from_second,
                                                            int64_t to_second) const = 0;
};

}  // namespace strata
