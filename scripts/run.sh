#!/usr/bin/env bash
# Sets up Strata and runs stratad on the embedded default store in ./data: the AWS-compatible
# API on 127.0.0.1:8150 and NBD on 127.0.0.1:10809 (and data/nbd.sock). On first start it
# builds a small bootable Linux disk from Debian packages (scripts/guest_image.py) and registers
# it as the AMI "strata-busybox", then prints how to launch it. Ctrl-C stops stratad cleanly.
# Extra arguments go to stratad.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

IMAGE_NAME=strata-busybox
disk=""
if disk=$(python3 scripts/guest_image.py build/vm-cache 2>build/guest-image.log); then
  :
else
  echo "run.sh: could not build the guest disk (see build/guest-image.log); starting without an AMI"
  disk=""
fi

build/bin/stratad --data-dir ./data "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid"; exit $?' INT TERM
for _ in $(seq 200); do
  build/bin/strata status >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { wait "$pid"; exit $?; }
  sleep 0.1
done

image=$(build/bin/strata ec2 DescribeImages Owner.1=self Filter.1.Name=name \
          Filter.1.Value.1="$IMAGE_NAME" 2>/dev/null |
        python3 -c 'import json, sys; s = json.load(sys.stdin).get("imagesSet") or [{}]; print(s[0].get("imageId", ""))' ||
        true)
if [ -z "$image" ] && [ -n "$disk" ]; then
  echo "run.sh: registering $disk as the AMI $IMAGE_NAME (first start)"
  image=$(build/bin/strata import-image "$disk" --name "$IMAGE_NAME" \
            --description "busybox on the Debian cloud kernel, built by scripts/guest_image.py" |
          python3 -c 'import json, sys; print(json.load(sys.stdin)["ImageId"])') || image=""
fi

cat <<MSG

Strata is running on the store in ./data (Ctrl-C stops it cleanly). In another shell:
  eval "\$(build/bin/strata env)"            # point the aws CLI and SDKs at it
  aws ec2 run-instances --image-id ${image:-ami-...} --instance-type t3.micro
                                            # boots a VM from the AMI's root volume over NBD
  aws ec2 describe-instances                # state, volumes; the guest powers off when done
  build/bin/strata console i-...            # its serial console
  build/bin/strata instances                # instances with the NBD URI of each volume
  build/bin/strata nbd-key --psk-file my.psk   # your NBD TLS key (README: "Who may open what")
  aws ec2 create-image --instance-id i-... --name my-image     # a new AMI from the instance
  aws ec2 create-snapshot --volume-id vol-...                  # point-in-time, incremental
  aws ec2 copy-snapshot --source-snapshot-id snap-... --source-region local-1
  aws ec2 create-volume --size 8 --availability-zone local-1a --encrypted  # AES-256-XTS, KMS
  build/bin/strata import-image disk.raw --name NAME           # your own raw disk as an AMI
Disaster recovery: start with  scripts/run.sh --region local-1,dr-1  (a second region), then
  aws ec2 copy-image --region dr-1 --source-region local-1 --source-image-id ${image:-ami-...} --name dr-copy
  build/bin/strata copy-stats                                  # what each copy sent, and how fast
Docs: docs/images.md (AMIs, instances, bundles), docs/regions.md (cross-region copy),
docs/api.md (every call). The KMS root key is
./data.kms-root-key (made on first start): keep it apart from ./data.
MSG
wait "$pid"
