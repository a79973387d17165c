#!/usr/bin/env python3
"""Where a server's CPU goes per NBD request, on an unencrypted and an encrypted Strata volume:
the breakdown behind docs/benchmarks.md's "added CPU / cipher" (issue 17).

Two stratads (as bench/nbd_peers.py starts them: plaintext TCP, each with a 1 GiB volume filled
with random data in 256 KiB writes) serve fio's nbd engine; for each row and round, unencrypted
and encrypted one after the other, `perf record -g` samples the server's threads for the run
after fio's ramp. Each sample is put in one stage by its leaf function and, in the kernel, by the
system call its kernel call chain is under:

  cipher               libgcrypt: AES and the per-4 KiB-unit tweak setup (gcry_cipher_setiv)
  key lookup and loop  strata::crypto::Xts (the scan of four per-thread key slots, the unit loop)
  hole check           the scan for all-zero (never written) units before deciphering a read
  user copies          libc memcpy/memmove/memset
  allocation           malloc/free and operator new/delete
  socket receive       the kernel under recvfrom/recvmsg (copies out of socket buffers) or a
                       splice out of the socket
  socket send          the kernel under sendmsg (copies into socket buffers, loopback delivery)
  page cache read      the kernel under pread or an io_uring read (copies out of the page cache)
  page cache write     the kernel under pwrite or an io_uring write (copies into the page cache)
  other kernel         scheduling, io_uring's own work, system call entry and exit, interrupts
  other Strata         the rest of stratad's code (NBD parsing, volume bookkeeping)
  other user space     the rest (absl, liburing, libstdc++, libc)

Each stage is given in microseconds per request (its samples' CPU time over the requests fio
completed in the sampled window), for both volumes, with the difference: what encryption adds,
stage by stage. The cipher's share is then set against its cost alone (the request's bytes at
the single-core rate xts_bench measures in the same run).

Needs perf (Debian's linux-perf) and the right to sample another process (root, or
kernel.perf_event_paranoid <= 1).

Usage: bench/nbd_cpu_breakdown.py BUILD_BIN_DIR [--runtime S] [--rounds N] [--rows TEXT]
       [--write-docs]
Scratch files go to STRATA_BENCH_DIR (default /var/tmp)."""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd_peers  # noqa: E402
from nbd_peers import MiB, StrataPeer, median_rates, run_fio, xts_rates  # noqa: E402
from strata_testlib import write_docs_section  # noqa: E402

ROWS = [r for r in nbd_peers.ROWS if r[4] == 1 and not r[5]]  # one connection, a filled volume
STAGES = ["cipher", "key lookup and loop", "hole check", "user copies", "allocation",
          "socket receive", "socket send", "page cache read", "page cache write", "other kernel",
          "other Strata", "other user space"]
# Kernel functions that name the system call (or io_uring operation) a sample is under.
KERNEL_CALLERS = [
    ("socket receive", ("tcp_recvmsg", "sock_recvmsg", "__sys_recvfrom", "__sys_recvmsg",
                        "tcp_splice_read")),
    ("socket send", ("tcp_sendmsg", "sock_sendmsg", "__sys_sendmsg", "__sys_sendto")),
    ("page cache read", ("filemap_read", "ext4_file_read_iter", "generic_file_read_iter")),
    ("page cache write", ("ext4_buffered_write_iter", "generic_perform_write", "ext4_file_write_iter")),
]
COPY = re.compile(r"^__(memmove|memcpy|memset|mempcpy)")
ALLOCATION = re.compile(r"malloc|_int_free|^free$|^cfree|tcache|^operator (new|delete)")


def classify(leaf_sym, leaf_dso, chain_syms):
    if "libgcrypt" in leaf_dso:
        return "cipher"
    if "strata::crypto::" in leaf_sym:
        return "key lookup and loop"
    if "IsAllZero" in leaf_sym or "DecipherUnits" in leaf_sym:
        return "hole check"
    if "kernel" in leaf_dso:
        for stage, callers in KERNEL_CALLERS:
            if any(c in chain_syms for c in callers):
                return stage
        return "other kernel"
    if COPY.search(leaf_sym):
        return "user copies"
    if ALLOCATION.search(leaf_sym):
        return "allocation"
    if "stratad" in leaf_dso:
        return "other Strata"
    return "other user space"


def stage_times(perf_data):
    """CPU microseconds per stage in one `perf record -g` file (cpu-clock periods are ns)."""
    out = subprocess.run(["perf", "script", "-i", perf_data, "-F", "period,ip,sym,dso"],
                         capture_output=True, text=True, timeout=600).stdout
    totals = collections.Counter()

    def finish(sample):
        if sample and sample["chain"]:
            leaf_sym, leaf_dso = sample["chain"][0]
            syms = {s for s, _ in sample["chain"]}
            totals[classify(leaf_sym, leaf_dso, syms)] += sample["period"] / 1000

    # Samples are separated by blank lines: "    250000" (the period), then one line per frame,
    # leaf first: "\tffffffff81234567 tcp_recvmsg ([kernel.kallsyms])".
    sample = None
    for line in out.splitlines():
        if not line.strip():
            finish(sample)
            sample = None
        elif line.startswith("\t"):
            m = re.match(r"\t\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)$", line)
            if m and sample is not None:
                sample["chain"].append((re.sub(r"\+0x[0-9a-f]+$", "", m.group(1)), m.group(2)))
        else:
            finish(sample)
            sample = {"period": int(line.split()[0]), "chain": []}
    finish(sample)
    return totals


