#pragma once
// Refuses a signed request received before: SigV4 accepts a request for 15 minutes either side of
// its X-Amz-Date, so whoever captured one could send it again. Each accepted request's identity
// (ApiServer: its signature with the SDK's invocation id and attempt) is remembered until the
// request would be too old anyway. Memory is bounded: when the guard is full it forgets the oldest
// identities and from then on refuses every request signed at or before them, so a forgotten one
// can never be replayed (under such load, clients whose clocks run behind by more than the
// remembered span are refused until it passes).

#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"

namespace strata::api {

class ReplayGuard {
 public:
  enum class Verdict { kFresh, kReplayed, kTooOld };

  // Remembers up to `capacity` signatures, each for `window_seconds` past its request's time.
  ReplayGuard(size_t capacity, int64_t window_seconds);

  // Records `identity` of a request signed at `signed_at` (unix seconds), the server's clock
  // reading `now`. kFresh the first time; kReplayed after; kTooOld if older than what the guard
  // can still tell apart.
  Verdict Admit(const std::string& identity, int64_t signed_at, int64_t now);

  // Requests signed at or before this time are refused (INT64_MIN while nothing was forgotten).
  int64_t floor() const;
  size_t size() const;

 private:
  // 128 bits of the identity's SHA-256: enough to tell requests apart, in a fraction of the memory.
  using Key = std::pair<uint64_t, uint64_t>;
  static Key KeyOf(const std::string& identity);
  void ForgetOldest() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const size_t capacity_;
  const int64_t window_seconds_;
  mutable absl::Mutex mu_;
  absl::flat_hash_set<Key> seen_ ABSL_GUARDED_BY(mu_);
  std::multimap<int64_t, Key> by_time_ ABSL_GUARDED_BY(mu_);  // signed_at -> signature
  int64_t floor_ ABSL_GUARDED_BY(mu_);
};

}  // namespace strata::api
