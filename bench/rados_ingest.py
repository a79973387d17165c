#!/usr/bin/env python3
"""Snapshot ingest and restore on the RADOS backend against `rados bench` on the same cluster, in
one run: a one-node cluster (scripts/ceph_cluster.sh, bluestore on a sparse file unless
--memstore), then `rados bench write` and `rados bench seq` with the chunk size as object size
and --threads ops in flight (the ceiling), then stratad --backend rados: N MiB of random data
written over NBD into a volume, CreateSnapshot timed until completed (ingest: every changed
chunk becomes an object), volumes created from the snapshot read whole over NBD (lazy
restores: each chunk read once from RADOS), and the snapshot's own export read whole (reads
timed into nbdcopy's null: sink, as rados bench seq keeps nothing, then read again untimed
into a file and compared with what was written); then the
same on the local backend (its NBD ceiling for the same work on this machine). Prints a table
of MB/s with the ratios to rados bench and to the local backend; with --write-docs puts it into
docs/benchmarks.md between its rados-ingest markers.

Usage: bench/rados_ingest.py BUILD_BIN_DIR [--mib N] [--threads N] [--memstore] [--write-docs]
Scratch files go to STRATA_BENCH_DIR (default /var/tmp)."""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from strata_testlib import MiB, Daemon, sh  # noqa: E402

ROOT = os.path.dirname(HERE)
CHUNK = 64 * 1024


def rados_bench(conf, mode, seconds, threads):
    size = ["-b", str(CHUNK)] if mode == "write" else []
    r = sh("rados", "-c", conf, "-p", "strata-data", "-N", "bench", "bench", str(seconds), mode,
           *size, "-t", str(threads), "--no-cleanup", timeout=seconds * 4 + 60)
    m = re.search(r"Bandwidth \(MB/sec\):\s+([\d.]+)", r.stdout)
    if r.returncode != 0 or not m:
        sys.exit(f"rados bench {mode} failed: {r.stdout[-500:]} {r.stderr[-500:]}")
    return float(m.group(1)) * MiB / 1e6  # rados prints MiB/s under the name MB/sec


def wait_snapshot(ec2, snap):
    while True:
        state = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"]
        if state != "pending":
            return state
        time.sleep(0.05)


def timed_read(uri, extra, mib):
    """MB/s of reading `uri` whole with nbdcopy into null: (like `rados bench seq`, which keeps
    nothing; a file as the sink would add the page cache's cost to both sides unequally)."""
    t0 = time.time()
    if sh("nbdcopy", *extra, uri, "null:", timeout=3600).returncode != 0:
        sys.exit(f"nbdcopy from {uri} failed")
    return mib * MiB / 1e6 / (time.time() - t0)


def read_equals(uri, out, src):
    """Reads `uri` again, into a file (untimed), and compares it with what was written."""
    return (sh("nbdcopy", uri, out, timeout=3600).returncode == 0 and
            sh("cmp", src, out).returncode == 0)


