#pragma once
// IoHistory: a volume's I/O figures over time, for CloudWatch-style metrics (docs/qos.md). It
// takes the volume's running totals once a second and keeps what changed in each second for the
// last 15 minutes and in each minute for the last 24 hours: two fixed rings, about 185 KiB per
// open volume, nothing allocated after construction.
//
// IoSampler: one thread for the process that gives every registered history its sample at
// each whole second, so the I/O path itself never touches the history.

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "strata/io_limiter.h"

namespace strata::qos {

// A volume's running totals since it was opened (the limiter's counters).
struct IoTotals {
  uint64_t read_ops = 0, write_ops = 0;
  uint64_t read_bytes = 0, write_bytes = 0;
  uint64_t read_time_ns = 0, write_time_ns = 0;
};

class IoHistory {
 public:
  static constexpr int kSecondSamples = 15 * 60;
  static constexpr int kMinuteSamples = 24 * 60;

  IoHistory();

  // Records the totals as they are at the end of Unix second `second` and the burst balance
  // (percent) then. Seconds before the last one recorded are ignored; seconds skipped since it
  // (a stalled sampler) count as idle, and what they did lands in this one.
  void Record(int64_t second, const IoTotals& totals, double burst_balance);

  // The samples that start in [from_second, to_second), oldest first: one per second while the
  // seconds are kept, else one per minute (those that started before the seconds' ring).
  std::vector<VolumeIoSample> Samples(int64_t from_second, int64_t to_second) const;

 private:
  struct Ring {
    std::vector<VolumeIoSample> slots;  // By start / width, modulo the size.
    uint32_t width = 1;                 // Seconds per sample.
    void Add(const VolumeIoSample& delta);
    void Collect(int64_t from, int64_t to, std::vector<VolumeIoSample>& out) const;
  };

  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  int64_t last_second_ ABSL_GUARDED_BY(mu_) = 0;
  IoTotals last_ ABSL_GUARDED_BY(mu_);
  Ring seconds_ ABSL_GUARDED_BY(mu_);
  Ring minutes_ ABSL_GUARDED_BY(mu_);
};

// Calls every registered sampler once per whole second on one thread, started with the first
// registration and ended when none is left. Thread-safe.
class IoSampler {
 public:
  using Sample = std::function<void(int64_t second)>;
  // Registers `sample` under `key` (unique, e.g. the owner's address) until Unregister(key),
  // which returns only once no call of it runs.
  static void Register(const void* key, Sample sample);
  static void Unregister(const void* key);
};

}  // namespace strata::qos
