#!/usr/bin/env python3
"""Volumes whose heads are in RADOS, served by any node, one writer at a time (docs/ceph.md,
"Volumes on RADOS"), through the real clients: two stratad nodes on one region of a one-node
Ceph cluster this test starts and purges, boto3 and the aws CLI for the EC2 calls, the strata
CLI for the takeover, nbdcopy (with --flush) over NBD.

- A volume attached on node A cannot be attached on B (VolumeInUse), by boto3 or the aws CLI.
- A detached volume of A attaches on B: A hands it over; B reads A's bytes.
- Node A is killed (SIGKILL) after FLUSHed writes: `strata volume takeover --force` on B fences
  A (blocklist) and B reads every flushed byte; an encrypted volume too.
- Node A is killed again: once its lease (--volume-lease 4) lapses, a plain AttachVolume on B
  takes the volume; every flushed byte is there.
- A snapshot of a RADOS-headed volume taken on B is restored on A (restarted) byte for byte;
  A restarted does not serve the volumes it lost; strata-fsck is clean.

Usage: volume_failover_test.py BIN_DIR. Prints "N passed, M failed".
"""
import os
import re
import subprocess
import sys
import time

from strata_testlib import MiB, Checks, Daemon, error_code, scratch_dir, sh

BIN = sys.argv[1]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER_SCRIPT = os.path.join(ROOT, "scripts", "ceph_cluster.sh")
LEASE = 4
check = Checks()


def write_flushed(d, vol, data):
    """nbdcopy writes `data` at the start and FLUSHes; True when both succeeded."""
    path = os.path.join(os.path.dirname(d.data_dir), "payload")
    with open(path, "wb") as f:
        f.write(data)
    r = sh("nbdcopy", "--flush", path, d.uri(vol), timeout=300)
    if r.returncode != 0:
        print(f"nbdcopy to {vol}: {r.stderr.strip()[-300:]}")
    return r.returncode == 0


def read(d, vol, n):
    path = os.path.join(os.path.dirname(d.data_dir), "readback")
    r = sh("nbdcopy", d.uri(vol), path, timeout=300)
    if r.returncode != 0:
        return None
    with open(path, "rb") as f:
        return f.read(n)


def strata(d, *args):
    return sh(f"{BIN}/strata", "--endpoint", f"http://127.0.0.1:{d.api}", "--data-dir",
              d.data_dir, *args, timeout=120)