def measure(peer, row, runtime, work):
    """One fio run of the row against `peer`, perf sampling the server after fio's ramp:
    (stage -> CPU us in the window, requests in the window, fio's result)."""
    _, rw, bs, depth, conns, fresh = row
    uri = peer.start(fresh)
    os.sync()
    data = os.path.join(work, f"{peer.name}.perf")
    window = runtime - 0.3
    holder = {}

    def sample():
        holder["perf"] = subprocess.Popen(
            ["perf", "record", "-q", "-g", "-p", str(peer.pid), "-o", data, "--", "sleep", str(window)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    timer = threading.Timer(1.0, sample)  # fio's ramp is 1 s
    timer.start()
    r = run_fio(uri, rw, bs, depth, conns, fresh, runtime, work)
    timer.join()
    holder["perf"].wait(timeout=60)
    if r is None:
        return None
    return stage_times(data), r["iops"] * window, r


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin_dir")
    parser.add_argument("--runtime", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", default="", help="only rows whose name contains this")
    parser.add_argument("--write-docs", action="store_true")
    a = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("nbd_cpu_breakdown: needs perf (apt-get install linux-perf)")
    bin_dir = os.path.abspath(a.bin_dir)
    work = tempfile.mkdtemp(prefix="strata-nbd-breakdown-", dir=os.environ.get("STRATA_BENCH_DIR", "/var/tmp"))
    image = os.path.join(work, "image.raw")
    with open(image, "wb") as f:
        for _ in range(nbd_peers.SIZE // (64 * MiB)):
            f.write(os.urandom(64 * MiB))
    servers = [StrataPeer("strata", work, image, bin_dir),
               StrataPeer("strata-encrypted", work, image, bin_dir, encrypted=True)]
    rows = [r for r in ROWS if a.rows in r[0]]
    stages = {}  # (row, server) -> Counter of CPU us
    requests = collections.Counter()
    bandwidth = collections.defaultdict(list)
    rate_samples = []
    try:
        for round_index in range(a.rounds):
            rate_samples.append(xts_rates(bin_dir))
            for row in rows:
                order = servers if round_index % 2 == 0 else servers[::-1]
                for server in order:
                    m = measure(server, row, a.runtime, work)
                    if m is None:
                        print(f"[{round_index + 1}/{a.rounds}] {row[0]:24} {server.name:18} failed")
                        continue
                    times, n, r = m
                    stages.setdefault((row[0], server.name), collections.Counter()).update(times)
                    requests[(row[0], server.name)] += n
                    bandwidth[(row[0], server.name)].append(r["bw"])
                    print(f"[{round_index + 1}/{a.rounds}] {row[0]:24} {server.name:18} "
                          f"{r['bw'] / MiB:7.0f} MiB/s {sum(times.values()) / n:8.1f} us/req sampled",
                          flush=True)
    finally:
        for s in servers:
            s.close()
        shutil.rmtree(work, ignore_errors=True)
    rates = median_rates(rate_samples + [xts_rates(bin_dir)])
    table = render(rows, stages, requests, bandwidth, rates, a.rounds, a.runtime)
    print(table)
    if a.write_docs:
        write_docs_section("nbd-cpu-breakdown", table)


def render(rows, stages, requests, bandwidth, rates, rounds, runtime):
    parts = [f"perf samples of each server over {rounds} rounds of {runtime} s per row (fio's nbd "
             f"engine, one connection), in microseconds of CPU per request. The cipher alone, "
             f"single core (xts_bench, median of a measurement before each round and one at the end): "
             + ", ".join(f"{r / 1e9:.1f} GB/s at {b // 1024} KiB" for b, r in sorted(rates.items())) + "."]
    for row in rows:
        plain, enc = (stages.get((row[0], n)) for n in ("strata", "strata-encrypted"))
        if not plain or not enc:
            parts.append(f"**{row[0]}**: failed")
            continue
        n_plain, n_enc = requests[(row[0], "strata")], requests[(row[0], "strata-encrypted")]
        bw = {n: sum(bandwidth[(row[0], n)]) / len(bandwidth[(row[0], n)]) for n in ("strata", "strata-encrypted")}
        lines = [f"**{row[0]}** (unencrypted {bw['strata'] / MiB:.0f} MiB/s, encrypted "
                 f"{bw['strata-encrypted'] / MiB:.0f} MiB/s, means of the rounds):", "",
                 "| stage | unencrypted | encrypted | added by encryption |", "| --- | --- | --- | --- |"]
        for stage in STAGES + ["total"]:
            p = (sum(plain.values()) if stage == "total" else plain[stage]) / n_plain
            e = (sum(enc.values()) if stage == "total" else enc[stage]) / n_enc
            if stage != "total" and p < 0.05 and e < 0.05:
                continue
            label = f"**{stage}**" if stage == "total" else stage
            lines.append(f"| {label} | {p:.2f} us | {e:.2f} us | {e - p:+.2f} us |")
        size = nbd_peers.request_bytes(row)
        rate = rates.get(size)
        if rate:
            alone = size / rate * 1e6
            in_server = enc["cipher"] / n_enc + enc["key lookup and loop"] / n_enc
            added = sum(enc.values()) / n_enc - sum(plain.values()) / n_plain
            lines += ["", f"The cipher alone costs {alone:.2f} us for {size // 1024} KiB; in the server, "
                      f"cipher with key lookup {in_server:.2f} us ({in_server / alone:.2f}x), and all "
                      f"that encryption adds {added:.2f} us ({added / alone:.2f}x; target <= 1.25x)."]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


if __name__ == "__main__":
    main()
