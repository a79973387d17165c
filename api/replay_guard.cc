#include "replay_guard.h"

#include <openssl/sha.h>

#include <cstring>
#include <limits>

namespace strata::api {

ReplayGuard::ReplayGuard(size_t capacity, int64_t window_seconds)
    : capacity_(capacity > 0 ? capacity : 1),
      window_seconds_(window_seconds),
      floor_(std::numeric_limits<int64_t>::min()) {}

ReplayGuard::Key ReplayGuard::KeyOf(const std::string& identity) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(identity.data()), identity.size(), digest);
  uint64_t half[2];
  std::memcpy(half, digest, sizeof(half));
  return {half[0], half[1]};
}

ReplayGuard::Verdict ReplayGuard::Admit(const std::string& identity, int64_t signed_at,
                                        int64_t now) {
  absl::MutexLock lock(&mu_);
  // Signatures whose requests are now refused as too old by the clock check need no memory.
  while (!by_time_.empty() && by_time_.begin()->first < now - window_seconds_) {
    seen_.erase(by_time_.begin()->second);
    by_time_.erase(by_time_.begin());
  }
  if (signed_at <= floor_) return Verdict::kTooOld;
  const Key key = KeyOf(identity);
  if (seen_.contains(key)) return Verdict::kReplayed;
  while (seen_.size() >= capacity_) ForgetOldest();
  if (signed_at <= floor_) return Verdict::kTooOld;  // It was the oldest itself.
  seen_.insert(key);
  by_time_.emplace(signed_at, key);
  return Verdict::kFresh;
}

void ReplayGuard::ForgetOldest() {
  // Every signature of the oldest second goes, so the floor never splits a second.
  const int64_t oldest = by_time_.begin()->first;
  while (!by_time_.empty() && by_time_.begin()->first == oldest) {
    seen_.erase(by_time_.begin()->second);
    by_time_.erase(by_time_.begin());
  }
  floor_ = oldest;
}

int64_t ReplayGuard::floor() const {
  absl::MutexLock lock(&mu_);
  return floor_;
}

size_t ReplayGuard::size() const {
  absl::MutexLock lock(&mu_);
  return seen_.size();
}

}  // namespace strata::api
