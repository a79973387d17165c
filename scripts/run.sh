#!/usr/bin/env bash
# Sets up Strata and runs stratad in the foreground on the embedded default store in ./data:
# the AWS-compatible API on 127.0.0.1:8150 and NBD on 127.0.0.1:10809 (and data/nbd.sock).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cat <<'MSG'

Strata: stratad is starting on the store in ./data (Ctrl-C stops it cleanly).
In another shell:
  eval "$(build/bin/strata env)"                    # point the aws CLI and SDKs at it
  aws ec2 create-volume --size 8 --availability-zone local-1a
  build/bin/strata attach vol-...                   # export it over NBD; prints how to use it
  nbdcopy disk.raw nbd://127.0.0.1:10809/vol-...    # write an image into it
  aws ec2 create-snapshot --volume-id vol-...       # point-in-time, incremental
  aws ec2 create-volume --snapshot-id snap-... --availability-zone local-1a
  aws ec2 create-volume --size 8 --availability-zone local-1a --encrypted  # AES-256-XTS, KMS key
  aws kms list-aliases                              # alias/aws/ebs, made on first use
  nbdcopy nbd://127.0.0.1:10809/snap-... backup.raw # read a snapshot (read-only export)
  build/bin/strata status
The KMS root key is in ./data.kms-root-key (made on first start): keep it apart from ./data.
API reference: docs/api.md. Stop stratad before strata-fsck or the offline CLI commands.
MSG
exec build/bin/stratad --data-dir ./data "$@"
