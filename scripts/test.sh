#!/usr/bin/env bash
# Sets up (packages, build) and runs every test, then libFuzzer on the NBD session for a minute,
# then the unit tests once more under AddressSanitizer and UndefinedBehaviorSanitizer. Prints ctest's summaries; exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export STRATA_QUIET=1
status=0
echo "== tests (build/)"
(cd build && ctest --output-on-failure -j 2) || status=1
tests/crash/crash_count.sh build/crash-rounds.txt || true  # The figure (ctest held the minimum).

echo "== clang thread-safety analysis"
scripts/thread_safety_check.sh || status=1

if [ "${STRATA_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== libFuzzer on every fuzz target (build-fuzz/)"
  scripts/fuzz.sh "${STRATA_FUZZ_SECONDS:-20}" || status=1

  echo "== unit tests under ASan+UBSan (build-asan/)"
  BUILD_DIR=build-asan BUILD_TYPE=Debug CMAKE_EXTRA="-DSTRATA_SANITIZE=ON -DSTRATA_BUILD_BENCH=OFF" \
    scripts/setup.sh
  # Shorter power-loss rounds under ASan; the counted minimum is the main run's.
  (cd build-asan && STRATA_POWER_LOSS_SECONDS=30 STRATA_MIN_CRASH_ROUNDS=0 \
    ctest --output-on-failure -j 2 -L "unit|crash") || status=1
fi
exit $status
