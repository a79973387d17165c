#!/usr/bin/env bash
# Sets up Strata and runs stratad in the foreground on the embedded default store in ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cat <<'MSG'

Strata: stratad is starting on the store in ./data (Ctrl-C stops it cleanly).
While it runs, the store is locked; stop it to use the offline CLI:
  build/bin/strata volume create --size 1G          # a thin 1 GiB volume
  build/bin/strata volume import VOL disk.raw       # write an image into it
  build/bin/strata snapshot create VOL              # point-in-time, incremental
  build/bin/strata volume create --snapshot SNAP    # O(1) clone, read lazily
  build/bin/strata snapshot changed SNAP1 SNAP2     # changed 512 KiB blocks
  build/bin/strata-fsck                             # check every reference and checksum
MSG
exec build/bin/stratad --data-dir ./data "$@"
