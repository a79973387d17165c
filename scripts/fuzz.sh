#!/usr/bin/env bash
# Builds every fuzz target (tests/fuzz/NAME_fuzz.cc) with clang's libFuzzer (coverage-guided,
# ASan) into build-fuzz/ and runs each for SECONDS (default 20) from its seeds and the corpus kept
# in tests/fuzz/corpus/NAME. New inputs go to build-fuzz/corpus/NAME; with --merge, the inputs
# that add coverage are merged into tests/fuzz/corpus/NAME (to commit).
# Usage: scripts/fuzz.sh [--merge] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
merge=false
if [ "${1:-}" = --merge ]; then merge=true; shift; fi
seconds=${1:-20}
targets=$(ls tests/fuzz/*_fuzz.cc | xargs -n1 basename | sed 's/_fuzz\.cc$//')
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSTRATA_LIBFUZZER=ON -DSTRATA_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target $(for t in $targets; do echo "strata_${t}_libfuzzer"; done)
for t in $targets; do
  corpus=build-fuzz/corpus/$t
  kept=tests/fuzz/corpus/$t
  mkdir -p "$corpus"
  dirs=("$corpus")
  [ -d "$kept" ] && dirs+=("$kept")
  echo "== libFuzzer: $t, ${seconds}s"
  log=build-fuzz/$t.log
  if ! STRATA_FUZZ_SEED_DIR="$corpus" ASAN_OPTIONS=detect_leaks=0 \
      "build-fuzz/bin/strata_${t}_libfuzzer" -max_total_time="$seconds" -max_len=65536 \
      -timeout=10 -print_final_stats=1 "${dirs[@]}" >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t FAILED (the crashing input is in the current directory; log $log)"
    exit 1
  fi
  grep -E "^(Done|stat::new_units_added)" "$log" || true
  if $merge; then
    mkdir -p "$kept"
    ASAN_OPTIONS=detect_leaks=0 "build-fuzz/bin/strata_${t}_libfuzzer" -merge=1 -max_len=65536 \
      "$kept" "$corpus" 2>&1 | tail -1
  fi
done
echo "fuzz: libFuzzer ran every target ($(echo $targets | wc -w)) for ${seconds}s each without a crash"
