#!/usr/bin/env python3
"""Fast snapshot restore against a lazy restore (docs/data-protection.md).

A snapshot holding SIZE MiB of random data (with --cold, the page cache is dropped before each
first read, so that it reads from the disk); from it, ROUNDS times each, a volume made lazily and
one made with fast snapshot restore enabled. For each: how long CreateVolume takes (boto3, so
the API's own cost is in both), then the first full read of the data over NBD (nbdcopy to
null:, on stratad's unix socket) and a second one. A lazy volume's first read fetches every
chunk from the snapshot (index lookup, checksum, decompression when compressed); a fast-restored
volume reads its own head from the first byte, having paid for the copy in CreateVolume.
Medians of the rounds.

With --ceph-conf the store is on that cluster (pools strata and strata-data, as
scripts/ceph_cluster.sh makes them), heads in RADOS: a lazy read then fetches chunk objects.

Usage: bench/fast_restore.py BIN_DIR [--size MiB] [--rounds N] [--ceph-conf FILE] [--write-docs]"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from strata_testlib import Daemon, random_snapshot, timed, wait_until  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GROUP = "i-0fa57fa57fa57fa57"


def read_all(daemon, export, size_mib):
    seconds, out = timed(lambda: subprocess.run(
        ["nbdcopy", daemon.uri(export), "null:"], capture_output=True, text=True))
    if out.returncode != 0:
        sys.exit(f"nbdcopy {export}: {out.stderr}")
    return size_mib / seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_dir")
    ap.add_argument("--size", type=int, default=512, help="MiB of data in the snapshot")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ceph-conf", help="run on this Ceph cluster (RADOS backend)")
    ap.add_argument("--cold", action="store_true",
                    help="drop the page cache before each first read (needs root)")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="strata-fsr-bench-",
                            dir=os.environ.get("STRATA_BENCH_DIR", "/var/tmp"))
    backend = ["--backend", "rados", "--ceph-conf", a.ceph_conf, "--pool", "strata", "--data-pool",
               "strata-data", "--ceph-namespace", os.path.basename(work)] if a.ceph_conf else []
    daemon = Daemon(a.bin_dir, os.path.join(work, "data"), ["--vm", "off"] + backend)
    if not daemon.start():
        sys.exit("stratad did not start: " + daemon.log_text()[-2000:])
    ec2 = daemon.client("ec2")
    rows = {"lazy": [], "fast": []}
    try:
        data = os.path.join(work, "data.bin")
        _, snap = random_snapshot(daemon, ec2, data, a.size, GROUP)
        ec2.enable_fast_snapshot_restores(AvailabilityZones=["local-1a"], SourceSnapshotIds=[snap])
        for _ in range(a.rounds):
            for kind in ("lazy", "fast"):
                if kind == "lazy":
                    ec2.disable_fast_snapshot_restores(AvailabilityZones=["local-1a"],
                                                       SourceSnapshotIds=[snap])
                    state = "disabled"
                else:
                    ec2.enable_fast_snapshot_restores(AvailabilityZones=["local-1a"],
                                                      SourceSnapshotIds=[snap])
                    state = "enabled"
                wait_until(lambda: ec2.describe_fast_snapshot_restores()["FastSnapshotRestores"]
                           [0]["State"] == state, timeout=120)
                create, vol = timed(lambda: ec2.create_volume(
                    SnapshotId=snap, AvailabilityZone="local-1a")["VolumeId"])
                fast = ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["FastRestored"]
                if fast != (kind == "fast"):
                    sys.exit(f"{kind}: FastRestored is {fast}")
                ec2.attach_volume(VolumeId=vol, InstanceId=GROUP, Device="/dev/sdg")
                if a.cold:
                    subprocess.run(["sync"], check=True)
                    with open("/proc/sys/vm/drop_caches", "w") as f:
                        f.write("3\n")
                first = read_all(daemon, vol, a.size)
                second = read_all(daemon, vol, a.size)
                ec2.detach_volume(VolumeId=vol)
                ec2.delete_volume(VolumeId=vol)
                rows[kind].append((create, first, second))
    finally:
        daemon.stop()
        subprocess.run(["rm", "-rf", work])
    lines = ["| restore | CreateVolume | first full read | second full read |",
             "| --- | --- | --- | --- |"]
    for kind, label in (("lazy", "lazy (FSR off)"), ("fast", "fast snapshot restore")):
        create = statistics.median(r[0] for r in rows[kind])
        first = statistics.median(r[1] for r in rows[kind])
        second = statistics.median(r[2] for r in rows[kind])
        lines.append(f"| {label} | {create * 1000:.0f} ms | {first:.0f} MiB/s | {second:.0f} MiB/s |")
    table = "\n".join(lines)
    where = "RADOS (one-node cluster, heads in RADOS)" if a.ceph_conf else "the local backend"
    if a.cold:
        where += ", page cache dropped before each first read"
    print(f"{where}: {a.size} MiB of random data, median of {a.rounds} rounds\n{table}")
    if a.write_docs:
        path = os.path.join(ROOT, "docs", "benchmarks.md")
        text = open(path).read()
        tag = ("rados" if a.ceph_conf else "local") + ("-cold" if a.cold else "")
        begin, end = f"<!-- fast-restore-{tag}:begin -->", f"<!-- fast-restore-{tag}:end -->"
        block = (f"{begin}\n{where}, {a.size} MiB of random data, median of {a.rounds} rounds:"
                 f"\n\n{table}\n{end}")
        if begin in text:
            text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
        else:
            text += f"\n{block}\n"
        open(path, "w").write(text)


if __name__ == "__main__":
    main()
