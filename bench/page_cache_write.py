#!/usr/bin/env python3
"""What putting 1 MiB from memory into a page-cached file costs, by how the bytes get there:
the last step of an encrypted write, whose buffer has just been enciphered (docs/benchmarks.md,
"Session 24").

- pwrite: pwrite(2) from the buffer (the kernel copies from user memory);
- lend: vmsplice(2) the buffer's pages into a pipe, splice(2) them into the file (the kernel
  copies from its own mapping of the pages; bench/socket_to_file.py's `lend`);
- map-dirty: copy into a shared mapping of the file whose pages are dirty and mapped writable
  (what a cipher writing into the mapping would cost at best);
- map-clean: the same after fsync(2) has cleaned the pages, so each 4 KiB page takes a write
  fault first (what it costs once writeback has passed).

Each pass rewrites the buffer (as a cipher would) and writes it over a 256 MiB file, MiB by
MiB; the figure is the process's CPU (utime + stime) per MiB, median of the passes. Nothing
else runs. Scratch file in STRATA_BENCH_DIR (default /var/tmp).

Usage: bench/page_cache_write.py [--passes N]"""
import argparse
import ctypes
import fcntl
import mmap
import os
import resource
import statistics
import tempfile

from socket_to_file import F_SETPIPE_SZ, FILE_MIB, MiB, lend

WAYS = ("pwrite", "lend", "map-dirty", "map-clean")


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_pass(way, fd, mapping, buf, pipe, fill):
    """The CPU seconds of writing the whole file once, `way`, after the buffer is rewritten."""
    address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    if way == "map-clean":
        os.fsync(fd)  # Cleans every page: the next write to each faults.
    start = cpu_seconds()
    for i in range(FILE_MIB):
        ctypes.memset(address, fill, MiB)
        at = i * MiB
        if way == "pwrite":
            os.pwrite(fd, buf, at)
        elif way == "lend":
            lend(buf, pipe[1], pipe[0], fd, at)
        else:
            mapping[at:at + MiB] = buf
    return cpu_seconds() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=5)
    a = parser.parse_args()
    base = os.environ.get("STRATA_BENCH_DIR", "/var/tmp")
    results = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="strata-page-cache-write-", dir=base) as work:
        fd = os.open(os.path.join(work, "head"), os.O_RDWR | os.O_CREAT, 0o600)
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, F_SETPIPE_SZ, MiB)
        buf = bytearray(MiB)
        try:
            for i in range(FILE_MIB):  # Every page in the page cache before the first pass.
                os.pwrite(fd, buf, i * MiB)
            with mmap.mmap(fd, FILE_MIB * MiB) as mapping:
                mapping[0:FILE_MIB * MiB] = bytes(FILE_MIB * MiB)  # Mapped and dirty.
                for p in range(a.passes):
                    for way in WAYS[p % len(WAYS):] + WAYS[:p % len(WAYS)]:
                        if way == "map-dirty":  # Dirty again after another way's pass.
                            one_pass(way, fd, mapping, buf, (read_end, write_end), p)
                        seconds = one_pass(way, fd, mapping, buf, (read_end, write_end), p + 1)
                        results[way].append(seconds * 1e6 / FILE_MIB)
                        print(f"[{p + 1}/{a.passes}] {way:9} {results[way][-1]:6.1f} us/MiB",
                              flush=True)
        finally:
            os.close(read_end)
            os.close(write_end)
            os.close(fd)
    print("| way | CPU per MiB (median) | range |\n| --- | --- | --- |")
    for way, runs in results.items():
        print(f"| {way} | {statistics.median(runs):.0f} us | {min(runs):.0f}-{max(runs):.0f} us |")


if __name__ == "__main__":
    main()
