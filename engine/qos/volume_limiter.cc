#include "qos/volume_limiter.h"

#include <algorithm>
#include <cmath>

namespace strata::qos {

void Bucket::Configure(double rate, double capacity) {
  const double per = rate > 0 ? 1e9 / rate : 0;
  ns_per_unit_.store(per, std::memory_order_relaxed);
  tolerance_ns_.store(static_cast<int64_t>(std::llround(capacity * per)),
                      std::memory_order_relaxed);
}

int64_t Bucket::Reserve(double cost, int64_t now_ns) {
  const double per = ns_per_unit_.load(std::memory_order_relaxed);
  if (per <= 0) return 0;
  const auto spend = static_cast<int64_t>(std::llround(cost * per));
  const int64_t tolerance = tolerance_ns_.load(std::memory_order_relaxed);
  int64_t tat = tat_ns_.load(std::memory_order_relaxed);
  int64_t next = 0;
  do {
    // `tat` is when the bucket is full again: an idle bucket (tat in the past) is full and saves
    // up no more.
    next = std::max(tat, now_ns) + spend;
  } while (!tat_ns_.compare_exchange_weak(tat, next, std::memory_order_relaxed));
  return std::max<int64_t>(0, next - tolerance - now_ns);
}

double Bucket::Balance(int64_t now_ns) const {
  const double per = ns_per_unit_.load(std::memory_order_relaxed);
  if (per <= 0) return 0;
  const int64_t tolerance = tolerance_ns_.load(std::memory_order_relaxed);
  const int64_t debt = std::max<int64_t>(0, tat_ns_.load(std::memory_order_relaxed) - now_ns);
  return std::max(0.0, static_cast<double>(tolerance - debt) / per);
}

double Bucket::capacity() const {
  const double per = ns_per_unit_.load(std::memory_order_relaxed);
  return per > 0 ? static_cast<double>(tolerance_ns_.load(std::memory_order_relaxed)) / per : 0;
}

void Bucket::SetBalance(double units, int64_t now_ns) {
  const double per = ns_per_unit_.load(std::memory_order_relaxed);
  if (per <= 0) return;
  const int64_t tolerance = tolerance_ns_.load(std::memory_order_relaxed);
  const auto left = static_cast<int64_t>(
      std::llround(std::clamp(units * per, 0.0, static_cast<double>(tolerance))));
  tat_ns_.store(now_ns + tolerance - left, std::memory_order_relaxed);
}

void VolumeLimiter::LaneBuckets::Configure(const Lane& lane) {
  if (lane.credits > 0) {
    base.Configure(lane.baseline, lane.credits);
    peak.Configure(lane.burst, lane.burst * kSmoothingSeconds);
  } else {
    base.Configure(lane.baseline, lane.baseline * kSmoothingSeconds);
    peak.Configure(0, 0);
  }
}

int64_t VolumeLimiter::LaneBuckets::Reserve(double cost, int64_t now_ns) {
  return std::max(base.Reserve(cost, now_ns), peak.Reserve(cost, now_ns));
}

VolumeLimiter::VolumeLimiter() {
  IoSampler::Register(this,
                      [this](int64_t second) { SampleAt(second, absl::GetCurrentTimeNanos()); });
}

VolumeLimiter::~VolumeLimiter() { IoSampler::Unregister(this); }

void VolumeLimiter::SetBurstBalanceAt(double percent, int64_t now_ns) {
  for (LaneBuckets* lane : {&units_, &bytes_}) {
    if (lane->peak.capacity() > 0) {
      lane->base.SetBalance(lane->base.capacity() * std::clamp(percent, 0.0, 100.0) / 100, now_ns);
    }
  }
}

void VolumeLimiter::Finished(bool write, absl::Duration latency) {
  const auto ns = static_cast<uint64_t>(std::max<int64_t>(0, absl::ToInt64Nanoseconds(latency)));
  (write ? write_time_ns_ : read_time_ns_).fetch_add(ns, std::memory_order_relaxed);
}

void VolumeLimiter::SampleAt(int64_t second, int64_t now_ns) {
  const VolumeIoStats now = StatsAt(now_ns);
  const IoTotals totals{.read_ops = now.read_ops,
                        .write_ops = now.write_ops,
                        .read_bytes = now.read_bytes,
                        .write_bytes = now.write_bytes,
                        .read_time_ns = read_time_ns_.load(std::memory_order_relaxed),
                        .write_time_ns = write_time_ns_.load(std::memory_order_relaxed)};
  history_.Record(second, totals, now.burst_balance);
}

void VolumeLimiter::Configure(const Limits& limits, bool enabled) {
  unit_bytes_.store(std::max<uint64_t>(limits.io_unit_bytes, 1), std::memory_order_relaxed);
  merges_sequential_.store(limits.merges_sequential, std::memory_order_relaxed);
  units_.Configure(limits.units);
  bytes_.Configure(limits.bytes);
  enabled_.store(enabled, std::memory_order_relaxed);
}

int64_t VolumeLimiter::AdmitAt(bool write, uint64_t offset_bytes, uint64_t bytes, int64_t now_ns) {
  (write ? write_ops_ : read_ops_).fetch_add(1, std::memory_order_relaxed);
  (write ? write_bytes_ : read_bytes_).fetch_add(bytes, std::memory_order_relaxed);
  if (!enabled_.load(std::memory_order_relaxed)) return 0;
  const double unit = static_cast<double>(unit_bytes_.load(std::memory_order_relaxed));
  // AWS's count: SSD I/O in units of up to 256 KiB; HDD I/O in 1 MiB units, where a request
  // that continues the previous one shares its unit and any other costs at least a whole one.
  const bool sequential =
      merges_sequential_.load(std::memory_order_relaxed) &&
      next_sequential_.exchange(offset_bytes + bytes, std::memory_order_relaxed) == offset_bytes;
  const double units = sequential ? static_cast<double>(bytes) / unit
                                  : std::max(1.0, std::ceil(static_cast<double>(bytes) / unit));
  const int64_t wait =
      std::max(units_.Reserve(units, now_ns), bytes_.Reserve(static_cast<double>(bytes), now_ns));
  if (wait > 0) {
    queued_.fetch_add(1, std::memory_order_relaxed);
    held_back_.fetch_add(1, std::memory_order_relaxed);
  }
  return wait;
}

VolumeIoStats VolumeLimiter::StatsAt(int64_t now_ns) const {
  VolumeIoStats s;
  s.read_ops = read_ops_.load(std::memory_order_relaxed);
  s.write_ops = write_ops_.load(std::memory_order_relaxed);
  s.read_bytes = read_bytes_.load(std::memory_order_relaxed);
  s.write_bytes = write_bytes_.load(std::memory_order_relaxed);
  s.queued = queued_.load(std::memory_order_relaxed);
  s.held_back = held_back_.load(std::memory_order_relaxed);
  s.enforced = enabled_.load(std::memory_order_relaxed);
  // The credit bucket: gp2's I/O credits, st1/sc1's throughput credits.
  for (const LaneBuckets* lane : {&units_, &bytes_}) {
    if (lane->peak.capacity() > 0 && lane->base.capacity() > 0) {
      s.has_burst_bucket = true;
      s.burst_balance =
          std::min(s.burst_balance, 100.0 * lane->base.Balance(now_ns) / lane->base.capacity());
    }
  }
  return s;
}

}  // namespace strata::qos
