#!/usr/bin/env python3
"""Cross-region copy of a snapshot chain over the simulated WAN link (issue: regions).

For each change rate p (0.1%, 1%, 10% of chunks), a fresh volume of SIZE MiB is filled, then
snapshotted and copied to the other region STEPS+1 times, p% of its chunks rewritten between
snapshots. Every copy's record (strata copy-stats) gives bytes sent, changed bytes, chunks
skipped, retries and time. Chunk contents are half random, half zeros, so they compress to about
half: the reference for "bytes sent" is the changed chunks compressed with zstd -1, measured on
the same bytes. The link defaults to 100 MB/s with 70 ms RTT and 4 streams.

Writes a table and docs/copy-chain.svg (bytes sent and copy time per step against changed
bytes), and with --write-docs the table into docs/benchmarks.md between its copy-chain markers.

Needs the zstd command (Debian package zstd) for the reference sizes.

Usage: bench/copy_chain.py BIN_DIR [--size MiB] [--steps N] [--link SPEC] [--write-docs]"""
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import boto3  # noqa: E402
from strata_testlib import CMD_FLUSH, CMD_WRITE, Daemon, RawClient, write_docs_section  # noqa: E402

CHUNK = 64 * 1024
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def chunk_bytes(rng):
    return rng.randbytes(CHUNK // 2) + bytes(CHUNK // 2)


def zstd_size(data, work):
    path = os.path.join(work, "ref")
    with open(path, "wb") as f:
        f.write(data)
    out = subprocess.run(["zstd", "-1", "-c", "-q", path], capture_output=True, check=True)
    return len(out.stdout)


def client(daemon, region):
    key, secret = daemon.admin_keys()
    return boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{daemon.api}", region_name=region,
                        aws_access_key_id=key, aws_secret_access_key=secret)


def wait_done(ec2, snap):
    while True:
        s = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
        if s["State"] != "pending":
            return s
        time.sleep(0.05)


def copy_stats(bin_dir, daemon, snap):
    text = subprocess.run([f"{bin_dir}/strata", "--data-dir", daemon.data_dir, "--endpoint",
                           f"http://127.0.0.1:{daemon.api}", "copy-stats", snap],
                          capture_output=True, text=True, check=True).stdout
    get = lambda pattern: float(re.search(pattern, text).group(1))  # noqa: E731
    return {"sent": get(r"bytes sent\s+(\d+)"), "changed": get(r"changed bytes\s+(\d+)"),
            "seconds": get(r"time\s+([\d.]+) s"), "link_seconds": get(r"\(([\d.]+) s on the link"),
            "retries": get(r"retries\s+(\d+)"),
            "skipped": get(r"(\d+) skipped")}


