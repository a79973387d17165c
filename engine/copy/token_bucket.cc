#include "copy/token_bucket.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace strata::copy {
namespace {

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void TokenBucket::Acquire(uint64_t bytes, const std::atomic<bool>* stop) {
  int64_t wait_micros = 0;
  {
    absl::MutexLock lock(&mu_);
    if (rate_ == 0) return;
    const int64_t now = NowMicros();
    const double burst = static_cast<double>(rate_) / 10;
    if (last_micros_ < 0) last_micros_ = now;
    tokens_ = std::min(burst, tokens_ + static_cast<double>(now - last_micros_) *
                                            static_cast<double>(rate_) / 1e6);
    last_micros_ = now;
    // Callers take their bytes at once and wait off their own debt, so concurrent callers
    // queue behind each other and together keep to the rate.
    tokens_ -= static_cast<double>(bytes);
    if (tokens_ < 0)
      wait_micros = static_cast<int64_t>(-tokens_ * 1e6 / static_cast<double>(rate_));
  }
  const int64_t until = NowMicros() + wait_micros;
  for (int64_t left = wait_micros; left > 0 && (stop == nullptr || !stop->load());
       left = until - NowMicros()) {
    std::this_thread::sleep_for(std::chrono::microseconds(std::min<int64_t>(left, 50'000)));
  }
}

void TokenBucket::set_rate(uint64_t bytes_per_second) {
  absl::MutexLock lock(&mu_);
  rate_ = bytes_per_second;
}

uint64_t TokenBucket::rate() const {
  absl::MutexLock lock(&mu_);
  return rate_;
}

std::shared_ptr<TokenBucket> SharedBuckets::Get(const std::string& key, uint64_t rate) {
  if (key.empty()) return std::make_shared<TokenBucket>(rate);
  absl::MutexLock lock(&mu_);
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    it = it->second.expired() ? buckets_.erase(it) : std::next(it);
  }
  std::shared_ptr<TokenBucket> bucket = buckets_[key].lock();
  if (bucket == nullptr) {
    bucket = std::make_shared<TokenBucket>(rate);
    buckets_[key] = bucket;
  }
  return bucket;
}

}  // namespace strata::copy
