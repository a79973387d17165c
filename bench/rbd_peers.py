#!/usr/bin/env python3
"""fio's nbd engine against Strata's volumes whose heads are in RADOS and against the RBD peer,
qemu-nbd serving an rbd: image, on the same one-node Ceph cluster (scripts/ceph_cluster.sh:
one mon, one memstore OSD on loopback), in one run. Rows rotate the servers per round; the
table takes the median over rounds of throughput, the server's CPU per request and the OSD's
CPU per request (utime + stime from /proc), and gives Strata / RBD ratios (issue 16's target:
>= 1.0 on every row: each is a 4 KiB random or a 1 MiB sequential one). A third column, Strata with its heads
in the data directory (--volume-heads local), shows what the cluster costs.

qemu-nbd runs with its defaults (librbd's writeback cache, flushed on FLUSH); Strata writes
through to the OSDs asynchronously and waits for them on FLUSH. Both export a SIZE image filled
with the same random bytes, written again whole before each read row (the memstore OSD reads
an object written in 4 KiB pieces slower, and the faster writer would pay for that).

Usage: bench/rbd_peers.py BUILD_BIN_DIR [--runtime S] [--rounds N] [--write-docs]
Scratch files go to STRATA_BENCH_DIR (default /var/tmp)."""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import nbd_peers  # noqa: E402
from nbd_peers import fmt_bw, free_port, median_result, run_fio, wait_port  # noqa: E402
from strata_testlib import MiB, Daemon, write_docs_section  # noqa: E402

SIZE = 256 * MiB  # Kept small: the memstore OSD holds it in RAM (twice, for both servers).
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ROWS = [
    ("4 KiB rand read QD32", "randread", "4k", 32, 1, False),
    ("4 KiB rand write QD32", "randwrite", "4k", 32, 1, False),
    ("1 MiB seq read QD8", "read", "1M", 8, 1, False),
    ("1 MiB seq write QD8", "write", "1M", 8, 1, False),
    ("4 KiB rand read QD1", "randread", "4k", 1, 1, False),
    ("4 KiB rand write QD1", "randwrite", "4k", 1, 1, False),
]
TARGET_ROWS = ROWS  # Every row is a 4 KiB random or a 1 MiB sequential one.


class StrataRados:
    def __init__(self, name, work, bin_dir, conf, heads):
        self.name = name
        self.daemon = Daemon(bin_dir, os.path.join(work, f"{name}-store"),
                             ["--nbd-auth", "none", "--vm", "off", "--backend", "rados",
                              "--ceph-conf", conf, "--pool", "strata", "--data-pool",
                              "strata-data", "--ceph-namespace", name, "--volume-heads", heads])
        self.vol = None

    def start(self, image):
        if self.vol is None:
            if not self.daemon.start():
                raise RuntimeError(f"{self.name}: stratad did not start")
            ec2 = self.daemon.client()
            self.vol = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
            ec2.attach_volume(VolumeId=self.vol, InstanceId="i-0abcdef0123456789",
                              Device="/dev/sdf")
            subprocess.run(["nbdcopy", "--flush", image, self.uri()], check=True)
        return self.uri(), self.daemon.proc.pid

    def uri(self):
        return f"nbd://127.0.0.1:{self.daemon.nbd}/{self.vol}"

    def refill(self, image):
        subprocess.run(["nbdcopy", "--flush", image, self.uri()], check=True)

    def close(self):
        if self.vol is not None:
            self.daemon.stop()


