#!/usr/bin/env python3
"""The NBD protocol beyond the basics, with real clients where they speak it and a raw client
where none does: extended headers (64-bit lengths), NBD_CMD_RESIZE, FAST_ZERO and NO_HOLE, the
strata:changed meta context (exact after SIGKILL), read-only snapshot exports, the 64-connection
limit, hostile clients, multi-conn FLUSH durability across SIGKILL, a libnbd workload killed
mid-run, fio verify over two connections, and STARTTLS with PSK and X.509 (nbdinfo, qemu-io).

Usage: nbd_protocol_test.py BIN_DIR [TEST...]. Prints "N passed, M failed".
"""
import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import time

from strata_testlib import (CMD_BLOCK_STATUS, CMD_FLUSH, CMD_READ, CMD_RESIZE, CMD_TRIM, CMD_WRITE,
                            CMD_WRITE_ZEROES, FLAG_FAST_ZERO, FLAG_NO_HOLE, GiB, MiB, Checks, Daemon,
                            RawClient, scratch_dir, sh)

BIN = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
GROUP = "i-0abcdef0123456789"
check = Checks()
EINVAL, EPERM, ENOTSUP, EOVERFLOW = 22, 1, 95, 75


class Env:
    def __init__(self, work, daemon):
        self.work, self.daemon = work, daemon
        self.ec2 = daemon.client()
        self.devices = iter(f"/dev/sd{c}" for c in "fghijklmnopqrstuvwxyz")

    def volume(self, gib=1):
        vol = self.ec2.create_volume(Size=gib, AvailabilityZone="local-1a")["VolumeId"]
        self.ec2.attach_volume(VolumeId=vol, InstanceId=GROUP, Device=next(self.devices))
        return vol

    def snapshot(self, vol):
        snap = self.ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        self.ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig={"Delay": 1})
        return snap

    def restart(self, kill):
        self.daemon.kill() if kill else self.daemon.stop()
        check(self.daemon.start(), "stratad restarts")
        self.ec2 = self.daemon.client()


def map_of(uri, context):
    """nbdinfo --map=CONTEXT as [(offset, length, type)]."""
    out = sh("nbdinfo", f"--map={context}", uri)
    rows = []
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return rows, out


def test_extended_headers(env):
    vol = env.volume(8)
    c = RawClient(env.daemon.unix_socket, vol, extended=True, contexts=("base:allocation", "strata:changed"))
    check(c.extended and c.go_reply == 1, "extended headers negotiated, then NBD_OPT_GO")
    flags = c.transmission_flags or 0
    check(flags & (1 << 11) and flags & (1 << 9) and flags & (1 << 8),
          f"FAST_ZERO, RESIZE and CAN_MULTI_CONN advertised: {flags:#x}")
    check(sorted(c.contexts.values()) == ["base:allocation", "strata:changed"], f"contexts: {c.contexts}")
    data = os.urandom(4096)
    check(c.request(CMD_WRITE, 5 * GiB, 4096, payload=data)[0] == 0, "write at 5 GiB")
    err, back = c.request(CMD_READ, 5 * GiB, 4096)
    check(err == 0 and back == data, "read back through an extended reply")
    status = c.block_status(0, 8 * GiB)
    ids = {name: i for i, name in c.contexts.items()}
    alloc = status.get(ids.get("base:allocation"), []) if isinstance(status, dict) else []
    check(alloc[:2] == [(5 * GiB, 3), (64 * 1024, 0)],
          f"64-bit block status descriptors: a 5 GiB hole, then data: {alloc[:3]}")
    check(c.request(CMD_TRIM, 0, 6 * GiB)[0] == 0, "a 6 GiB TRIM in one request (64-bit length)")
    err, back = c.request(CMD_READ, 5 * GiB, 4096)
    check(err == 0 and back == bytes(4096), "trimmed range reads zeros")
    check(c.request(CMD_READ, 0, 64 * MiB)[0] == EOVERFLOW, "read past the maximum: EOVERFLOW chunk")
    check(c.request(CMD_READ, 100, 512)[0] == EINVAL, "misaligned read: EINVAL chunk")
    check(c.request(CMD_READ, 8 * GiB, 512)[0] == EINVAL, "read past the end: EINVAL chunk")
    c.close()
    # Extended headers asked twice, or structured replies after them: refused, session goes on.
    c = RawClient(env.daemon.unix_socket, None, extended=True)
    check(c.simple_option(11) & 0x80000000, "a second NBD_OPT_EXTENDED_HEADERS is an error")
    check(c.simple_option(8) & 0x80000000, "structured replies after extended headers: error")
    check(c.go(vol) == 1, "NBD_OPT_GO still works")
    c.close()


