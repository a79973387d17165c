#!/usr/bin/python3
"""Protocol checks through libnbd's Python binding (python3-libnbd; Debian's python3):
negotiated flags, block sizes, meta contexts, FAST_ZERO, FUA, CACHE, block status, errors
from the server with libnbd's client-side checks turned off, and a read-only snapshot export.

Usage: nbd_libnbd_checks.py VOLUME_URI SNAPSHOT_URI. Prints "N passed, M failed"."""
import errno
import sys

import nbd

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what, flush=True)


def server_errno(fn):
    try:
        fn()
        return 0
    except nbd.Error as e:
        print(f"  ({e.string})", flush=True)
        return e.errnum


def main(volume_uri, snapshot_uri):
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.add_meta_context("strata:changed")
    h.connect_uri(volume_uri)
    check(h.get_structured_replies_negotiated(), "structured replies")
    for name in ("can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache",
                 "can_multi_conn"):
        check(getattr(h, name)(), name)
    check(not h.is_read_only(), "the volume is writable")
    check(h.get_block_size(nbd.SIZE_MINIMUM) == 512, "minimum block size 512")
    check(h.get_block_size(nbd.SIZE_PREFERRED) == 4096, "preferred block size 4096")
    check(h.get_block_size(nbd.SIZE_MAXIMUM) == 32 << 20, "maximum block size 32 MiB")
    check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION), "base:allocation negotiated")
    check(h.can_meta_context("strata:changed"), "strata:changed negotiated")
    h.pwrite(b"\xab" * 1536, 512, nbd.CMD_FLAG_FUA)
    check(h.pread(1536, 512) == b"\xab" * 1536, "512-byte-aligned FUA write reads back")
    h.zero(1 << 20, 0, nbd.CMD_FLAG_FAST_ZERO)
    check(h.pread(4096, 0) == bytes(4096), "FAST_ZERO zeroes")
    h.pwrite(b"\x01" * 65536, 2 << 20)
    h.cache(65536, 2 << 20)
    seen = {}

    def extent(metacontext, offset, entries, err):
        seen[metacontext] = list(entries)
        return 0

    h.block_status(4 << 20, 0, extent)
    alloc = seen.get(nbd.CONTEXT_BASE_ALLOCATION, [])
    check(alloc[:4] == [2 << 20, 3, 65536, 0], f"base:allocation via libnbd: {alloc[:6]}")
    check(seen.get("strata:changed", [])[:2] == [4 << 20, 1], f"strata:changed via libnbd: {seen}")
    h.set_strict_mode(0)  # Let the server judge what libnbd would refuse itself.
    size = h.get_size()
    check(server_errno(lambda: h.pread(512, size)) == errno.EINVAL, "read past the end: EINVAL")
    check(server_errno(lambda: h.pread(100, 7)) == errno.EINVAL, "misaligned read: EINVAL")
    check(server_errno(lambda: h.pread(512, 0, nbd.CMD_FLAG_FUA)) == errno.EINVAL,
          "FUA on a read: EINVAL")
    check(h.pread(512, 2 << 20) == b"\x01" * 512, "the connection goes on after errors")
    h.flush()
    h.shutdown()

    s = nbd.NBD()
    s.connect_uri(snapshot_uri)
    check(s.is_read_only(), "the snapshot export is read-only")
    check(not s.can_trim() and not s.can_zero(), "no TRIM or WRITE_ZEROES on a snapshot")
    s.set_strict_mode(0)
    check(server_errno(lambda: s.pwrite(b"x" * 512, 0)) == errno.EPERM, "write to a snapshot: EPERM")
    check(len(s.pread(65536, 0)) == 65536, "the snapshot reads")
    s.shutdown()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
