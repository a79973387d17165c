#!/usr/bin/env python3
"""Soak: many NBD clients on many exports while snapshots are taken, copied and deleted and
volumes come and go, for a bounded time; stratad's resident memory and open file descriptors
are sampled every second, and the run fails if either grows past its bound.

- CLIENTS threads each connect (NBD over stratad's unix socket), run a burst of random writes,
  reads and a FLUSH on one of VOLUMES attached volumes, check what they read, and disconnect;
- one control thread loops: CreateSnapshot of a volume, waits for it, CopySnapshot of it, keeps
  at most three snapshots per volume (DeleteSnapshot of the oldest), and every fifth turn makes
  a volume from a snapshot, attaches it, writes to it over NBD, detaches and deletes it.

Bounds (stated, checked), from what stratad keeps by design:
- RSS: the largest of the last quarter at most RSS_BOUND MiB (default 128) above the largest of
  the first quarter (warm-up). What may still grow after it: RocksDB's memtable (up to 64 MiB
  before it is flushed) and block cache (8 MiB), and the volumes' metrics history (185 KiB each);
- descriptors: at most FD_BOUND (default 64 + 2 per client + 40) above the idle count before the
  clients came, at every sample and after they left: up to 64 segment files open at once
  (ChunkStoreOptions::max_open_segments), a socket and a ring per connection, and RocksDB's
  logs and tables (a few dozen at this size). A leak of one descriptor per connection, per
  snapshot or per segment passes it within the run.

Usage: bench/soak.py BIN_DIR [--seconds N] [--clients N] [--volumes N]
                     [--rss-bound MiB] [--fd-bound N]"""
import argparse
import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
from strata_testlib import CMD_FLUSH, CMD_READ, CMD_WRITE, MiB, Daemon, RawClient  # noqa: E402

GROUP = "i-0123456789abcdef0"
DEVICES = [f"/dev/sd{c}" for c in "fghijklmnopqrstuvwxyz"]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_links(pid):
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return links


def nbd_burst(daemon, vol, rng, lo, hi, stats):
    """Writes in [lo, hi) (a client's own part of the volume), reads back and flushes on one
    connection; returns False on a mismatch."""
    c = RawClient(daemon.unix_socket, vol)
    try:
        if c.go_reply != 1:  # NBD_REP_ACK
            stats["refused"] += 1
            return True
        written = {}
        for _ in range(32):
            length = rng.choice([4096, 16384, 65536])
            offset = rng.randrange(lo, hi - length, 4096)
            data = rng.randbytes(length)
            error, _ = c.request(CMD_WRITE, offset, length, payload=data)
            if error:
                stats["why"] = f"{vol}: WRITE at {offset} (+{length}) failed: error {error}"
                return False
            written = {k: v for k, v in written.items()
                       if k + len(v) <= offset or k >= offset + length}
            written[offset] = data
        for offset, data in written.items():
            error, back = c.request(CMD_READ, offset, len(data))
            if error or back != data:
                stats["why"] = (f"{vol}: READ at {offset} (+{len(data)}): error {error}, "
                                f"{'other data' if back != data else 'same data'}")
                return False
        error, _ = c.request(CMD_FLUSH, 0, 0)
        stats["bursts"] += 1
        if error:
            stats["why"] = f"{vol}: FLUSH failed: error {error}"
        return error == 0
    finally:
        c.close()


def wait_snapshot(ec2, snap, deadline):
    while time.time() < deadline + 60:
        state = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"]
        if state != "pending":
            return state
        time.sleep(0.05)
    return "pending"


def wait_volume(ec2, vol, states):
    for _ in range(600):
        if ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["State"] in states:
            return
        time.sleep(0.05)