def test_resize(env):
    vol = env.volume(1)
    c = RawClient(env.daemon.unix_socket, vol)
    check(c.request(CMD_RESIZE, 2 * GiB, 0)[0] == 0, "NBD_CMD_RESIZE grows 1 to 2 GiB")
    check(env.ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]["Size"] == 2, "DescribeVolumes: 2 GiB")
    out = sh("nbdinfo", "--size", env.daemon.uri(vol))
    check(out.stdout.strip() == str(2 * GiB), f"a new connection sees 2 GiB: {out.stdout}")
    check(c.request(CMD_WRITE, GiB + MiB, 512, payload=b"r" * 512)[0] == 0, "write in the grown part")
    check(c.request(CMD_RESIZE, GiB, 0)[0] == EPERM, "shrinking is refused: EPERM")
    check(c.request(CMD_RESIZE, 2 * GiB + 512, 0)[0] == EINVAL, "a size not a multiple of 4096: EINVAL")
    err, back = c.request(CMD_READ, GiB + MiB, 512)
    check(err == 0 and back == b"r" * 512, "data intact after the refused resizes")
    c.close()


def test_zeroes(env):
    vol = env.volume(1)
    c = RawClient(env.daemon.unix_socket, vol, structured=True, contexts=("base:allocation",))
    c.request(CMD_WRITE, 0, 65536, payload=b"z" * 65536)
    check(c.request(CMD_WRITE_ZEROES, 0, 65536, flags=FLAG_FAST_ZERO)[0] == 0, "FAST_ZERO succeeds")
    check(c.request(CMD_READ, 0, 65536)[1] == bytes(65536), "zeroed range reads zeros")
    c.request(CMD_WRITE, MiB, 65536, payload=b"h" * 65536)
    check(c.request(CMD_WRITE_ZEROES, MiB, 65536, flags=FLAG_FAST_ZERO | FLAG_NO_HOLE)[0] == 0,
          "FAST_ZERO with NO_HOLE succeeds (no zeros are written either way)")
    check(c.request(CMD_READ, MiB, 65536)[1] == bytes(65536), "NO_HOLE range reads zeros")
    check(c.request(CMD_WRITE_ZEROES, 2 * MiB, 65536, flags=FLAG_NO_HOLE)[0] == 0,
          "NO_HOLE zeroes a never-written range")
    status = c.block_status(MiB, 2 * MiB)
    check(isinstance(status, dict) and list(status.values())[0] == [(65536, 0), (MiB - 65536, 3)] * 2,
          f"NO_HOLE leaves its ranges allocated, the rest is a hole: {status}")
    c.close()


def test_changed_context(env):
    vol = env.volume(1)
    uri = env.daemon.uri(vol)
    sh("qemu-io", "-f", "raw", "-c", "write -P 1 0 1M", uri)
    rows, out = map_of(uri, "strata:changed")
    check(rows == [(0, GiB, 1)], f"no snapshot yet: everything counts as changed: {rows} {out.stderr}")
    snap = env.snapshot(vol)
    sh("qemu-io", "-f", "raw", "-c", "write -P 2 10M 64k", "-c", "write -P 1 0 64k", "-c", "flush", uri)
    want = [(0, 64 * 1024, 1), (64 * 1024, 10 * MiB - 64 * 1024, 0), (10 * MiB, 64 * 1024, 1),
            (10 * MiB + 64 * 1024, GiB - 10 * MiB - 64 * 1024, 0)]
    rows, out = map_of(uri, "strata:changed")
    check(rows == want, f"nbdinfo --map=strata:changed after the snapshot: {rows} {out.stderr}")
    out = sh("nbdinfo", "--map=strata:changed", env.daemon.uri(snap))
    check(out.returncode != 0, "snapshot exports offer no strata:changed context")
    env.restart(kill=True)
    uri = env.daemon.uri(vol)
    rows, out = map_of(uri, "strata:changed")
    # After SIGKILL every chunk the volume holds is suspect and compared with the snapshot:
    # 0-64k was rewritten with its old bytes, so only the write at 10 MiB is a change.
    check(rows == [(0, 10 * MiB, 0)] + want[2:], f"exact after SIGKILL: {rows} {out.stderr}")
    return snap


