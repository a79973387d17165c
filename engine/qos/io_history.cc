#include "qos/io_history.h"

#include <algorithm>
#include <limits>
#include <map>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace strata::qos {
namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::min();

int64_t FloorTo(int64_t value, int64_t width) {
  const int64_t r = value % width;
  return r < 0 ? value - r - width : value - r;
}

void AddInto(VolumeIoSample& into, const VolumeIoSample& s) {
  into.read_ops += s.read_ops;
  into.write_ops += s.write_ops;
  into.read_bytes += s.read_bytes;
  into.write_bytes += s.write_bytes;
  into.read_time_ns += s.read_time_ns;
  into.write_time_ns += s.write_time_ns;
  into.idle_seconds += s.idle_seconds;
  into.burst_balance = s.burst_balance;
}

}  // namespace

// What the header promises a volume's history costs.
static_assert(sizeof(VolumeIoSample) * (IoHistory::kSecondSamples + IoHistory::kMinuteSamples) <=
              192 * 1024);

IoHistory::IoHistory() {
  VolumeIoSample empty;
  empty.start_second = kNever;
  absl::MutexLock lock(&mu_);
  seconds_.slots.assign(kSecondSamples, empty);
  seconds_.width = 1;
  minutes_.slots.assign(kMinuteSamples, empty);
  minutes_.width = 60;
}

void IoHistory::Ring::Add(const VolumeIoSample& second) {
  const int64_t start = FloorTo(second.start_second, width);
  const auto n = static_cast<int64_t>(slots.size());
  VolumeIoSample& slot = slots[static_cast<size_t>(((start / width) % n + n) % n)];
  if (slot.start_second != start) {
    slot = VolumeIoSample{};
    slot.start_second = start;
    slot.seconds = width;
  }
  AddInto(slot, second);
}

void IoHistory::Ring::Collect(int64_t from, int64_t to, std::vector<VolumeIoSample>& out) const {
  const auto n = static_cast<int64_t>(slots.size());
  for (int64_t start = FloorTo(from, width); start < to; start += width) {
    if (start < from) continue;
    const VolumeIoSample& slot = slots[static_cast<size_t>(((start / width) % n + n) % n)];
    if (slot.start_second == start) out.push_back(slot);
  }
}

void IoHistory::Record(int64_t second, const IoTotals& totals, double burst_balance) {
  absl::MutexLock lock(&mu_);
  if (!started_) {
    started_ = true;
    last_second_ = second - 1;  // The totals count from zero, when the volume was opened.
  }
  if (second <= last_second_) return;
  // Seconds the sampler missed were idle as far as anyone can tell; what they did lands below.
  for (int64_t s = std::max(last_second_ + 1, second - kSecondSamples); s < second; ++s) {
    VolumeIoSample idle;
    idle.start_second = s;
    idle.idle_seconds = 1;
    idle.burst_balance = burst_balance;
    seconds_.Add(idle);
    minutes_.Add(idle);
  }
  VolumeIoSample now;
  now.start_second = second;
  now.read_ops = totals.read_ops - last_.read_ops;
  now.write_ops = totals.write_ops - last_.write_ops;
  now.read_bytes = totals.read_bytes - last_.read_bytes;
  now.write_bytes = totals.write_bytes - last_.write_bytes;
  now.read_time_ns = totals.read_time_ns - last_.read_time_ns;
  now.write_time_ns = totals.write_time_ns - last_.write_time_ns;
  now.idle_seconds = now.read_ops + now.write_ops == 0 ? 1 : 0;
  now.burst_balance = burst_balance;
  seconds_.Add(now);
  minutes_.Add(now);
  last_ = totals;
  last_second_ = second;
}

std::vector<VolumeIoSample> IoHistory::Samples(int64_t from_second, int64_t to_second) const {
  absl::MutexLock lock(&mu_);
  std::vector<VolumeIoSample> out;
  if (!started_ || from_second >= to_second) return out;
  // Whole minutes before the seconds' ring (none older than the minutes' ring holds), then its
  // seconds.
  from_second = std::max(from_second, last_second_ + 1 - int64_t{kMinuteSamples} * 60);
  to_second = std::min(to_second, last_second_ + 1);  // Nothing later is kept: a bounded walk.
  const int64_t cut = FloorTo(last_second_ - kSecondSamples + 1 + 59, 60);
  minutes_.Collect(from_second, std::min(to_second, cut), out);
  seconds_.Collect(std::max(from_second, cut), to_second, out);
  return out;
}

namespace {

struct SamplerState {
  absl::Mutex mu;
  std::map<const void*, IoSampler::Sample> samples ABSL_GUARDED_BY(mu);
  bool running ABSL_GUARDED_BY(mu) = false;
};

SamplerState& State() {
  static auto* state = new SamplerState;  // Never destroyed: its thread may outlive main.
  return *state;
}

void SamplerLoop() {
  SamplerState& state = State();
  for (;;) {
    // Just past the next whole second, then the second that ended.
    const absl::Time now = absl::Now();
    const int64_t next = absl::ToUnixSeconds(now) + 1;
    absl::SleepFor(absl::FromUnixSeconds(next) - now + absl::Milliseconds(1));
    absl::MutexLock lock(&state.mu);
    if (state.samples.empty()) {
      state.running = false;
      return;
    }
    const int64_t second = absl::ToUnixSeconds(absl::Now()) - 1;
    for (const auto& [key, sample] : state.samples) sample(second);
  }
}

}  // namespace

void IoSampler::Register(const void* key, Sample sample) {
  SamplerState& state = State();
  absl::MutexLock lock(&state.mu);
  state.samples[key] = std::move(sample);
  if (!state.running) {
    state.running = true;
    std::thread(SamplerLoop).detach();
  }
}

void IoSampler::Unregister(const void* key) {
  SamplerState& state = State();
  absl::MutexLock lock(&state.mu);  // Waits for a round of samples in progress.
  state.samples.erase(key);
}

}  // namespace strata::qos
