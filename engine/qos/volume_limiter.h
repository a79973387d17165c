#pragma once
// VolumeLimiter: the IoLimiter of one volume. Each lane of qos::Limits (I/O units, bytes) is
// held by token buckets kept as a theoretical arrival time (the GCRA form: one atomic per
// bucket, updated by compare-and-swap, so a request below the limits costs a few atomic
// operations and no lock): a baseline bucket whose size is the lane's credits (gp2's 5.4 million
// I/O credits, st1/sc1's throughput credits) or a few milliseconds of its rate, and for lanes
// with credits a second bucket at the burst rate. A request waits for the latest of its buckets.

#include <atomic>
#include <cstdint>

#include "absl/time/time.h"
#include "qos/io_history.h"
#include "qos/volume_performance.h"
#include "strata/io_limiter.h"

namespace strata::qos {

// One token bucket in GCRA form. Thread-safe.
class Bucket {
 public:
  // `rate` units per second (0: unlimited), holding up to `capacity` units. Keeps what has
  // been spent.
  void Configure(double rate, double capacity);
  // Spends `cost` units at `now_ns`: the nanoseconds until the spending conforms.
  int64_t Reserve(double cost, int64_t now_ns);
  // Units left in the bucket at `now_ns` (its capacity when untouched).
  double Balance(int64_t now_ns) const;
  // Leaves `units` in the bucket at `now_ns` (at most its capacity).
  void SetBalance(double units, int64_t now_ns);
  double capacity() const;

 private:
  std::atomic<int64_t> tat_ns_{0};  // When the bucket would be full again.
  std::atomic<double> ns_per_unit_{0};
  std::atomic<int64_t> tolerance_ns_{0};  // capacity × ns_per_unit.
};

// Keeps the volume's history (IoHistory) sampled once a second while it exists.
class VolumeLimiter final : public IoLimiter {
 public:
  // How long a lane without credits may run ahead of its rate: the largest burst it allows.
  static constexpr double kSmoothingSeconds = 0.02;

  VolumeLimiter();
  ~VolumeLimiter() override;
  VolumeLimiter(const VolumeLimiter&) = delete;
  VolumeLimiter& operator=(const VolumeLimiter&) = delete;

  // Holds the volume to `limits`; `enabled` false only counts. Callable at any time (ModifyVolume
  // applies at once); the buckets keep what was spent.
  void Configure(const Limits& limits, bool enabled);
  // Sets what is left in the credit buckets (gp2, st1, sc1) to `percent` of their size, as if
  // the volume had spent the rest (to rehearse a volume that has used its burst).
  void SetBurstBalance(double percent) { SetBurstBalanceAt(percent, absl::GetCurrentTimeNanos()); }
  void SetBurstBalanceAt(double percent, int64_t now_ns);

  absl::Duration Admit(bool write, uint64_t offset_bytes, uint64_t bytes, int64_t now_ns) override {
    return absl::Nanoseconds(AdmitAt(write, offset_bytes, bytes, now_ns));
  }
  void Released() override { queued_.fetch_sub(1, std::memory_order_relaxed); }
  void Finished(bool write, absl::Duration latency) override;
  VolumeIoStats Stats() const override { return StatsAt(absl::GetCurrentTimeNanos()); }
  VolumeIoStats StatsAt(int64_t now_ns) const;
  std::vector<VolumeIoSample> Samples(int64_t from_second, int64_t to_second) const override {
    return history_.Samples(from_second, to_second);
  }
  // Records the second that ended at Unix second `second` + 1 (the sampler does, once a second;
  // tests call it with their own clock).
  void SampleAt(int64_t second, int64_t now_ns);

  // Admit's wait in nanoseconds (tests call it with their own clock).
  int64_t AdmitAt(bool write, uint64_t offset_bytes, uint64_t bytes, int64_t now_ns);

 private:
  struct LaneBuckets {
    Bucket base;
    Bucket peak;  // Only for a lane with credits.
    void Configure(const Lane& lane);
    int64_t Reserve(double cost, int64_t now_ns);
  };
  std::atomic<bool> enabled_{false};
  std::atomic<uint64_t> unit_bytes_{256 * 1024};
  std::atomic<bool> merges_sequential_{false};
  std::atomic<uint64_t> next_sequential_{UINT64_MAX};  // Where a sequential request starts.
  LaneBuckets units_, bytes_;
  std::atomic<uint64_t> read_ops_{0}, write_ops_{0}, read_bytes_{0}, write_bytes_{0};
  std::atomic<uint64_t> read_time_ns_{0}, write_time_ns_{0};
  std::atomic<uint64_t> queued_{0}, held_back_{0};
  IoHistory history_;
};

}  // namespace strata::qos
