#pragma once
// RunOnThreads: one piece of work run by `count` threads at once, the caller's among them, for
// work that takes its items from a shared cursor (a store's PutConcurrency() Puts in flight).

#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"

namespace strata::util {

// Returns once every thread has returned from `work`.
inline void RunOnThreads(int count, absl::FunctionRef<void()> work) {
  std::vector<std::thread> helpers;
  for (int i = 1; i < count; ++i) helpers.emplace_back([work] { work(); });
  work();
  for (std::thread& t : helpers) t.join();
}

}  // namespace strata::util
