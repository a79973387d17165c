#!/usr/bin/env python3
"""What a small overwrite costs in the page cache, by the size of the writes that laid the file
down. Recent kernels (this machine runs 6.18) cache an ext4 file in large folios, sized by the
writes that made them: a file filled in 1 MiB writes is held in large folios, and each later
4 KiB write into it dirties one of those. A volume's head is such a file: nbdcopy, an image
restore or a VM's sequential writes lay it down in large writes, then the VM overwrites 4 KiB
blocks at random. This is why bench/nbd_peers.py fills every server's file with the same
writes.

For each fill size: the fill's cost per MiB, then 4 KiB random overwrites (each a pwrite) and
1 MiB sequential reads of the same file, all in the page cache (one file of --size MiB, fsynced
after the fill so that no writeback runs during the timing).

Usage: bench/page_cache_folios.py [--size MiB] [--writes N]
Scratch file in STRATA_BENCH_DIR (default /var/tmp)."""
import argparse
import os
import random
import tempfile
import time

MiB = 1 << 20


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256, help="file size in MiB")
    parser.add_argument("--writes", type=int, default=50000, help="4 KiB overwrites per fill size")
    a = parser.parse_args()
    size = a.size * MiB
    data = os.urandom(MiB)
    rng = random.Random(1)
    offsets = [rng.randrange(size // 4096) * 4096 for _ in range(a.writes)]
    print("| fill write size | fill, per MiB | 4 KiB random overwrite | 1 MiB read |")
    print("| --- | --- | --- | --- |")
    for fill in (4096, 16384, 65536, 262144, MiB):
        fd, path = tempfile.mkstemp(prefix="strata-folios-", dir=os.environ.get("STRATA_BENCH_DIR", "/var/tmp"))
        try:
            piece = data[:fill]
            start = time.perf_counter()
            for offset in range(0, size, fill):
                os.pwrite(fd, piece, offset)
            fill_us = (time.perf_counter() - start) * 1e6 / a.size
            os.fsync(fd)
            block = data[:4096]
            start = time.perf_counter()
            for offset in offsets:
                os.pwrite(fd, block, offset)
            write_us = (time.perf_counter() - start) * 1e6 / a.writes
            start = time.perf_counter()
            for offset in range(0, size, MiB):
                os.pread(fd, MiB, offset)
            read_us = (time.perf_counter() - start) * 1e6 / a.size
            label = f"{fill // 1024} KiB" if fill < MiB else "1 MiB"
            print(f"| {label} | {fill_us:.0f} us | {write_us:.2f} us | {read_us:.0f} us |", flush=True)
        finally:
            os.close(fd)
            os.unlink(path)


if __name__ == "__main__":
    main()