def test_snapshot_export(env):
    vol = env.volume(1)
    uri = env.daemon.uri(vol)
    image = os.path.join(env.work, "snap-source.raw")
    with open(image, "wb") as f:
        f.write(os.urandom(8 * MiB))
        f.truncate(GiB)
    sh("nbdcopy", image, uri)
    snap = env.snapshot(vol)
    sh("qemu-io", "-f", "raw", "-c", "write -P 9 0 4M", uri)  # The volume moves on.
    suri = env.daemon.uri(snap)
    info = sh("nbdinfo", "--json", suri)
    meta = json.loads(info.stdout)["exports"][0] if info.returncode == 0 else {}
    check(meta.get("is_read_only") is True and meta.get("export-size") == GiB,
          f"a snapshot is exported read-only on request: {info.stdout[:300]} {info.stderr}")
    back = os.path.join(env.work, "snap-back.raw")
    out = sh("nbdcopy", suri, back)
    check(out.returncode == 0 and open(back, "rb").read() == open(image, "rb").read(),
          f"nbdcopy of the snapshot export is the point-in-time data: {out.stderr}")
    out = sh("qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", suri)
    check(out.returncode != 0 or "failed" in out.stdout + out.stderr, f"writes to a snapshot fail: {out.stdout}")
    c = RawClient(env.daemon.unix_socket, snap)
    check(c.request(CMD_WRITE, 0, 512, payload=b"x" * 512)[0] == EPERM, "raw write to a snapshot: EPERM")
    check(c.request(CMD_TRIM, 0, 512)[0] == EPERM, "trim on a snapshot: EPERM")
    check(c.request(CMD_RESIZE, 2 * GiB, 0)[0] == EPERM, "resize of a snapshot: EPERM")
    c.close()
    listed = sh("nbdinfo", "--list", "--json", env.daemon.uri())
    check(snap not in listed.stdout, "snapshots are opened on request, not listed")


def test_connection_limit(env):
    vol = env.volume(1)
    clients = [RawClient(env.daemon.unix_socket, vol) for _ in range(64)]
    check(all(c.go_reply == 1 for c in clients), "64 connections to one export")
    extra = RawClient(env.daemon.unix_socket, vol)
    check(extra.go_reply == 0x80000002, f"the 65th is refused (NBD_REP_ERR_POLICY): {extra.go_reply:#x}")
    extra.close()
    other = env.volume(1)
    check(RawClient(env.daemon.unix_socket, other).go_reply == 1, "other exports are unaffected")
    clients.pop().close()
    for _ in range(100):
        again = RawClient(env.daemon.unix_socket, vol)
        if again.go_reply == 1:
            break
        again.close()
        time.sleep(0.02)
    check(again.go_reply == 1, "a slot frees when a connection closes")
    for c in clients + [again]:
        c.close()


def test_hostile_clients(env):
    vol = env.volume(1)
    port = env.daemon.nbd
    good = RawClient(env.daemon.unix_socket, vol)
    # Bad request magic: that connection ends.
    bad = RawClient(env.daemon.unix_socket, vol)
    bad.s.sendall(b"\xde\xad\xbe\xef" + bytes(24))
    try:
        closed = bad.s.recv(64) == b""  # No reply: the stream cannot be trusted, it ends.
    except ConnectionResetError:
        closed = True
    check(closed, "bad magic: connection closed")
    # A write whose payload never comes, then a disconnect mid-request.
    mid = RawClient(env.daemon.unix_socket, vol)
    mid.s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, CMD_WRITE, 1, 0, 65536) + b"x" * 100)
    mid.close()
    # A huge option length, garbage options, and a handshake cut short.
    for junk in (struct.pack(">QII", 0x49484156454F5054, 7, 0xFFFFFFFF) + b"abc",
                 os.urandom(4096), struct.pack(">I", 3) + b"IHAVEOPT"):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.recv(18)
        s.sendall(struct.pack(">I", 3) + junk if not junk.startswith(struct.pack(">I", 3)) else junk)
        s.close()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.recv(18)
    s.sendall(struct.pack(">I", 0xFFFFFFFF))  # Unknown client flags.
    check(s.recv(16) == b"", "unknown client flags: closed")
    s.close()
    err, _ = good.request(CMD_READ, 0, 4096)
    check(err == 0, "the well-behaved client goes on")
    check(sh("nbdinfo", "--size", env.daemon.uri(vol)).returncode == 0, "new clients are served")
    good.close()


