#pragma once
// A token bucket in bytes: Acquire waits (really sleeps) until the bytes may pass at the
// configured rate. Burst is a tenth of a second's worth, so a copy cannot run ahead of its
// link. Thread-safe; one bucket may be shared by several streams or copies.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"

namespace strata::copy {

class TokenBucket {
 public:
  // 0 bytes per second: no limit.
  explicit TokenBucket(uint64_t bytes_per_second) : rate_(bytes_per_second) {}
  // With `stop`, the wait ends early (in at most 50 ms) once it is set.
  void Acquire(uint64_t bytes, const std::atomic<bool>* stop = nullptr);
  void set_rate(uint64_t bytes_per_second);
  uint64_t rate() const;

 private:
  mutable absl::Mutex mu_;
  uint64_t rate_ ABSL_GUARDED_BY(mu_);
  double tokens_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t last_micros_ ABSL_GUARDED_BY(mu_) = -1;
};

// Token buckets by name, shared while someone holds them: the streams of one copy share one.
class SharedBuckets {
 public:
  // The bucket named `key` at `rate` (a new one when none is held); an empty key: a new one.
  std::shared_ptr<TokenBucket> Get(const std::string& key, uint64_t rate);

 private:
  absl::Mutex mu_;
  std::map<std::string, std::weak_ptr<TokenBucket>> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::copy
