#!/usr/bin/python3
"""A libnbd workload that can be killed under: random 4 KiB writes (each block's content names
the block and a generation), a FLUSH every 16 writes. `write URI STATE SEED` runs until the
server goes away and saves which generations were flushed and which were written after the
last completed FLUSH; `verify URI STATE` checks that every block holds its flushed generation or
one written later (never older data, never garbage), and that unwritten blocks read zeros.
Runs with Debian's python3 (python3-libnbd)."""
import json
import random
import struct
import sys

import nbd

BLOCK = 4096
BLOCKS = 16384  # The first 64 MiB.


def content(block, gen):
    return struct.pack(">QQ", block, gen) * (BLOCK // 16)


def write(uri, state_path, seed):
    rng = random.Random(int(seed))
    h = nbd.NBD()
    h.connect_uri(uri)
    flushed, after, writes, flushes = {}, {}, 0, 0
    try:
        for gen in range(1, 10**9):
            block = rng.randrange(BLOCKS)
            after.setdefault(block, []).append(gen)  # Recorded before the write: may land.
            h.pwrite(content(block, gen), block * BLOCK)
            writes += 1
            if writes % 16 == 0:
                h.flush()
                flushes += 1
                for b, gens in after.items():
                    flushed[b] = gens[-1]
                after = {}
    except nbd.Error:
        pass
    with open(state_path, "w") as f:
        json.dump({"flushed": flushed, "after": after}, f)
    print(f"workload: {writes} writes, {flushes} flushes before the server went away")


def verify(uri, state_path):
    state = json.load(open(state_path))
    flushed = {int(k): v for k, v in state["flushed"].items()}
    after = {int(k): v for k, v in state["after"].items()}
    h = nbd.NBD()
    h.connect_uri(uri)
    bad = []
    for block in range(BLOCKS):
        got = h.pread(BLOCK, block * BLOCK)
        allowed = [content(block, g) for g in after.get(block, [])]
        allowed.append(content(block, flushed[block]) if block in flushed else bytes(BLOCK))
        if got not in allowed:
            bad.append(block)
    print(f"verify: {len(flushed)} flushed blocks, {len(after)} written after the last flush, "
          f"{len(bad)} wrong: {bad[:10]}")
    return 1 if bad or not flushed else 0


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(*sys.argv[2:5])
        sys.exit(0)
    sys.exit(verify(*sys.argv[2:4]))