def test_handshake_timeout(env):
    """stratad runs here with --nbd-handshake-timeout 2: a silent client and one that trickles
    its options a byte at a time are cut off soon after 2 s; a client that has chosen its export
    may idle longer and go on."""
    port, vol = env.daemon.nbd, env.volume(1)
    idle = RawClient(env.daemon.unix_socket, vol)
    silent = socket.create_connection(("127.0.0.1", port), timeout=20)
    start = time.monotonic()
    check(len(silent.recv(18)) == 18, "the greeting comes at once")
    try:
        closed = silent.recv(16) == b""
    except (ConnectionResetError, socket.timeout):
        closed = False
    took = time.monotonic() - start
    check(closed and 1.5 <= took <= 6, f"a silent client is disconnected after {took:.1f} s")
    silent.close()
    trickle = socket.create_connection(("127.0.0.1", port), timeout=20)
    start = time.monotonic()
    trickle.recv(18)
    data = struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 1, 64) + b"x" * 64
    cut = False
    for i in range(len(data)):
        try:
            trickle.sendall(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            cut = True
            break
        time.sleep(0.25)
        if time.monotonic() - start > 8:
            break
    if not cut:
        try:
            trickle.settimeout(1)
            cut = trickle.recv(16) == b""
        except (ConnectionResetError, BrokenPipeError):
            cut = True
        except socket.timeout:
            cut = False
    took = time.monotonic() - start
    check(cut and took <= 6, f"a client trickling its options is disconnected after {took:.1f} s")
    trickle.close()
    time.sleep(max(0.0, 3 - took))  # The idle client has now been connected past the timeout.
    err, data = idle.request(CMD_READ, 0, 4096)
    check(err == 0 and len(data) == 4096, "a client in transmission may idle past the timeout")
    idle.close()


def test_multi_conn_flush(env):
    vol = env.volume(1)
    a, b = RawClient(env.daemon.unix_socket, vol), RawClient(env.daemon.unix_socket, vol)
    data = os.urandom(65536)
    check(a.request(CMD_WRITE, 3 * MiB, 65536, payload=data)[0] == 0, "write on connection A")
    check(b.request(CMD_FLUSH, 0, 0)[0] == 0, "FLUSH on connection B")
    env.restart(kill=True)
    c = RawClient(env.daemon.unix_socket, vol)
    check(c.request(CMD_READ, 3 * MiB, 65536)[1] == data,
          "after SIGKILL, A's write survives B's FLUSH (multi-conn)")
    c.close()


def test_killed_workload(env):
    """libnbd writes and flushes; stratad is killed mid-run; every write completed before the
    last completed FLUSH reads back, and other blocks hold a value written to them."""
    vol = env.volume(1)
    state = os.path.join(env.work, "workload.json")
    proc = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "nbd_workload.py"), "write",
                             env.daemon.uri(vol), state, str(random.getrandbits(32))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    env.restart(kill=True)
    out, err = proc.communicate(timeout=60)
    print(out.strip().splitlines()[-1] if out.strip() else err.strip()[-300:], flush=True)
    out = sh("/usr/bin/python3", os.path.join(HERE, "nbd_workload.py"), "verify", env.daemon.uri(vol), state)
    check(out.returncode == 0, f"killed mid-workload: flushed writes intact: {out.stdout[-500:]} {out.stderr[-500:]}")


def test_fio_multi_conn(env):
    vol = env.volume(1)
    uri = env.daemon.uri(vol)
    common = ["fio", "--name=mc", "--ioengine=nbd", f"--uri={uri}", "--rw=randwrite", "--bs=4k",
              "--size=32M", "--numjobs=2", "--offset_increment=32M", "--iodepth=8",
              "--verify=crc32c", "--verify_state_save=0", "--randseed=1234", "--group_reporting"]
    out = sh(*common, "--do_verify=0", "--end_fsync=1", cwd=env.work, timeout=300)
    check(out.returncode == 0, f"fio writes over two connections: {out.stderr[-500:]}")
    out = sh(*common, "--verify_only=1", cwd=env.work, timeout=300)
    check(out.returncode == 0 and "verify" not in out.stderr.lower(),
          f"fio verify=crc32c over two connections: {out.stdout[-300:]} {out.stderr[-500:]}")


