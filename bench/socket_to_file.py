#!/usr/bin/env python3
"""What a large write from a socket costs its receiver, by how the bytes reach the file: the
way an NBD server takes a 1 MiB write payload over loopback TCP and puts it in a page-cached
file (a volume's head).

- copy: recv into a buffer, then pwrite it (two copies: socket to buffer, buffer to page cache;
  what Strata, nbdkit-file and nbd-server do);
- splice: splice from the socket into a pipe (the socket's pages move, no copy), then from the
  pipe into the file at the offset (one copy, into the page cache);
- lend: recv into a buffer, then vmsplice the buffer's pages into a pipe and splice them into the
  file (two copies, as with copy, but the kernel copies into the page cache from its own
  mapping of the pages instead of from user memory): what an encrypted write could do once
  its buffer is enciphered.

A sender process streams --count MiB; the receiver's CPU (utime + stime) per MiB is the figure
that matters (the machine's two cores are shared with the sender, as with fio). Rounds
rotate the ways. Scratch file in STRATA_BENCH_DIR (default /var/tmp).

Usage: bench/socket_to_file.py [--count MiB] [--rounds N]"""
import argparse
import ctypes
import fcntl
import os
import resource
import socket
import statistics
import tempfile
import time

MiB = 1 << 20
F_SETPIPE_SZ = 1031
FILE_MIB = 256
WAYS = ("copy", "splice", "lend")


class Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


libc = ctypes.CDLL(None, use_errno=True)
libc.vmsplice.argtypes = [ctypes.c_int, ctypes.POINTER(Iovec), ctypes.c_ulong, ctypes.c_uint]
libc.vmsplice.restype = ctypes.c_ssize_t


def recv_block(conn, view):
    got = 0
    while got < MiB:
        n = conn.recv_into(view[got:], MiB - got)
        if n == 0:
            raise RuntimeError("sender closed early")
        got += n


def lend(buf, write_end, read_end, fd, at):
    """Writes `buf` at `at` of `fd` by vmsplice into the pipe, then splice into the file."""
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    done = 0
    while done < MiB:
        lent = libc.vmsplice(write_end, ctypes.byref(Iovec(base + done, MiB - done)), 1, 0)
        if lent <= 0:
            raise OSError(ctypes.get_errno(), "vmsplice")
        moved = 0
        while moved < lent:
            moved += os.splice(read_end, fd, lent - moved, offset_dst=at + done + moved)
        done += lent


def receive(way, conn, fd, count):
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, MiB)
    try:
        if way == "splice":
            for i in range(count):
                at = (i % FILE_MIB) * MiB
                left = MiB
                while left:
                    n = os.splice(conn.fileno(), write_end, left)
                    if n == 0:
                        raise RuntimeError("sender closed early")
                    moved = 0
                    while moved < n:
                        moved += os.splice(read_end, fd, n - moved,
                                           offset_dst=at + MiB - left + moved)
                    left -= n
            return
        buf = bytearray(MiB)
        view = memoryview(buf)
        for i in range(count):
            recv_block(conn, view)
            at = (i % FILE_MIB) * MiB
            if way == "copy":
                os.pwrite(fd, buf, at)
            else:
                lend(buf, write_end, read_end, fd, at)
    finally:
        os.close(read_end)
        os.close(write_end)


def run(way, count, path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    pid = os.fork()
    if pid == 0:
        sender = socket.create_connection(listener.getsockname())
        block = os.urandom(MiB)
        for _ in range(count):
            sender.sendall(block)
        sender.close()
        os._exit(0)
    conn, _ = listener.accept()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, FILE_MIB * MiB)
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        receive(way, conn, fd, count)
        seconds = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.close(fd)
        conn.close()
        listener.close()
        os.waitpid(pid, 0)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return count / seconds, cpu * 1e6 / count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2048, help="MiB per run")
    parser.add_argument("--rounds", type=int, default=5)
    a = parser.parse_args()
    base = os.environ.get("STRATA_BENCH_DIR", "/var/tmp")
    results = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="strata-socket-to-file-", dir=base) as work:
        path = os.path.join(work, "head")
        for r in range(a.rounds):
            for way in WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]:
                results[way].append(run(way, a.count, path))
                rate, cpu = results[way][-1]
                print(f"[{r + 1}/{a.rounds}] {way:6} {rate:6.0f} MiB/s, receiver {cpu:4.0f} us/MiB",
                      flush=True)
    print("| way | MiB/s (median) | receiver CPU per MiB (median) |\n| --- | --- | --- |")
    for way, runs in results.items():
        print(f"| {way} | {statistics.median(x[0] for x in runs):.0f} | "
              f"{statistics.median(x[1] for x in runs):.0f} us |")


if __name__ == "__main__":
    main()
