#!/usr/bin/env bash
# The run's crash iterations: sums the "KIND BACKEND ROUNDS" lines the crash tests appended to
# FILE (power loss through the fault-injecting Env, real SIGKILL of a store process; on the
# local and the RADOS backends), prints the figure, and fails below STRATA_MIN_CRASH_ROUNDS
# (default 1000) when every one of the four ran. Run by ctest after the crash tests.
set -euo pipefail
file=$1
min=${STRATA_MIN_CRASH_ROUNDS:-1000}
[ -s "$file" ] || { echo "crash iterations: none recorded in $file"; exit 0; }
awk -v min="$min" '
  { total += $3; by[$1 " " $2] += $3 }
  END {
    printf "crash iterations this run: %d", total
    sep = " ("
    for (k in by) { printf "%s%s %d", sep, k, by[k]; sep = ", " }
    printf ")\n"
    all = ("power-loss local" in by) && ("power-loss rados" in by) && \
          ("sigkill local" in by) && ("sigkill rados" in by)
    if (all && total < min) {
      printf "FAIL: fewer than the %d a full run must reach\n", min
      exit 1
    }
    if (!all) print "(not every crash suite ran: the minimum applies to full runs)"
  }' "$file"