def make_x509(d):
    def ssl(*args):
        r = sh("openssl", *args, cwd=d)
        assert r.returncode == 0, r.stderr

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca-cert.pem",
        "-days", "2", "-subj", "/CN=strata test CA")
    for who, subj, ext in (("server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                           ("client", "/CN=admin", "extendedKeyUsage=clientAuth")):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{who}-key.pem", "-out", f"{who}.csr",
            "-subj", subj)
        with open(os.path.join(d, f"{who}.ext"), "w") as f:
            f.write(ext + "\n")
        ssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca-cert.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-out", f"{who}-cert.pem", "-days", "2", "-extfile", f"{who}.ext")


def test_tls(work):
    data_dir = os.path.join(work, "tls-data")
    psk_dir = os.path.join(work, "psk")
    x509_dir = os.path.join(work, "x509")
    os.makedirs(psk_dir)
    os.makedirs(x509_dir)
    make_x509(x509_dir)
    admin_key, dave_key = os.urandom(32).hex(), os.urandom(32).hex()
    psk = os.path.join(psk_dir, "keys.psk")
    with open(psk, "w") as f:
        f.write(f"admin:{admin_key}\ndave:{dave_key}\n")
    wrong = os.path.join(work, "wrong.psk")
    with open(wrong, "w") as f:
        f.write(f"admin:{os.urandom(32).hex()}\n")
    daemon = Daemon(BIN, data_dir, extra=["--tls", "require", "--tls-psk-file", psk,
                                          "--tls-x509-dir", x509_dir])
    check(daemon.start(), "stratad starts with --tls require")
    try:
        ec2 = daemon.client()
        vol = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
        ec2.attach_volume(VolumeId=vol, InstanceId=GROUP, Device="/dev/sdf")
        cli = [f"{BIN}/strata", "--data-dir", data_dir, "--endpoint", f"http://127.0.0.1:{daemon.api}"]
        out = sh(*cli, "account", "create", "dave")
        dave = json.loads(out.stdout) if out.returncode == 0 else {}
        dave_ec2 = daemon.client(keys=(dave.get("AccessKeyId", "x"), dave.get("SecretAccessKey", "x")))
        dvol = dave_ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
        dave_ec2.attach_volume(VolumeId=dvol, InstanceId="i-0123456789abcdef0", Device="/dev/sdf")
        base = f"nbds://admin@127.0.0.1:{daemon.nbd}"
        dave_base = f"nbds://dave@127.0.0.1:{daemon.nbd}"
        out = sh("nbdinfo", "--size", f"{base}/{vol}?tls-psk-file={psk}")
        check(out.stdout.strip() == str(GiB), f"nbdinfo over TLS-PSK: {out.stdout} {out.stderr}")
        # Each refusal for its own reason (not merely a failed command).
        out = sh("nbdinfo", "--size", f"{base}/{vol}?tls-psk-file={wrong}")
        check(out.returncode != 0 and "gnutls_handshake" in out.stderr,
              f"a wrong PSK fails the TLS handshake: {out.stderr.strip()}")
        out = sh("nbdinfo", "--size", f"nbd://127.0.0.1:{daemon.nbd}/{vol}")
        check(out.returncode != 0 and "requires TLS" in out.stderr,
              f"--tls require refuses a plaintext client: {out.stderr.strip()}")
        out = sh("nbdinfo", "--size", f"{dave_base}/{vol}?tls-psk-file={psk}")
        check(out.returncode != 0 and f"no export named '{vol}'" in out.stderr,
              f"dave's identity cannot open admin's volume (it does not exist for him): "
              f"{out.stderr.strip()}")
        out = sh("nbdinfo", "--size", f"{dave_base}/{dvol}?tls-psk-file={psk}")
        check(out.stdout.strip() == str(GiB), f"while his own opens: {out.stderr.strip()}")
        out = sh("nbdinfo", "--list", "--json", f"{dave_base}/?tls-psk-file={psk}")
        names = [e["export-name"] for e in json.loads(out.stdout)["exports"]] if out.returncode == 0 else []
        check(names == [dvol], f"dave lists only his exports: {names} {out.stderr}")
        qemu_tls = ["--object", f"tls-creds-psk,id=tls0,endpoint=client,dir={psk_dir},username=admin",
                    "--image-opts", f"driver=raw,file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,"
                    f"file.server.port={daemon.nbd},file.export={vol},file.tls-creds=tls0"]
        out = sh("qemu-io", "-c", "write -P 0x3c 512 64k", "-c", "read -P 0x3c 512 64k", *qemu_tls)
        check(out.returncode == 0 and "read 65536/65536" in out.stdout,
              f"qemu-io over tls-creds-psk (unaligned): {out.stdout} {out.stderr}")
        client_dir = os.path.join(work, "x509-client")
        os.makedirs(client_dir)
        for src, dst in (("ca-cert.pem", "ca-cert.pem"), ("client-cert.pem", "client-cert.pem"),
                         ("client-key.pem", "client-key.pem")):
            with open(os.path.join(x509_dir, src), "rb") as f, open(os.path.join(client_dir, dst), "wb") as g:
                g.write(f.read())
        out = sh("nbdinfo", "--size", f"{base}/{vol}?tls-certificates={client_dir}")
        check(out.stdout.strip() == str(GiB), f"nbdinfo over TLS with X.509 (CN=admin): {out.stdout} {out.stderr}")
    finally:
        check(daemon.stop() == 0, "TLS stratad stops cleanly")


def test_account_auth(env):
    """The default (--nbd-auth account, TLS offered): a plaintext TCP client opens and lists
    nothing; an account over TLS-PSK (identity its access key id, key from `strata nbd-key`)
    opens its own exports only; the operator on the unix socket opens every export."""
    daemon = env.daemon
    vol = env.volume(1)
    tcp = f"127.0.0.1:{daemon.nbd}"
    out = sh("nbdinfo", "--size", f"nbd://{tcp}/{vol}")
    check(out.returncode != 0 and "requires TLS" in out.stderr,
          f"a plaintext TCP client cannot open a volume: {out.stderr.strip()}")
    c = RawClient(daemon.nbd, vol)
    check(c.go_reply == 0x80000005, f"raw NBD_OPT_GO over TCP: NBD_REP_ERR_TLS_REQD ({c.go_reply:#x})")
    c.close()
    out = sh("nbdinfo", "--list", "--json", f"nbd://{tcp}")
    check(vol not in out.stdout, f"nor list it: {out.stdout[-300:]} {out.stderr[-300:]}")
    snap = env.snapshot(vol)
    out = sh("nbdinfo", "--size", f"nbd://{tcp}/{snap}")
    check(out.returncode != 0 and "requires TLS" in out.stderr,
          f"nor open a snapshot by id: {out.stderr.strip()}")

    cli = [f"{BIN}/strata", "--data-dir", daemon.data_dir, "--endpoint", f"http://127.0.0.1:{daemon.api}"]
    admin_psk = os.path.join(env.work, "admin.psk")
    out = sh(*cli, "nbd-key", "--psk-file", admin_psk)
    check(out.returncode == 0 and os.stat(admin_psk).st_mode & 0o777 == 0o600,
          f"strata nbd-key --psk-file writes the key 0600: {out.stderr}")
    admin_key_id = daemon.admin_keys()[0]
    line = open(admin_psk).read().strip() if out.returncode == 0 else ""
    check(re.fullmatch(admin_key_id + r":[0-9a-f]{64}", line) is not None, f"psktool's format: {line}")
    admin = f"nbds://{admin_key_id}@{tcp}"
    out = sh("nbdinfo", "--size", f"{admin}/{vol}?tls-psk-file={admin_psk}")
    check(out.stdout.strip() == str(GiB), f"admin over TLS-PSK with the derived key: {out.stderr}")
    out = sh("nbdinfo", "--size", f"{admin}/{snap}?tls-psk-file={admin_psk}")
    check(out.stdout.strip() == str(GiB), f"and its snapshot: {out.stderr}")

    out = sh(*cli, "account", "create", "erin")
    erin = json.loads(out.stdout) if out.returncode == 0 else {}
    check(out.returncode == 0, f"a second account: {out.stderr}")
    erin_env = dict(os.environ, AWS_ACCESS_KEY_ID=erin.get("AccessKeyId", "x"),
                    AWS_SECRET_ACCESS_KEY=erin.get("SecretAccessKey", "x"))
    erin_psk = os.path.join(env.work, "erin.psk")
    out = sh(*cli, "nbd-key", "--psk-file", erin_psk, env=erin_env)
    check(out.returncode == 0, f"erin's key from her credentials: {out.stderr}")
    erin_base = f"nbds://{erin.get('AccessKeyId', 'x')}@{tcp}"
    out = sh("nbdinfo", "--size", f"{erin_base}/{vol}?tls-psk-file={erin_psk}")
    check(out.returncode != 0 and f"no export named '{vol}'" in out.stderr,
          f"erin cannot open admin's volume: {out.stderr.strip()}")
    erin_ec2 = daemon.client(keys=(erin.get("AccessKeyId", "x"), erin.get("SecretAccessKey", "x")))
    evol = erin_ec2.create_volume(Size=2, AvailabilityZone="local-1a")["VolumeId"]
    erin_ec2.attach_volume(VolumeId=evol, InstanceId="i-0123456789abcdef0", Device="/dev/sdf")
    out = sh("nbdinfo", "--size", f"{erin_base}/{evol}?tls-psk-file={erin_psk}")
    check(out.stdout.strip() == str(2 * GiB), f"while her own opens: {out.stderr.strip()}")
    # Her identity with admin's key: the handshake fails.
    forged = os.path.join(env.work, "forged.psk")
    with open(forged, "w") as f:
        f.write(erin.get("AccessKeyId", "x") + ":" + line.split(":")[-1] + "\n")
    out = sh("nbdinfo", "--size", f"{erin_base}/{evol}?tls-psk-file={forged}")
    check(out.returncode != 0 and "gnutls_handshake" in out.stderr,
          f"another account's key fails the TLS handshake: {out.stderr.strip()}")
    # The operator (this test runs as stratad's user) on the unix socket: every export.
    out = sh("nbdinfo", "--size", daemon.uri(evol))
    check(out.stdout.strip() == str(2 * GiB), f"the operator on the unix socket: {out.stderr}")
    erin_ec2.detach_volume(VolumeId=evol)


def test_account_auth_without_tls(work):
    """Per-account auth with TLS turned off (--tls off): no client can prove an account, so a
    plaintext TCP client gets NBD_REP_ERR_POLICY (not TLS_REQD, which would send it to a TLS the
    server does not offer) and opens nothing; the operator on the unix socket still opens all."""
    daemon = Daemon(BIN, os.path.join(work, "notls-data"), extra=["--tls", "off"])
    check(daemon.start(), "stratad starts with --tls off")
    try:
        ec2 = daemon.client()
        vol = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
        ec2.attach_volume(VolumeId=vol, InstanceId=GROUP, Device="/dev/sdf")
        c = RawClient(daemon.nbd, vol)
        check(c.go_reply == 0x80000002,
              f"raw NBD_OPT_GO over TCP without TLS: NBD_REP_ERR_POLICY ({c.go_reply:#x})")
        c.close()
        out = sh("nbdinfo", "--size", f"nbd://127.0.0.1:{daemon.nbd}/{vol}")
        check(out.returncode != 0 and out.stdout.strip() == "",
              f"nbdinfo over TCP opens nothing: {out.stdout} {out.stderr.strip()}")
        out = sh("nbdinfo", "--list", "--json", f"nbd://127.0.0.1:{daemon.nbd}")
        check(vol not in out.stdout, f"nor lists it: {out.stdout[-300:]} {out.stderr[-300:]}")
        out = sh("nbdinfo", "--size", daemon.uri(vol))
        check(out.stdout.strip() == str(GiB), f"the operator on the unix socket: {out.stderr}")
    finally:
        check(daemon.stop() == 0, "stratad with --tls off stops cleanly")


def test_pipelined_burst(env):
    """Bursts of pipelined reads and writes (the session's io_uring loop queues a burst's disk
    I/O together): every reply matches its cookie and data, with a FLUSH inside a burst."""
    vol = env.volume(1)
    c = RawClient(env.daemon.unix_socket, vol, structured=True)
    rings = [os.readlink(f"/proc/{env.daemon.proc.pid}/fd/{fd}")
             for fd in os.listdir(f"/proc/{env.daemon.proc.pid}/fd")]
    check(any("io_uring" in r for r in rings), "the connection's session owns an io_uring ring")
    rng = random.Random(5)
    expected = bytearray(8 * MiB)

    def burst(requests):
        """Sends every (cmd, offset, length, payload) at once, then reads the replies (in any
        order); returns {cookie: (error, data)}."""
        wire = b""
        for cookie, (cmd, offset, length, payload) in enumerate(requests):
            wire += struct.pack(">IHHQQI", 0x25609513, 0, cmd, cookie, offset, length) + payload
        c.s.sendall(wire)
        out = {}
        while len(out) < len(requests):
            magic = struct.unpack(">I", c.recv(4))[0]
            if magic == 0x67446698:  # Simple: every command but READ.
                error, cookie = struct.unpack(">IQ", c.recv(12))
                out[cookie] = (error, b"")
                continue
            flags, rtype, cookie, plen = struct.unpack(">HHQI", c.recv(16))
            payload = c.recv(plen)
            error, data = out.get(cookie, (0, b""))
            if rtype == 1:
                data += payload[8:]
            elif rtype & 0x8000:
                error = struct.unpack(">I", payload[:4])[0]
            if flags & 1:
                out[cookie] = (error, data)
        return out

    # First writes (chunks not held yet), then overwrites of held chunks (queued in the ring).
    for size in (64 * 1024, 4096):
        requests = []
        for i in range(32):
            offset = (i * 37 % 128) * 64 * 1024 + (rng.randrange(16) * 4096 if size == 4096 else 0)
            payload = rng.randbytes(size)
            expected[offset:offset + size] = payload
            requests.append((CMD_WRITE, offset, size, payload))
            if i == 16:
                requests.append((CMD_FLUSH, 0, 0, b""))
        replies = burst(requests)
        check(all(e == 0 for e, _ in replies.values()), f"a burst of 32 {size}-byte writes and a FLUSH")
    requests = [(CMD_READ, o, n, b"") for o, n in
                [(rng.randrange(2048 - 16) * 4096, rng.choice((4096, 8192, 65536))) for _ in range(64)]]
    requests.append((CMD_READ, 9 * GiB, 4096, b""))  # Past the end: EINVAL, the rest unharmed.
    replies = burst(requests)
    good = all(replies[i] == (0, bytes(expected[o:o + n])) for i, (_, o, n, _) in enumerate(requests[:-1]))
    check(good, "64 pipelined reads return what the bursts wrote")
    check(replies[64][0] == EINVAL, "a bad read within a burst gets EINVAL")
    c.s.close()


def test_client_that_never_reads(env):
    """A client that pipelines large reads and writes and never reads a reply stalls only
    its own connection: a snapshot of the volume (which waits for writes queued in a ring) and
    another connection go on."""
    import threading
    vol = env.volume(1)
    check(sh("nbdcopy", "--", "[", "nbdkit", "pattern", "size=64M", "]",
             env.daemon.uri(vol)).returncode == 0, "64 MiB written (chunks held)")
    stuck = RawClient(env.daemon.unix_socket, vol)
    wire = b""
    for i in range(24):
        wire += struct.pack(">IHHQQI", 0x25609513, 0, CMD_READ, 2 * i, i * MiB, MiB)
        # Large enough for the ring to hand the write to the kernel (not a plain pwrite).
        wire += struct.pack(">IHHQQI", 0x25609513, 0, CMD_WRITE, 2 * i + 1, i * MiB, 128 * 1024)
        wire += bytes([i]) * (128 * 1024)
    # Sent from a thread: on a unix socket the buffers are small, so the send itself stalls once
    # the server, its replies unread, stops reading requests.
    stuck.s.settimeout(None)
    def send():
        try:
            stuck.s.sendall(wire)
        except OSError:
            pass  # Closed below while still stalled.
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(1)
    result = {}
    t = threading.Thread(target=lambda: result.update(snap=env.ec2.create_snapshot(VolumeId=vol)))
    t.start()
    t.join(30)
    check("snap" in result, "CreateSnapshot returns while a client leaves 24 MiB of replies unread")
    other = RawClient(env.daemon.unix_socket, vol)
    check(other.request(CMD_READ, 4096, 512)[0] == 0, "another connection still reads")
    other.s.close()
    stuck.s.shutdown(socket.SHUT_RDWR)
    stuck.s.close()
    sender.join(30)
    t.join(30)


def main():
    only = sys.argv[2:]  # Optional test names, to run a few.
    work = scratch_dir("strata-nbdp-")
    if only == ["test_tls"] or only == ["test_account_auth_without_tls"]:
        globals()[only[0]](work)
        return check.summary()
    daemon = Daemon(BIN, os.path.join(work, "data"), ["--nbd-handshake-timeout", "2"])
    check(daemon.start(), "stratad starts")
    env = Env(work, daemon)
    try:
        for test in (test_extended_headers, test_resize, test_zeroes, test_snapshot_export,
                     test_connection_limit, test_hostile_clients, test_handshake_timeout,
                     test_account_auth,
                     test_changed_context,
                     test_multi_conn_flush, test_killed_workload, test_fio_multi_conn,
                     test_pipelined_burst, test_client_that_never_reads):
            if not only or test.__name__ in only:
                print(f"-- {test.__name__}", flush=True)
                test(env)
        out = sh("/usr/bin/python3", os.path.join(HERE, "nbd_libnbd_checks.py"),
                 env.daemon.uri(env.volume(1)), env.daemon.uri(env.snapshot(env.volume(1))))
        check(out.returncode == 0, f"libnbd checks: {out.stdout[-800:]} {out.stderr[-800:]}")
    finally:
        check(env.daemon.stop() == 0, "stratad stops cleanly")
    print("-- test_tls", flush=True)
    test_tls(work)
    print("-- test_account_auth_without_tls", flush=True)
    test_account_auth_without_tls(work)
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
