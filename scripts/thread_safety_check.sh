#!/usr/bin/env bash
# Compiles every engine and tool source with clang's -Wthread-safety (as errors), so the
# ABSL_GUARDED_BY / lock annotations are checked. Syntax only: no objects are produced.
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${CLANG:-clang++}
if find engine api nbd-server vm tools -name '*.cc' -print0 | sort -z |
    xargs -0 -P "$(nproc)" -n 1 "$CXX" -std=c++20 -fsyntax-only -Wthread-safety \
      -Werror=thread-safety -I. -Iengine/include -Iengine -Iapi -Inbd-server -Ivm -Itools; then
  echo "thread-safety analysis: clean"
else
  echo "thread-safety analysis: FAILED"
  exit 1
fi
