// What the volume limiter costs a request below its volume's limits (issue: "the limiter costs
// almost nothing"), same run: the clock read alone (Admit reads it once), Admit with the volume
// held (qos on, limits far above the rate the loop reaches), Admit only counting (qos off),
// Finished (the latency counter), and a mutex-guarded token bucket for scale. Threads 1 and 2
// show the shared-volume case (multi-conn): the buckets are atomics updated by compare-and-swap.
//   build/bin/qos_limiter_bench --benchmark_min_time=0.5 --benchmark_repetitions=3

#include <benchmark/benchmark.h>

#include <algorithm>
#include <mutex>

#include "absl/time/clock.h"
#include "qos/volume_limiter.h"

namespace strata::qos {
namespace {

// A rate no loop reaches: every request is below the limit and none waits.
Limits Unreachable() {
  Limits l;
  l.units = Lane{1e12, 1e12, 0};
  l.bytes = Lane{1e15, 1e15, 0};
  l.io_unit_bytes = 256 * 1024;
  return l;
}

VolumeLimiter& Shared(bool enforced) {
  static auto* on = [] {
    auto* l = new VolumeLimiter;
    l->Configure(Unreachable(), true);
    return l;
  }();
  static auto* off = [] {
    auto* l = new VolumeLimiter;
    l->Configure(Unreachable(), false);
    return l;
  }();
  return enforced ? *on : *off;
}

void BM_ClockRead(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(absl::GetCurrentTimeNanos());
}

void BM_AdmitHeld(benchmark::State& state) {
  VolumeLimiter& limiter = Shared(true);
  uint64_t offset = static_cast<uint64_t>(state.thread_index()) << 30;
  for (auto _ : state) {
    benchmark::DoNotOptimize(limiter.Admit(false, offset, 4096, absl::GetCurrentTimeNanos()));
    offset += 4096;
  }
}

void BM_AdmitCountedOnly(benchmark::State& state) {
  VolumeLimiter& limiter = Shared(false);
  uint64_t offset = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(limiter.Admit(false, offset, 4096, absl::GetCurrentTimeNanos()));
    offset += 4096;
  }
}

void BM_Finished(benchmark::State& state) {
  VolumeLimiter& limiter = Shared(true);
  for (auto _ : state) limiter.Finished(false, absl::Microseconds(50));
}

// The design the limiter avoids: one lock per request.
struct MutexBucket {
  std::mutex mu;
  double tokens = 1e12;
  int64_t last_ns = 0;
  int64_t Admit(double cost, int64_t now_ns) {
    std::lock_guard<std::mutex> lock(mu);
    tokens = std::min(1e12, tokens + static_cast<double>(now_ns - last_ns) * 1e3);
    last_ns = now_ns;
    tokens -= cost;
    return tokens >= 0 ? 0 : static_cast<int64_t>(-tokens);
  }
};

void BM_MutexBucket(benchmark::State& state) {
  static auto* units = new MutexBucket;
  static auto* bytes = new MutexBucket;
  for (auto _ : state) {
    const int64_t now = absl::GetCurrentTimeNanos();
    benchmark::DoNotOptimize(std::max(units->Admit(1, now), bytes->Admit(4096, now)));
  }
}

BENCHMARK(BM_ClockRead);
BENCHMARK(BM_AdmitHeld)->Threads(1)->Threads(2);
BENCHMARK(BM_AdmitCountedOnly);
BENCHMARK(BM_Finished)->Threads(1)->Threads(2);
BENCHMARK(BM_MutexBucket)->Threads(1)->Threads(2);

}  // namespace
}  // namespace strata::qos

BENCHMARK_MAIN();
