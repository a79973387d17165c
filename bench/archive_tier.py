#!/usr/bin/env python3
"""The archive tier's own speed (docs/data-protection.md): how long an archival and a restore of
a snapshot holding SIZE MiB of random data take once the timing model lets them run
(--archive-seconds 0 --archive-rate 1T, so the figure is the work itself), against the same
bytes moved by a peer in the same run: `cp` plus `sync` into a directory on the same disk, or
`aws s3 cp` into the same radosgw bucket. Medians of ROUNDS (each round archives, then restores
permanently: the chunks leave the main store and come back).

With --ceph the store is on a one-node cluster that scripts/ceph_cluster.sh starts with radosgw
(CEPH_WITH_RGW=1) and the archive is S3 in it; without, the local backend and its directory.

Usage: bench/archive_tier.py BIN_DIR [--size MiB] [--rounds N] [--ceph]"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from strata_testlib import Daemon, random_snapshot, timed, wait_until  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GROUP = "i-0a7c41e0a7c41e0a7"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_dir")
    ap.add_argument("--size", type=int, default=256, help="MiB of data in the snapshot")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ceph", action="store_true", help="RADOS backend, archive in radosgw")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="strata-archive-bench-",
                            dir=os.environ.get("STRATA_BENCH_DIR", "/var/tmp"))
    cluster = os.path.join(work, "ceph")
    flags = ["--vm", "off", "--archive-seconds", "0", "--archive-rate", "1T"]
    env = dict(os.environ)
    if a.ceph:
        started = subprocess.run([os.path.join(ROOT, "scripts", "ceph_cluster.sh"), "start",
                                  cluster], capture_output=True, text=True,
                                 env=dict(os.environ, CEPH_WITH_RGW="1"))
        if started.returncode != 0:
            sys.exit("the cluster did not start: " + started.stderr[-2000:])
        exported = dict(re.findall(r"^export (\w+)=(.*)$", started.stdout, re.M))
        os.environ.update({k: v for k, v in exported.items() if k.startswith("STRATA_ARCHIVE")})
        s3 = exported["STRATA_ARCHIVE_S3"]
        flags += ["--backend", "rados", "--ceph-conf", exported["CEPH_CONF"], "--pool", "strata",
                  "--data-pool", "strata-data", "--archive-s3", f"{s3}/bench"]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=exported["STRATA_ARCHIVE_ACCESS_KEY_ID"],
                   AWS_SECRET_ACCESS_KEY=exported["STRATA_ARCHIVE_SECRET_ACCESS_KEY"],
                   AWS_DEFAULT_REGION="default", AWS_EC2_METADATA_DISABLED="true")
    daemon = Daemon(a.bin_dir, os.path.join(work, "data"), flags)
    rows = {"archive": [], "restore": [], "peer": []}
    try:
        if not daemon.start():
            sys.exit("stratad did not start: " + daemon.log_text()[-2000:])
        ec2 = daemon.client("ec2")
        data = os.path.join(work, "data.bin")
        vol, snap = random_snapshot(daemon, ec2, data, a.size, GROUP)
        ec2.detach_volume(VolumeId=vol)
        ec2.delete_volume(VolumeId=vol)  # The snapshot alone holds the chunks.

        def tier():
            return ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["StorageTier"]

        def settle(want):
            if not wait_until(lambda: tier() == want, timeout=600, interval=0.01):
                sys.exit(f"{snap} did not reach {want}: " + daemon.log_text()[-2000:])

        peer_dir = os.path.join(work, "peer")
        for _ in range(a.rounds):
            rows["archive"].append(timed(lambda: (
                ec2.modify_snapshot_tier(SnapshotId=snap, StorageTier="archive"),
                settle("archive")))[0])
            rows["restore"].append(timed(lambda: (
                ec2.restore_snapshot_tier(SnapshotId=snap, PermanentRestore=True),
                settle("standard")))[0])
            if a.ceph:
                rows["peer"].append(timed(lambda: subprocess.run(
                    ["aws", "--endpoint-url", s3, "s3", "cp", data, "s3://bench/peer.bin"],
                    check=True, capture_output=True, env=env))[0])
            else:
                os.makedirs(peer_dir, exist_ok=True)
                rows["peer"].append(timed(lambda: (
                    shutil.copyfile(data, os.path.join(peer_dir, "peer.bin")),
                    subprocess.run(["sync", "-f", os.path.join(peer_dir, "peer.bin")],
                                   check=True)))[0])
    finally:
        daemon.stop()
        if a.ceph:
            subprocess.run([os.path.join(ROOT, "scripts", "ceph_cluster.sh"), "stop", cluster,
                            "--purge"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    peer = "aws s3 cp to radosgw" if a.ceph else "cp + sync to a directory"
    print(f"{a.size} MiB snapshot, {'RADOS + radosgw' if a.ceph else 'local'}, "
          f"median of {a.rounds}:")
    for name in ("archive", "restore", "peer"):
        seconds = statistics.median(rows[name])
        label = peer if name == "peer" else f"{name} (API call to StorageTier)"
        print(f"  {label:40s} {seconds:7.2f} s  {a.size / seconds:7.0f} MiB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