def main():
    tmp = scratch_dir("strata-failover-")
    ceph_dir = os.path.join(tmp, "ceph")
    started = sh(CLUSTER_SCRIPT, "start", ceph_dir, timeout=180)
    if started.returncode != 0:
        print("FAIL: the Ceph cluster did not start:", started.stderr)
        return 1
    conf = os.path.join(ceph_dir, "ceph.conf")
    os.environ["CEPH_CONF"] = conf
    flags = ["--vm", "off", "--backend", "rados", "--ceph-conf", conf, "--pool", "strata",
             "--data-pool", "strata-data", "--ceph-namespace", "fo", "--volume-lease", str(LEASE)]
    a = Daemon(BIN, os.path.join(tmp, "a"), flags)
    daemons = [a]
    try:
        check(a.start(), "node A starts")
        b = Daemon(BIN, os.path.join(tmp, "b"),
                   flags + ["--kms-root-key-file", a.data_dir + ".kms-root-key"])
        daemons.append(b)
        check(b.start(), "node B starts on the same region")
        ec2a, ec2b = a.client(), b.client()

        # 1. One writer: attached on A, refused on B.
        vol = ec2a.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
        ec2a.attach_volume(VolumeId=vol, InstanceId="i-0abcdef0123456789", Device="/dev/sdf")
        first = os.urandom(3 * MiB)
        check(write_flushed(a, vol, first), "A writes and flushes over NBD")
        code = error_code(ec2b.attach_volume, VolumeId=vol, InstanceId="i-0abcdef0123456780",
                          Device="/dev/sdf")
        check(code == "VolumeInUse", f"attaching it on B while A has it attached: {code}")
        key, secret = b.admin_keys()
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
                   AWS_DEFAULT_REGION="local-1")
        cli = subprocess.run(["aws", "--endpoint-url", f"http://127.0.0.1:{b.api}", "ec2",
                              "attach-volume", "--volume-id", vol, "--instance-id",
                              "i-0abcdef0123456780", "--device", "/dev/sdf"],
                             capture_output=True, text=True, env=env, timeout=120)
        check(cli.returncode != 0 and "VolumeInUse" in cli.stderr,
              f"... and by the aws CLI: {cli.stderr.strip()[-120:]!r}")
        r = strata(b, "volume", "takeover", vol)
        check(r.returncode != 0 and "VolumeInUse" in r.stderr,
              f"strata volume takeover without --force refuses too: {r.stderr.strip()[-120:]!r}")
        check(read(a, vol, len(first)) == first, "A still serves it, unchanged")

        # 2. Hand-over between live nodes: detached on A, attached on B.
        ec2a.detach_volume(VolumeId=vol)
        ec2b.attach_volume(VolumeId=vol, InstanceId="i-0abcdef0123456780", Device="/dev/sdf")
        check(read(b, vol, len(first)) == first, "detached on A, it attaches on B with A's bytes")
        described = [v for v in ec2a.describe_volumes(VolumeIds=[vol])["Volumes"]]
        check(described and described[0]["State"] == "in-use" and
              described[0]["Attachments"][0]["InstanceId"] == "i-0abcdef0123456780",
              "A describes it as B's now")
        code = error_code(ec2a.attach_volume, VolumeId=vol, InstanceId="i-0abcdef0123456789",
                          Device="/dev/sdg")
        check(code == "VolumeInUse", f"and A cannot take it back while attached on B: {code}")

        # 3. B dies with flushed writes; the operator forces the volume to A.
        second = os.urandom(2 * MiB)
        check(write_flushed(b, vol, second), "B writes and flushes")
        enc = ec2b.create_volume(Size=1, AvailabilityZone="local-1a", Encrypted=True)["VolumeId"]
        ec2b.attach_volume(VolumeId=enc, InstanceId="i-0abcdef0123456780", Device="/dev/sdg")
        secret_bytes = (b"STRATA-FAILOVER-SECRET-" * (MiB // 23 + 1))[:MiB]
        check(write_flushed(b, enc, secret_bytes), "B writes and flushes an encrypted volume")
        b.kill()
        r = strata(a, "volume", "takeover", vol, "--force")
        check(r.returncode == 0, f"strata volume takeover --force on A: {r.stderr.strip()[-200:]!r}")
        r = strata(a, "volume", "takeover", enc, "--force")
        check(r.returncode == 0, f"... and of the encrypted one: {r.stderr.strip()[-200:]!r}")
        log = a.log_text()
        check(all(re.search(rf"{v}: taken over from node \S+ \(forced\)", log)
                  for v in (vol, enc)),
              "a forced takeover breaks B's live lease (it does not wait for it to lapse)")
        ec2a.attach_volume(VolumeId=vol, InstanceId="i-0abcdef0123456789", Device="/dev/sdf")
        ec2a.attach_volume(VolumeId=enc, InstanceId="i-0abcdef0123456789", Device="/dev/sdg")
        expected = second + first[len(second):]
        check(read(a, vol, len(expected)) == expected,
              "every byte B flushed before it died is there, read on A")
        check(read(a, enc, len(secret_bytes)) == secret_bytes,
              "... and on the encrypted volume")
        log = a.log_text()
        check("fencing its previous holder" in log, "A fenced B (blocklist) before writing")

        # 4. A dies; after its lease a plain AttachVolume on B (restarted) takes the volume.
        third = os.urandom(MiB)
        check(write_flushed(a, vol, third), "A writes and flushes")
        a.kill()
        check(b.start(), "B restarts (it was fenced: a new client)")
        ec2b = b.client()
        time.sleep(LEASE + 1)
        ec2b.attach_volume(VolumeId=vol, InstanceId="i-0abcdef0123456780", Device="/dev/sdf")
        expected = third + expected[len(third):]
        check(read(b, vol, len(expected)) == expected,
              "after A's lease lapsed B attaches it and reads every flushed byte")

        # 5. A snapshot taken on B restores on A (restarted), which no longer serves `vol`.
        snap = ec2b.create_snapshot(VolumeId=vol)["SnapshotId"]
        for _ in range(240):
            state = ec2b.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"]
            if state != "pending":
                break
            time.sleep(0.25)
        check(state == "completed", f"B's snapshot of the volume completes ({state})")
        check(a.start(), "A restarts")
        ec2a = a.client()
        restored = ec2a.create_volume(SnapshotId=snap, AvailabilityZone="local-1a")["VolumeId"]
        ec2a.attach_volume(VolumeId=restored, InstanceId="i-0abcdef0123456789",
                           Device="/dev/sdh")
        check(read(a, restored, len(expected)) == expected,
              "restored on A from B's snapshot, byte for byte")
        listed = {v["VolumeId"]: v for v in ec2a.describe_volumes()["Volumes"]}
        check(listed[vol]["Attachments"][0]["InstanceId"] == "i-0abcdef0123456780",
              "A, restarted, lists the volume as B's")
        for d in (a, b):
            check(d.stop() == 0, "a clean stop")
        fsck = sh(f"{BIN}/strata-fsck", "--data-dir", b.data_dir, timeout=300)
        check(fsck.returncode == 0, f"strata-fsck is clean: {fsck.stdout[-300:]!r}")
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.kill()
        sh(CLUSTER_SCRIPT, "stop", ceph_dir, "--purge", timeout=60)
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
