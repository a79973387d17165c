#!/usr/bin/env python3
"""Control-plane throughput and tail latency: wrk against stratad's API, for one or more stratad
binaries in the same run (so a change to the HTTP server is judged against the binary before it).

Each binary serves a fresh data directory holding a few volumes; wrk sends SigV4-signed EC2
DescribeVolumes and DescribeRegions requests (signed once with botocore: the server accepts a
signature for its 15-minute window) over keep-alive connections, then the same with a new
connection per request ("Connection: close"). Rounds alternate between the binaries; the table
shows the median requests/s, p99 latency and stratad CPU time per request of the rounds (the CPU
figure is the steadiest on a 2-core machine that also runs wrk).

  bench/api_bench.py build/bin [--baseline DIR_WITH_OLD_STRATAD] [--rounds 3] [--seconds 5]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

import botocore.auth
import botocore.awsrequest
import botocore.credentials

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from strata_testlib import Daemon  # noqa: E402

CASES = [
    # (name, body, connections, close-per-request)
    ("DescribeVolumes, 8 keep-alive conns", "Action=DescribeVolumes&Version=2016-11-15", 8, False),
    ("DescribeRegions, 8 keep-alive conns", "Action=DescribeRegions&Version=2016-11-15", 8, False),
    ("DescribeVolumes, 1 keep-alive conn", "Action=DescribeVolumes&Version=2016-11-15", 1, False),
    ("DescribeVolumes, new conn per request", "Action=DescribeVolumes&Version=2016-11-15", 4, True),
]


def signed_headers(port, keys, body):
    creds = botocore.credentials.Credentials(*keys)
    request = botocore.awsrequest.AWSRequest(
        method="POST", url=f"http://127.0.0.1:{port}/", data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    botocore.auth.SigV4Auth(creds, "ec2", "local-1").add_auth(request)
    return {k: v for k, v in request.headers.items()}


def wrk_script(path, body, headers, close):
    lines = ['wrk.method = "POST"', f"wrk.body = {body!r}".replace("'", '"')]
    for k, v in headers.items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    if close:
        lines.append('wrk.headers["Connection"] = "close"')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def to_ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def cpu_seconds(pid):
    """User plus system CPU time of process `pid` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(port, script, connections, seconds, pid):
    cpu_before = cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s",
         "--latency", "-s", script, f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} error responses:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    cpu_us = (cpu_seconds(pid) - cpu_before) * 1e6 / max(1, requests)
    return rps, p99, cpu_us


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin_dir")
    parser.add_argument("--baseline", help="a directory with another stratad to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("api_bench: needs wrk (apt-get install wrk)")
    binaries = [("this", args.bin_dir)] + ([("baseline", args.baseline)] if args.baseline else [])
    work = tempfile.mkdtemp(prefix="strata-api-bench-")
    daemons = {}
    try:
        for label, bin_dir in binaries:
            # wrk resends one signed request: the replay guard would refuse all but the first.
            help_text = subprocess.run([os.path.join(bin_dir, "stratad"), "--help"],
                                       capture_output=True, text=True).stdout
            extra = ["--api-replay-cache", "0"] if "--api-replay-cache" in help_text else []
            daemon = Daemon(bin_dir, os.path.join(work, label), extra)
            if not daemon.start():
                raise SystemExit(f"stratad ({label}) did not start: {daemon.log_text()[-2000:]}")
            ec2 = daemon.client()
            for _ in range(5):
                ec2.create_volume(Size=1, AvailabilityZone="local-1a")
            daemons[label] = daemon
        results = {}  # (case, label) -> [(rps, p99)]
        for round_index in range(args.rounds):
            for name, body, connections, close in CASES:
                for label, daemon in daemons.items():
                    script = os.path.join(work, f"{label}.lua")
                    wrk_script(script, body, signed_headers(daemon.api, daemon.admin_keys(), body),
                               close)
                    results.setdefault((name, label), []).append(
                        run_wrk(daemon.api, script, connections, args.seconds, daemon.proc.pid))
        labels = list(daemons)
        print("| case | " +
              " | ".join(f"{l} req/s | {l} p99 ms | {l} CPU us/req" for l in labels) +
              (" | req/s ratio | CPU/req ratio |" if len(labels) > 1 else " |"))
        print("| --- " * (1 + 3 * len(labels) + (2 if len(labels) > 1 else 0)) + "|")
        for name, *_ in CASES:
            cells, rates, cpus = [], [], []
            for label in labels:
                rounds = results[(name, label)]
                rps = statistics.median(r[0] for r in rounds)
                p99 = statistics.median(r[1] for r in rounds)
                cpu = statistics.median(r[2] for r in rounds)
                rates.append(rps)
                cpus.append(cpu)
                cells += [f"{rps:.0f}", f"{p99:.2f}", f"{cpu:.1f}"]
            ratio = ([f"{rates[0] / rates[1]:.2f}", f"{cpus[0] / cpus[1]:.2f}"]
                     if len(labels) > 1 else [])
            print("| " + " | ".join([name] + cells + ratio) + " |")
    finally:
        for daemon in daemons.values():
            daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