def svg_plot(series, path):
    """Two panels: bytes sent and copy time against changed bytes, one polyline per rate."""
    width, height, pad = 900, 380, 60
    colors = {"0.1": "#1b9e77", "1": "#d95f02", "10": "#7570b3"}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    panels = [("bytes sent (MB)", "sent", 1e6), ("copy time (s)", "seconds", 1)]
    all_points = [r for rows in series.values() for r in rows]
    max_x = max(r["changed"] for r in all_points) / 1e6 or 1
    for i, (title, key, scale) in enumerate(panels):
        x0 = pad + i * (width // 2)
        w, h = width // 2 - pad - 20, height - 2 * pad
        max_y = max(r[key] for r in all_points) / scale or 1
        parts.append(f'<text x="{x0 + w / 2}" y="{pad - 20}" text-anchor="middle">{title} '
                     'against changed bytes (MB), log-log</text>')
        parts.append(f'<line x1="{x0}" y1="{pad + h}" x2="{x0 + w}" y2="{pad + h}" stroke="black"/>')
        parts.append(f'<line x1="{x0}" y1="{pad}" x2="{x0}" y2="{pad + h}" stroke="black"/>')
        import math
        min_x = min(r["changed"] for r in all_points) / 1e6
        min_y = min(max(r[key] / scale, 1e-3) for r in all_points)
        lx = lambda v: x0 + w * (math.log10(max(v, min_x)) - math.log10(min_x)) / max(  # noqa: E731
            1e-9, math.log10(max_x) - math.log10(min_x))
        ly = lambda v: pad + h - h * (math.log10(max(v, min_y)) - math.log10(min_y)) / max(  # noqa: E731
            1e-9, math.log10(max_y) - math.log10(min_y))
        for label, v in ((f"{min_x:.2g}", min_x), (f"{max_x:.3g}", max_x)):
            parts.append(f'<text x="{lx(v)}" y="{pad + h + 16}" text-anchor="middle">{label}</text>')
        for label, v in ((f"{min_y:.2g}", min_y), (f"{max_y:.3g}", max_y)):
            parts.append(f'<text x="{x0 - 6}" y="{ly(v) + 4}" text-anchor="end">{label}</text>')
        for n, (rate, rows) in enumerate(series.items()):
            pts = " ".join(f"{lx(r['changed'] / 1e6):.1f},{ly(r[key] / scale):.1f}" for r in rows)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colors[rate]}" stroke-width="2"/>')
            for r in rows:
                parts.append(f'<circle cx="{lx(r["changed"] / 1e6):.1f}" cy="{ly(r[key] / scale):.1f}" '
                             f'r="3" fill="{colors[rate]}"/>')
            parts.append(f'<text x="{x0 + 10}" y="{pad + 14 + 14 * n}" fill="{colors[rate]}">'
                         f'p = {rate}%</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin_dir")
    ap.add_argument("--size", type=int, default=256, help="MiB of data per volume")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--link", default="bandwidth=100MB,rtt=70ms,streams=4")
    ap.add_argument("--write-docs", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="strata-copy-bench-", dir=os.environ.get("STRATA_BENCH_DIR", "/var/tmp"))
    daemon = Daemon(a.bin_dir, os.path.join(work, "data"),
                    ["--region", "east-1,west-1", "--vm", "off", "--link", a.link])
    if not daemon.start():
        sys.exit("stratad did not start: " + daemon.log_text()[-2000:])
    east, west = client(daemon, "east-1"), client(daemon, "west-1")
    rng = random.Random(7)
    chunks = a.size * 1024 * 1024 // CHUNK
    series = {}
    try:
        for rate in ("0.1", "1", "10"):
            vol = east.create_volume(Size=max(1, a.size // 1024 + 1), AvailabilityZone="east-1a")["VolumeId"]
            east.attach_volume(VolumeId=vol, InstanceId="i-" + vol[4:], Device="/dev/sdf")
            h = RawClient(daemon.unix_socket, vol)
            rows = []
            for step in range(a.steps + 1):
                if step == 0:
                    changed = list(range(chunks))
                else:
                    changed = sorted(rng.sample(range(chunks), max(1, round(chunks * float(rate) / 100))))
                reference = 0
                for c in changed:
                    data = chunk_bytes(rng)
                    h.request(CMD_WRITE, c * CHUNK, CHUNK, payload=data)
                    if step > 0 or c % 64 == 0:
                        reference += zstd_size(data, work)
                if step == 0:
                    reference *= 64  # Sampled: every chunk compresses alike.
                h.request(CMD_FLUSH, 0, 0)
                snap = east.create_snapshot(VolumeId=vol)["SnapshotId"]
                wait_done(east, snap)
                copy = west.copy_snapshot(SourceRegion="east-1", SourceSnapshotId=snap)["SnapshotId"]
                state = wait_done(west, copy)["State"]
                s = copy_stats(a.bin_dir, daemon, copy)
                s.update(step=step, chunks=len(changed), reference=reference, state=state)
                rows.append(s)
                print(f"p={rate}% step {step}: {len(changed)} chunks, sent {s['sent'] / 1e6:.3f} MB "
                      f"(compressed changed {reference / 1e6:.3f} MB, x{s['sent'] / reference:.3f}), "
                      f"{s['seconds']:.2f} s ({s['link_seconds']:.2f} s on the link, "
                      f"{s['sent'] / s['link_seconds'] / 1e6:.1f} MB/s), {state}",
                      flush=True)
            h.close()
            east.detach_volume(VolumeId=vol)
            series[rate] = rows
    finally:
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
    bandwidth = float(re.search(r"bandwidth=([\d.]+)MB", a.link).group(1)) * 1e6
    lines = [f"Link `{a.link}`; {a.size} MiB of data (64 KiB chunks, half random, half zeros); "
             f"{a.steps} incremental steps per rate after the full first copy.", "",
             "| p | step | chunks changed | compressed changed (zstd -1) | bytes sent | sent / compressed | copy time | on the link | link utilisation |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for rate, rows in series.items():
        for r in rows:
            lines.append(f"| {rate}% | {'full' if r['step'] == 0 else r['step']} | {r['chunks']} | "
                         f"{r['reference'] / 1e6:.3f} MB | {r['sent'] / 1e6:.3f} MB | "
                         f"{r['sent'] / r['reference']:.3f} | {r['seconds']:.2f} s | "
                         f"{r['link_seconds']:.2f} s | "
                         f"{r['sent'] / r['link_seconds'] / bandwidth * 100:.0f}% |")
    table = "\n".join(lines)
    print(table)
    svg_plot(series, os.path.join(ROOT, "docs", "copy-chain.svg"))
    if a.write_docs:
        write_docs_section("copy-chain", table)


if __name__ == "__main__":
    main()
