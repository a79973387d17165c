#!/usr/bin/env python3
"""What encryption adds to a request's CPU, against the cipher's own cost, in one run.

volume_io_bench times the same requests on an unencrypted and an encrypted volume (one thread,
page-cached head, rows interleaved at random) and reports user and system CPU per request
apart; xts_bench times AES-256-XTS alone on the backend the volume uses. Encryption runs in user
space only (the system calls are the same), so for each row: added CPU = encrypted - unencrypted
user CPU, cipher CPU = request bytes / the single-core XTS rate of the same direction (decrypt
for reads, encrypt for writes); issue 17 asks added <= 1.25 x cipher. System CPU is shown too:
it is the page cache's, the same calls in both, and its run-to-run noise is larger than the
cipher's cost at 4 KiB. What could add more than the cipher
is each listed in the table's note: copies (none: writes encipher into the buffer that is
written, reads decipher in place), allocations (none: per-thread scratch), tweak setup (one
IV per 4 KiB unit, which xts_bench pays too) and key lookup (a scan of four per-thread slots).

Usage: bench/encryption_cost.py BUILD_BIN_DIR [--repetitions N] [--write-docs]"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from strata_testlib import write_docs_section  # noqa: E402

ROWS = [("4 KiB random read", "randread", 4096), ("4 KiB random write", "randwrite", 4096),
        ("1 MiB sequential read", "seqread", 1 << 20), ("1 MiB sequential write", "seqwrite", 1 << 20)]


def bench(binary, flt, repetitions):
    out = subprocess.run([binary, f"--benchmark_filter={flt}", "--benchmark_format=json",
                          f"--benchmark_repetitions={repetitions}", "--benchmark_min_time=1",
                          "--benchmark_report_aggregates_only=true",
                          "--benchmark_enable_random_interleaving=true"],
                         capture_output=True, text=True, check=True, timeout=1200).stdout
    medians = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("aggregate_name") == "median" or (repetitions == 1 and b.get("run_type") == "iteration"):
            unit = {"ns": 1e-3, "us": 1.0, "ms": 1e3}[b["time_unit"]]
            medians[b["run_name"]] = {"cpu_us": b["cpu_time"] * unit,
                                      "user_us": b.get("user_us", 0), "sys_us": b.get("sys_us", 0),
                                      "bytes_per_second": b.get("bytes_per_second", 0)}
    return medians


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin_dir")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--write-docs", action="store_true")
    a = parser.parse_args()
    backend = "OpenSsl" if os.environ.get("STRATA_XTS") == "openssl" else "Gcrypt"
    io = bench(os.path.join(a.bin_dir, "volume_io_bench"), "^(volume|encrypted)/", a.repetitions)
    xts = bench(os.path.join(a.bin_dir, "xts_bench"), f"(En|De)crypt{backend}/", a.repetitions)
    lines = [f"AES-256-XTS on {'libgcrypt' if backend == 'Gcrypt' else 'OpenSSL'}, one core: "
             + ", ".join(f"{k.split('/')[0][3:10].lower()} {v['bytes_per_second'] / 1e9:.1f} GB/s "
                         f"at {int(k.rsplit('/', 1)[1]) // 1024} KiB"
                         for k, v in sorted(xts.items())) + f" (medians of {a.repetitions}).", "",
             "| row | unencrypted user / system CPU per request | encrypted user / system | added (user) | cipher | added / cipher (target <= 1.25) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, kind, size in ROWS:
        plain = io.get(f"volume/{kind}/{size}")
        enc = io.get(f"encrypted/{kind}/{size}")
        direction = "Decrypt" if "read" in kind else "Encrypt"
        rate = xts.get(f"BM_{direction}{backend}/{size}", {}).get("bytes_per_second")
        if not plain or not enc or not rate:
            lines.append(f"| {name} | n/a | n/a | n/a | n/a | n/a |")
            continue
        added = enc["user_us"] - plain["user_us"]
        cipher = size / rate * 1e6
        lines.append(f"| {name} | {plain['user_us']:.2f} / {plain['sys_us']:.2f} us | "
                     f"{enc['user_us']:.2f} / {enc['sys_us']:.2f} us | {added:.2f} us | "
                     f"{cipher:.2f} us ({direction.lower()}) | {added / cipher:.2f} |")
    table = "\n".join(lines)
    print(table)
    if a.write_docs:
        write_docs_section("encryption-cost", table)


if __name__ == "__main__":
    main()