def measure(args, tmp, name, flags, src, daemons):
    """Ingest, two lazy restores and a snapshot export on a stratad with `flags`: MB/s each."""
    d = Daemon(args.bin_dir, os.path.join(tmp, name), ["--vm", "off"] + flags)
    daemons.append(d)
    if not d.start():
        sys.exit("stratad did not start:\n" + d.log_text())
    ec2 = d.client()
    vol = ec2.create_volume(Size=args.mib // 1024, AvailabilityZone="local-1a")["VolumeId"]
    ec2.attach_volume(VolumeId=vol, InstanceId="i-0abcdef0123456789", Device="/dev/sdf")
    if sh("nbdcopy", src, d.uri(vol), timeout=3600).returncode != 0:
        sys.exit("nbdcopy into the volume failed")
    os.sync()
    result = {}
    t0 = time.time()
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    if wait_snapshot(ec2, snap) != "completed":
        sys.exit("snapshot failed:\n" + d.log_text()[-2000:])
    result["ingest"] = args.mib * MiB / 1e6 / (time.time() - t0)
    # Two restores: nbdcopy's default requests (256 KiB: 4 chunks each) and 1 MiB ones (16
    # chunks each, read at once); each from a fresh volume, so every chunk comes from the store.
    out = os.path.join(tmp, "out")
    same = []
    for i, (key, extra) in enumerate((("restore 256K", []),
                                       ("restore 1M", ["--request-size=1048576"]))):
        restored = ec2.create_volume(SnapshotId=snap, AvailabilityZone="local-1a")["VolumeId"]
        ec2.attach_volume(VolumeId=restored, InstanceId=f"i-0abcdef012345678{i}",
                          Device="/dev/sdf")
        os.sync()
        result[key] = timed_read(d.uri(restored), extra, args.mib)
        same.append(read_equals(d.uri(restored), out, src))
    result["export"] = timed_read(d.uri(snap), ["--request-size=1048576"], args.mib)
    same.append(read_equals(d.uri(snap), out, src))
    result["same"] = all(same)
    d.stop()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_dir")
    ap.add_argument("--mib", type=int, default=1024,
                    help="changed data to ingest, MiB (a multiple of 1024)")
    ap.add_argument("--threads", type=int, default=16, help="rados bench ops in flight")
    ap.add_argument("--seconds", type=int, default=15, help="each rados bench run")
    ap.add_argument("--memstore", action="store_true")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    if args.mib % 1024:
        sys.exit("--mib must be a whole number of GiB (volumes are sized in GiB; restores read "
                 "them whole)")
    base = os.environ.get("STRATA_BENCH_DIR", "/var/tmp")
    tmp = tempfile.mkdtemp(prefix="strata-rados-bench-", dir=base)
    ceph_dir = os.path.join(tmp, "ceph")
    env = dict(os.environ, CEPH_OBJECTSTORE="memstore" if args.memstore else "bluestore")
    started = subprocess.run([os.path.join(ROOT, "scripts", "ceph_cluster.sh"), "start", ceph_dir],
                             env=env, capture_output=True, text=True, timeout=300)
    if started.returncode != 0:
        sys.exit(f"cluster did not start: {started.stderr}")
    conf = os.path.join(ceph_dir, "ceph.conf")
    daemons = []
    try:
        write = rados_bench(conf, "write", args.seconds, args.threads)
        seq = rados_bench(conf, "seq", args.seconds, args.threads)
        sh("rados", "-c", conf, "-p", "strata-data", "-N", "bench", "cleanup", timeout=600)

        src = os.path.join(tmp, "data")
        with open(src, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(MiB))
        rados_flags = ["--backend", "rados", "--ceph-conf", conf, "--pool", "strata",
                       "--data-pool", "strata-data"]
        on_rados = measure(args, tmp, "rados", rados_flags, src, daemons)
        on_local = measure(args, tmp, "local", [], src, daemons)
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
        subprocess.run([os.path.join(ROOT, "scripts", "ceph_cluster.sh"), "stop", ceph_dir,
                        "--purge"], capture_output=True, timeout=120)
        subprocess.run(["rm", "-rf", tmp])

    store = "memstore" if args.memstore else "bluestore on a sparse file"
    same = on_rados["same"] and on_local["same"]
    lines = [
        f"{args.mib} MiB of random data, 64 KiB chunks, one OSD ({store}) on this machine; "
        f"`rados bench` with 64 KiB objects and {args.threads} ops in flight, and the local "
        "backend on the same data, in one run.",
        "",
        "| what | rados bench | Strata on RADOS | ratio | Strata local backend | RADOS / local |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, what, ceiling in (
            ("ingest", "snapshot ingest (CreateSnapshot until completed)", write),
            ("restore 256K", "lazy restore: a volume from the snapshot read whole, nbdcopy "
             "(256 KiB requests)", seq),
            ("restore 1M", "... with 1 MiB requests", seq),
            ("export", "the snapshot's export read whole (1 MiB requests)", seq)):
        lines.append(f"| {what} | {ceiling:.1f} | {on_rados[key]:.1f} | "
                     f"{on_rados[key] / ceiling:.2f} | {on_local[key]:.1f} | "
                     f"{on_rados[key] / on_local[key]:.2f} |")
    lines += ["", "MB/s. rados bench: `write` for the ingest row, `seq` for the others. Reads are "
              "timed into nbdcopy's `null:` sink (rados bench seq keeps nothing either); each is "
              "read again into a file and compared: restored bytes equal the written ones: "
              f"{'yes' if same else 'NO'}."]
    table = "\n".join(lines)
    print(table)
    if args.write_docs:
        path = os.path.join(ROOT, "docs", "benchmarks.md")
        text = open(path).read()
        start, end = "<!-- rados-ingest:start -->", "<!-- rados-ingest:end -->"
        block = f"{start}\n{table}\n{end}"
        text = (re.sub(re.escape(start) + ".*?" + re.escape(end), block, text, flags=re.S)
                if start in text else text + "\n" + block + "\n")
        open(path, "w").write(text)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
