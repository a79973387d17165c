#!/usr/bin/env python3
"""A real VM on a Strata volume: qemu-system-x86_64 boots a small Linux (scripts/
guest_image.py) whose root disk is a Strata volume over NBD; the guest writes a file and powers off;
the file is then found in a snapshot of the volume (read through a read-only snapshot export).

Usage: vm_boot_test.py BIN_DIR [CACHE_DIR]. Prints "N passed, M failed"."""
import os
import secrets
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import guest_image as guest  # noqa: E402
from strata_testlib import Checks, Daemon, sh, scratch_dir

BIN = sys.argv[1]
check = Checks()


def main():
    cache = sys.argv[2] if len(sys.argv) > 2 else os.path.join(BIN, "..", "vm-cache")
    kernel, initrd, rootfs = guest.build(cache)
    work = scratch_dir("strata-vm-")
    daemon = Daemon(BIN, os.path.join(work, "data"))
    check(daemon.start(), "stratad starts")
    try:
        ec2 = daemon.client()
        vol = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
        ec2.attach_volume(VolumeId=vol, InstanceId="i-0abcdef0123456789", Device="/dev/sda1")
        out = sh("nbdcopy", rootfs, daemon.uri(vol))
        check(out.returncode == 0, f"root file system copied onto the volume: {out.stderr}")
        token = secrets.token_hex(8)
        serial = os.path.join(work, "serial.log")
        start = time.time()
        vm = subprocess.run(guest.qemu_command(kernel, initrd, [daemon.uri(vol)], serial,
                                               f"strata.token={token}"),
                            capture_output=True, text=True, timeout=300)
        console = open(serial, errors="replace").read() if os.path.exists(serial) else ""
        print(f"guest ran {time.time() - start:.1f} s", flush=True)
        check(f"STRATA-GUEST-OK {token}" in console,
              f"the guest booted from the volume and wrote its file: {vm.stderr[-500:]} {console[-1500:]}")
        snap = ec2.create_snapshot(VolumeId=vol, Description="after the guest ran")["SnapshotId"]
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig={"Delay": 1})
        image = os.path.join(work, "snapshot.raw")
        out = sh("nbdcopy", daemon.uri(snap), image)
        check(out.returncode == 0, f"the snapshot read through its export: {out.stderr}")
        out = sh("debugfs", "-R", "cat /hello.txt", image)
        check(out.stdout.strip() == token, f"the guest's file is in the snapshot: {out.stdout!r} {out.stderr}")
        out = sh("e2fsck", "-fn", image)
        check(out.returncode == 0, f"the snapshot's file system is clean: {out.stdout[-500:]}")
    finally:
        check(daemon.stop() == 0, "stratad stops cleanly")
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
