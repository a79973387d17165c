#!/usr/bin/env bash
# Builds the NBD session fuzz target with clang's libFuzzer (coverage-guided, ASan) into
# build-fuzz/ and runs it for SECONDS (default 60) from the seeds of tests/fuzz/nbd_session_fuzz.cc.
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSTRATA_LIBFUZZER=ON -DSTRATA_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz --target strata_nbd_session_libfuzzer -j "$(nproc)"
corpus=build-fuzz/nbd-corpus
mkdir -p "$corpus"
# The target writes its seeds (whole client conversations) into the corpus as it starts.
STRATA_FUZZ_SEED_DIR="$corpus" ASAN_OPTIONS=detect_leaks=0 build-fuzz/bin/strata_nbd_session_libfuzzer \
  -max_total_time="$seconds" -max_len=65536 -timeout=10 -print_final_stats=1 "$corpus" 2>&1 | tail -15
echo "fuzz: libFuzzer ran ${seconds}s without a crash"