class QemuRbd:
    name = "qemu-nbd-rbd"

    def __init__(self, conf):
        self.conf, self.proc, self.port = conf, None, None
        self.filled = False

    def start(self, image):
        if self.proc is None:
            subprocess.run(["rbd", "-c", self.conf, "create", "--size", str(SIZE // MiB),
                            "strata-data/bench"], check=True, capture_output=True)
            self.port = free_port()
            self.proc = subprocess.Popen(
                ["qemu-nbd", "-t", "-e", "0", "-b", "127.0.0.1", "-p", str(self.port), "-f", "raw",
                 f"rbd:strata-data/bench:conf={self.conf}:id=admin"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_port(self.port, self.proc)
            subprocess.run(["nbdcopy", "--flush", image, self.uri()], check=True)
        return self.uri(), self.proc.pid

    def uri(self):
        return f"nbd://127.0.0.1:{self.port}/"

    def refill(self, image):
        subprocess.run(["nbdcopy", "--flush", image, self.uri()], check=True)

    def close(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def osd_pid(ceph_dir):
    for line in open(os.path.join(ceph_dir, "pids")):
        name, pid = line.split()[:2]
        if "osd" in name:
            return int(pid)
    raise RuntimeError("no OSD pid in " + ceph_dir)


def render(results, names, rounds, runtime, rows):
    lines = [f"Median of {rounds} rounds of {runtime} s per row and server, one memstore OSD; fio, "
             "the server and the OSD share the machine's 2 cores. CPU/req: the server's and the "
             "OSD's (utime + stime) per request.", "",
             "| row | Strata (heads in RADOS) | RBD peer (qemu-nbd rbd:) | Strata / RBD | "
             "Strata, local heads | Strata CPU/req | RBD peer CPU/req | OSD CPU/req under Strata | "
             "OSD CPU/req under RBD |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    met = []
    for row in rows:
        s = results.get((row[0], "strata-rados"))
        q = results.get((row[0], "qemu-nbd-rbd"))
        loc = results.get((row[0], "strata-local-heads"))
        ratio = s["bw"] / q["bw"] if s and q else None
        if row in TARGET_ROWS:
            met.append((row[0], ratio))
        lines.append("| " + " | ".join([
            row[0], fmt_bw(s["bw"]) if s else "failed", fmt_bw(q["bw"]) if q else "failed",
            f"{ratio:.2f}" if ratio else "n/a", fmt_bw(loc["bw"]) if loc else "n/a",
            f"{s['cpu_us']:.1f} us" if s else "n/a", f"{q['cpu_us']:.1f} us" if q else "n/a",
            f"{s['osd_us']:.1f} us" if s else "n/a", f"{q['osd_us']:.1f} us" if q else "n/a"])
            + " |")
    ok = sum(1 for _, r in met if r is not None and r >= 1.0)
    lines += ["", f"Target (issue 16, Strata / RBD >= 1.0 on the 4 KiB random and 1 MiB "
              f"sequential rows): {ok} of {len(met)} met in this run."]
    for name, r in met:
        lines.append(f"- {'met' if r is not None and r >= 1.0 else '**missed**'}: {name}: "
                     + (f"{r:.2f}" if r is not None else "n/a"))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin_dir")
    parser.add_argument("--runtime", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--rows", default="", help="only rows whose name contains this")
    parser.add_argument("--only", default="", help="comma-separated server names")
    a = parser.parse_args()
    nbd_peers.SIZE = SIZE  # run_fio's range.
    base = os.environ.get("STRATA_BENCH_DIR", "/var/tmp")
    work = tempfile.mkdtemp(prefix="strata-rbd-bench-", dir=base)
    ceph_dir = os.path.join(work, "ceph")
    script = os.path.join(ROOT, "scripts", "ceph_cluster.sh")
    subprocess.run([script, "start", ceph_dir], check=True, capture_output=True, timeout=180)
    conf = os.path.join(ceph_dir, "ceph.conf")
    os.environ["CEPH_CONF"] = conf
    image = os.path.join(work, "image.raw")
    with open(image, "wb") as f:
        f.write(os.urandom(SIZE))
    bin_dir = os.path.abspath(a.bin_dir)
    servers = [StrataRados("strata-rados", work, bin_dir, conf, "rados"), QemuRbd(conf),
               StrataRados("strata-local-heads", work, bin_dir, conf, "local")]
    if a.only:
        servers = [s for s in servers if s.name in a.only.split(",")]
    rows = [r for r in ROWS if a.rows in r[0]]
    osd = osd_pid(ceph_dir)
    runs = {}
    try:
        for round_index in range(a.rounds):
            for row in rows:
                name, rw, bs, depth, conns, fresh = row
                shift = round_index % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    os.sync()
                    uri, pid = server.start(image)
                    if rw in ("read", "randread"):
                        # Rewritten whole before a read row: the memstore OSD keeps an object
                        # written in 4 KiB pieces as that many buffers, which slows its reads,
                        # and the faster writer of the rows before would pay for it.
                        server.refill(image)
                    r = run_fio(uri, rw, bs, depth, conns, fresh, a.runtime, work,
                                cpu_pids=[pid, osd])
                    if r is not None and r["cpu_us_of"]:
                        r["cpu_us"], r["osd_us"] = r["cpu_us_of"]
                    runs.setdefault((name, server.name), []).append(r)
                    print(f"[{round_index + 1}/{a.rounds}] {name:24} {server.name:20} " +
                          (f"{fmt_bw(r['bw']):>12} {r['iops']:>8.0f} IOPS cpu {r['cpu_us']:.1f} "
                           f"us/req osd {r['osd_us']:.1f} us/req" if r else "failed"), flush=True)
                    time.sleep(0.2)
    finally:
        for server in servers:
            server.close()
        subprocess.run([script, "stop", ceph_dir, "--purge"], capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    results = {}
    for key, rs in runs.items():
        m = median_result(rs)
        if m is not None:
            good = [r for r in rs if r is not None and r.get("ios", 0) > 0]
            m["osd_us"] = sorted(r["osd_us"] for r in good)[len(good) // 2]
        results[key] = m
    table = render(results, [s.name for s in servers], a.rounds, a.runtime, rows)
    print(table)
    if a.write_docs:
        write_docs_section("rbd-peers", table)


if __name__ == "__main__":
    sys.exit(main())