def trace(*what):
    if os.environ.get("SOAK_VERBOSE"):
        print(f"{time.time():.3f}", *what, flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin_dir")
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--rss-bound", type=int, default=128, help="MiB")
    parser.add_argument("--fd-bound", type=int, default=0, help="0: 64 + 2 per client + 40")
    args = parser.parse_args()
    if args.fd_bound == 0:
        args.fd_bound = 64 + 2 * args.clients + 40
    work = tempfile.mkdtemp(prefix="strata-soak-", dir="/var/tmp")
    daemon = Daemon(args.bin_dir, os.path.join(work, "data"))
    if not daemon.start():
        print(daemon.log_text()[-2000:])
        return 1
    pid = daemon.proc.pid
    failures = []
    try:
        ec2 = daemon.client()
        size = 256 * MiB
        volumes = []
        for i in range(args.volumes):
            vol = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
            ec2.attach_volume(VolumeId=vol, InstanceId=GROUP, Device=DEVICES[i])
            volumes.append(vol)
        idle_fds = fds(pid)
        idle_links = fd_links(pid)
        deadline = time.time() + args.seconds
        samples = []  # (seconds since start, RSS KiB, descriptors)
        stats = {"bursts": 0, "refused": 0, "snapshots": 0, "copies": 0, "deleted": 0,
                 "volumes": 0}
        lock = threading.Lock()
        start = time.time()

        part = size // args.clients

        def client(seed):
            rng = random.Random(seed)
            while time.time() < deadline:
                if not nbd_burst(daemon, rng.choice(volumes), rng, seed * part, (seed + 1) * part,
                                 stats):
                    with lock:
                        failures.append(f"an NBD burst failed: {stats.get('why')}")
                    return

        def control():
            rng = random.Random(99)
            ec2c = daemon.client()
            snapshots = {v: [] for v in volumes}
            turn = 0
            while time.time() < deadline:
                turn += 1
                vol = rng.choice(volumes)
                snap = ec2c.create_snapshot(VolumeId=vol)["SnapshotId"]
                if wait_snapshot(ec2c, snap, deadline) != "completed":
                    failures.append(f"snapshot {snap} did not complete")
                    return
                stats["snapshots"] += 1
                copy = ec2c.copy_snapshot(SourceSnapshotId=snap, SourceRegion="local-1")
                trace("snapshot", snap, "of", vol, "copy", copy["SnapshotId"])
                wait_snapshot(ec2c, copy["SnapshotId"], deadline)
                stats["copies"] += 1
                snapshots[vol] += [snap, copy["SnapshotId"]]
                while len(snapshots[vol]) > 3:
                    trace("delete", snapshots[vol][0])
                    ec2c.delete_snapshot(SnapshotId=snapshots[vol].pop(0))
                    stats["deleted"] += 1
                if turn % 5 == 0:
                    extra = ec2c.create_volume(SnapshotId=snap,
                                               AvailabilityZone="local-1a")["VolumeId"]
                    wait_volume(ec2c, extra, ("available",))
                    trace("volume", extra, "from", snap)
                    ec2c.attach_volume(VolumeId=extra, InstanceId=GROUP, Device=DEVICES[-1])
                    if not nbd_burst(daemon, extra, rng, 0, size, stats):
                        failures.append(f"a volume made from {snap} failed its burst")
                    ec2c.detach_volume(VolumeId=extra)
                    wait_volume(ec2c, extra, ("available",))
                    ec2c.delete_volume(VolumeId=extra)
                    trace("deleted", extra)
                    stats["volumes"] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        threads.append(threading.Thread(target=control))
        for t in threads:
            t.start()
        while time.time() < deadline:
            samples.append((time.time() - start, rss_kib(pid), fds(pid)))
            time.sleep(1)
        for t in threads:
            t.join(120)
        time.sleep(1)
        after_fds = fds(pid)
        new_links = sorted(set(fd_links(pid)) - set(idle_links))
    finally:
        stopped = daemon.stop()
    quarter = max(1, len(samples) // 4)
    first, last = samples[:quarter], samples[-quarter:]
    rss_growth = (max(s[1] for s in last) - max(s[1] for s in first)) / 1024
    most_fds = max(s[2] for s in samples)
    print(f"soak: {args.seconds} s, {args.clients} NBD clients on {args.volumes} volumes; "
          f"{stats['bursts']} bursts (32 writes, reads back, FLUSH), {stats['snapshots']} "
          f"snapshots, {stats['copies']} copies, {stats['deleted']} deletions, {stats['volumes']} "
          f"volumes made from snapshots and deleted")
    print("| | idle | first quarter (max) | last quarter (max) | after the clients | bound |")
    print("|---|---|---|---|---|---|")
    print(f"| RSS (MiB) | | {max(s[1] for s in first) / 1024:.1f} | "
          f"{max(s[1] for s in last) / 1024:.1f} | | +{args.rss_bound} over the first quarter |")
    print(f"| open descriptors | {idle_fds} | {max(s[2] for s in first)} | "
          f"{max(s[2] for s in last)} | {after_fds} | +{args.fd_bound} over idle |")
    if rss_growth > args.rss_bound:
        failures.append(f"RSS grew {rss_growth:.1f} MiB (bound {args.rss_bound})")
    if most_fds - idle_fds > args.fd_bound or after_fds - idle_fds > args.fd_bound:
        failures.append(f"descriptors grew to {max(most_fds, after_fds)} (idle {idle_fds}, "
                        f"bound +{args.fd_bound}); new ones: {', '.join(new_links[:20])}")
    if stopped != 0:
        failures.append("stratad did not stop cleanly")
    for f in failures:
        print("FAIL:", f)
    if not failures:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
