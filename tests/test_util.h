#pragma once
// Helpers shared by Strata's tests: status matchers (Debian 12's abseil has none), temporary
// directories, seeded randomness and byte patterns.

#include <sched.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace strata::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  if (!s.ok()) *result_listener << "status: " << s.ToString();
  return s.ok();
}

MATCHER_P(StatusIs, code, "has code " + absl::StatusCodeToString(code)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status: " << s.ToString();
  return s.code() == code;
}

#define STRATA_ASSERT_OK(expr) ASSERT_THAT((expr), ::strata::testing::IsOk())
#define STRATA_EXPECT_OK(expr) EXPECT_THAT((expr), ::strata::testing::IsOk())
#define STRATA_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  STRATA_ASSERT_OK_AND_ASSIGN_IMPL_(STRATA_TEST_CONCAT_(sor_, __LINE__), lhs, expr)
#define STRATA_TEST_CONCAT_INNER_(a, b) a##b
#define STRATA_TEST_CONCAT_(a, b) STRATA_TEST_CONCAT_INNER_(a, b)
#define STRATA_ASSERT_OK_AND_ASSIGN_IMPL_(var, lhs, expr) \
  auto var = (expr);                                      \
  ASSERT_THAT(var.status(), ::strata::testing::IsOk());   \
  lhs = std::move(var).value()

// A fresh directory under the test temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TEST_TMPDIR");
    std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/strata-test-XXXXXX";
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Adds `rounds` crash iterations of `kind` ("power-loss", "sigkill") to the run's tally: a
// "KIND BACKEND ROUNDS" line appended to $STRATA_CRASH_COUNT_FILE when set (ctest sets it;
// tests/crash/crash_count.sh sums the lines at the end of the run and holds the minimum).
inline void RecordCrashRounds(const std::string& kind, int rounds) {
  const char* path = std::getenv("STRATA_CRASH_COUNT_FILE");
  if (path == nullptr) return;
  const char* backend = std::getenv("STRATA_TEST_CEPH_CONF") != nullptr ? "rados" : "local";
  if (FILE* f = std::fopen(path, "a"); f != nullptr) {
    std::fprintf(f, "%s %s %d\n", kind.c_str(), backend, rounds);
    std::fclose(f);
  }
}

// The seed for a randomized test: STRATA_TEST_SEED if set, else random. Printed so a failure
// can be replayed.
inline uint64_t TestSeed() {
  uint64_t seed = 0;
  if (const char* env = std::getenv("STRATA_TEST_SEED"); env != nullptr) {
    seed = std::strtoull(env, nullptr, 10);
  } else {
    seed = std::random_device{}();
  }
  std::printf("seed: STRATA_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

// `n` bytes derived from `seed` (no zero runs), so different seeds give different content.
inline std::vector<std::byte> Pattern(size_t n, uint64_t seed) {
  std::vector<std::byte> out(n);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 1);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng() | 1;
    std::memcpy(out.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return out;
}

// How many processors this process may run threads on at once (its affinity), as IoRing
// counts them for spare calls.
inline int Processors() {
  cpu_set_t set;
  CPU_ZERO(&set);
  return ::sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
}

inline std::span<const std::byte> Bytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

}  // namespace strata::testing
