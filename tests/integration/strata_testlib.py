"""Shared helpers of the integration tests: checks, a stratad process, boto3 clients, and a raw
NBD client that can send what real clients never do (extended headers, RESIZE, bad input)."""
import atexit
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import boto3
import botocore

MiB = 1 << 20
GiB = 1 << 30


class Checks:
    any_failed = False  # over every Checks of the process: keeps the scratch directories

    def __init__(self, verbose=False):
        self.passed = 0
        self.failed = 0
        self.verbose = verbose  # print the checks that pass as well

    def __call__(self, cond, what, detail=None):
        """Counts a check; on failure prints `what`, and `detail` (what was seen) when given."""
        if cond:
            self.passed += 1
            if self.verbose:
                print("ok:  ", what, flush=True)
        else:
            self.failed += 1
            Checks.any_failed = True
            print("FAIL:", what, flush=True)
            if detail is not None:
                print("      seen:", str(detail)[:2000], flush=True)

    def summary(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 else 1


_scratch_dirs = []


def scratch_dir(prefix):
    """A fresh directory for this test run. It is removed when the process exits, unless a check
    failed, an exception escaped, or STRATA_KEEP_WORK is set: then it stays, with the daemon logs
    a failure needs, and its path is printed. Stop the daemons that use it before exiting."""
    path = tempfile.mkdtemp(prefix=prefix)
    _scratch_dirs.append(path)
    return path


def _escaped(exc_type, exc, tb, previous=sys.excepthook):
    Checks.any_failed = True
    previous(exc_type, exc, tb)


sys.excepthook = _escaped


@atexit.register
def _remove_scratch_dirs():
    for path in _scratch_dirs:
        if Checks.any_failed or os.environ.get("STRATA_KEEP_WORK"):
            print(f"work directory kept: {path}", flush=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def error_code(fn, *args, **kwargs):
    """The AWS error code `fn` fails with, or None when it succeeds."""
    try:
        fn(*args, **kwargs)
        return None
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]


def timed(fn):
    """(seconds fn() took, what it returned)."""
    start = time.monotonic()
    value = fn()
    return time.monotonic() - start, value


def random_snapshot(daemon, ec2, path, size_mib, instance):
    """A completed snapshot of a new volume holding `size_mib` MiB of random data, also written
    to `path`; the volume stays attached to `instance`. Returns (volume id, snapshot id)."""
    vol = ec2.create_volume(Size=size_mib // 1024 + 1, AvailabilityZone="local-1a")["VolumeId"]
    ec2.attach_volume(VolumeId=vol, InstanceId=instance, Device="/dev/sdf")
    with open(path, "wb") as f:
        f.write(os.urandom(size_mib << 20))
    subprocess.run(["nbdcopy", path, daemon.uri(vol)], check=True)
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    wait_until(lambda: ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"]
               == "completed", timeout=600)
    return vol, snap


def wait_until(fn, timeout=30, interval=0.1):
    """fn()'s first truthy value within `timeout` seconds, else its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    return fn()


def sh(*args, timeout=120, **kwargs):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


class Daemon:
    """stratad on free loopback ports with its store in data_dir; restartable. Volumes run at
    full speed (--qos off) unless `extra` says --qos: tests and benchmarks of other things should
    not wait on a gp3's 3,000 IOPS."""

    def __init__(self, bin_dir, data_dir, extra=(), unix_socket=None):
        extra = list(extra)
        if "--qos" not in extra:
            extra += ["--qos", "off"]
        self.bin_dir, self.data_dir, self.extra = bin_dir, data_dir, extra
        # Clients connect as the operator (stratad's own user, on the unix socket) unless a test
        # means to authenticate as an account over TCP (self.nbd, the port) with TLS.
        self.unix_socket = unix_socket or os.path.join(data_dir, "nbd.sock")  # stratad's default
        self.proc = None
        self.api = self.nbd = None
        self.log_path = os.path.join(os.path.dirname(data_dir), os.path.basename(data_dir) + ".log")

    def start(self, api_port=0, nbd_port=0):
        listen = f"127.0.0.1:{nbd_port},unix:{self.unix_socket}"
        self.log = open(self.log_path, "a+")
        start = self.log.tell()
        env = dict(os.environ)
        env.pop("STRATA_QUIET", None)
        self.proc = subprocess.Popen(
            [f"{self.bin_dir}/stratad", "--data-dir", self.data_dir, "--api-listen",
             f"127.0.0.1:{api_port}", "--nbd-listen", listen] + self.extra,
            stderr=self.log, env=env)
        for _ in range(400):
            self.log.seek(start)
            text = self.log.read()
            a = re.search(r"API on http://127\.0\.0\.1:(\d+)", text)
            n = re.search(r"NBD on 127\.0\.0\.1:(\d+)", text)
            if a and n:
                self.api, self.nbd = int(a.group(1)), int(n.group(1))
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=60)

    def log_text(self):
        with open(self.log_path) as f:
            return f.read()

    def admin_keys(self):
        creds = open(os.path.join(self.data_dir, "credentials")).read()
        return (re.search(r"aws_access_key_id = (\S+)", creds).group(1),
                re.search(r"aws_secret_access_key = (\S+)", creds).group(1))

    def client(self, service="ec2", keys=None):
        key, secret = keys or self.admin_keys()
        return boto3.client(service, endpoint_url=f"http://127.0.0.1:{self.api}",
                            region_name="local-1", aws_access_key_id=key,
                            aws_secret_access_key=secret)

    def aws(self, *args, region="local-1"):
        """The aws CLI against this daemon, signed with the admin's keys; JSON output."""
        key, secret = self.admin_keys()
        env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret,
                   AWS_DEFAULT_REGION=region, AWS_EC2_METADATA_DISABLED="true")
        env.pop("AWS_PROFILE", None)
        return subprocess.run(["aws", "--endpoint-url", f"http://127.0.0.1:{self.api}",
                               "--output", "json", *args],
                              capture_output=True, text=True, env=env, timeout=120)

    def uri(self, export=""):
        """The export on the unix socket, where the test (stratad's user) is the operator."""
        return f"nbd+unix:///{export}?socket={self.unix_socket}"


OPTION_MAGIC = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513
EXTENDED_REQUEST_MAGIC = 0x21e41c71
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668e33ef
EXTENDED_REPLY_MAGIC = 0x6e8a278c
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_WRITE_ZEROES = range(7)
CMD_BLOCK_STATUS, CMD_RESIZE = 7, 8
FLAG_FUA, FLAG_NO_HOLE, FLAG_REQ_ONE, FLAG_FAST_ZERO = 1, 2, 8, 16
OPT_GO, OPT_STRUCTURED_REPLY, OPT_SET_META_CONTEXT, OPT_EXTENDED_HEADERS = 7, 8, 10, 11
REP_ACK = 1


class RawClient:
    """A minimal fixed-newstyle NBD client. Replies are parsed as simple, structured or
    extended according to what was negotiated."""

    def __init__(self, address, export=None, extended=False, structured=False, contexts=()):
        """`address`: a TCP port on 127.0.0.1, or a unix socket's path."""
        if isinstance(address, str):
            self.s = socket.socket(socket.AF_UNIX)
            self.s.settimeout(20)
            self.s.connect(address)
        else:
            port = address
            self.s = socket.create_connection(("127.0.0.1", port), timeout=20)
        hello = self.recv(18)
        assert hello[:16] == b"NBDMAGICIHAVEOPT"
        self.s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
        self.extended = self.structured = False
        self.export_size = self.transmission_flags = None
        self.contexts = {}
        if extended:
            self.extended = self.structured = self.simple_option(OPT_EXTENDED_HEADERS) == REP_ACK
        elif structured:
            self.structured = self.simple_option(OPT_STRUCTURED_REPLY) == REP_ACK
        if contexts:
            name = export.encode()
            data = struct.pack(">I", len(name)) + name + struct.pack(">I", len(contexts))
            for c in contexts:
                data += struct.pack(">I", len(c)) + c.encode()
            self.option(OPT_SET_META_CONTEXT, data)
            for rtype, reply in self.option_replies():
                if rtype == 4:
                    self.contexts[struct.unpack(">I", reply[:4])[0]] = reply[4:].decode()
        if export is not None:
            self.go_reply = self.go(export)

    def recv(self, n):
        out = b""
        while len(out) < n:
            chunk = self.s.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    def option(self, opt, data=b""):
        self.s.sendall(struct.pack(">QII", OPTION_MAGIC, opt, len(data)) + data)

    def option_replies(self):
        """Yields (type, data) up to and including the final reply."""
        while True:
            magic, opt, rtype, length = struct.unpack(">QIII", self.recv(20))
            data = self.recv(length)
            yield rtype, data
            if rtype == REP_ACK or rtype & 0x80000000:
                return

    def simple_option(self, opt, data=b""):
        self.option(opt, data)
        return [r for r in self.option_replies()][-1][0]

    def go(self, export):
        name = export.encode()
        self.option(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        last = None
        for rtype, data in self.option_replies():
            if rtype == 3 and struct.unpack(">H", data[:2])[0] == 0:
                self.export_size, self.transmission_flags = struct.unpack(">QH", data[2:12])
            last = rtype
        return last

    def send_request(self, cmd, offset, length, flags=0, payload=b"", cookie=7):
        if self.extended:
            header = struct.pack(">IHHQQQ", EXTENDED_REQUEST_MAGIC, flags, cmd, cookie, offset, length)
        else:
            header = struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length)
        self.s.sendall(header + payload)

    def read_reply(self, cmd, length):
        """Returns (error, data, chunks): data of a READ, chunks as (type, payload)."""
        chunks, data, error = [], b"", 0
        while True:
            magic = struct.unpack(">I", self.recv(4))[0]
            if magic == SIMPLE_REPLY_MAGIC:
                error, cookie = struct.unpack(">IQ", self.recv(12))
                if cmd == CMD_READ and error == 0:
                    data = self.recv(length)
                return error, data, chunks
            if magic == EXTENDED_REPLY_MAGIC:
                flags, rtype, cookie, offset, plen = struct.unpack(">HHQQQ", self.recv(28))
            elif magic == STRUCTURED_REPLY_MAGIC:
                flags, rtype, cookie, plen = struct.unpack(">HHQI", self.recv(16))
            else:
                raise ValueError(f"bad reply magic {magic:#x}")
            payload = self.recv(plen)
            chunks.append((rtype, payload))
            if rtype == 1:
                data += payload[8:]
            elif rtype & 0x8000:
                error = struct.unpack(">I", payload[:4])[0]
            if flags & 1:
                return error, data, chunks

    def request(self, cmd, offset, length, flags=0, payload=b""):
        self.send_request(cmd, offset, length, flags, payload)
        error, data, _ = self.read_reply(cmd, length)
        return error, data

    def block_status(self, offset, length, flags=0):
        """Returns {context id: [(length, flags)]}, or the error number."""
        self.send_request(CMD_BLOCK_STATUS, offset, length, flags)
        error, _, chunks = self.read_reply(CMD_BLOCK_STATUS, length)
        if error:
            return error
        out = {}
        for rtype, payload in chunks:
            context = struct.unpack(">I", payload[:4])[0]
            if rtype == 6:  # BLOCK_STATUS_EXT: count, then 64-bit descriptors.
                count = struct.unpack(">I", payload[4:8])[0]
                out[context] = [struct.unpack(">QQ", payload[8 + 16 * i:24 + 16 * i]) for i in range(count)]
            elif rtype == 5:
                out[context] = [struct.unpack(">II", payload[4 + 8 * i:12 + 8 * i])
                                for i in range((len(payload) - 4) // 8)]
        return out

    def close(self):
        self.s.close()


def write_docs_section(name, text):
    """Puts `text` into docs/benchmarks.md between its `<!-- name:start -->` and
    `<!-- name:end -->` markers (the bench scripts' --write-docs); nothing changes without them."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "benchmarks.md")
    with open(path) as f:
        doc = f.read()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start in doc and end in doc:
        with open(path, "w") as f:
            f.write(doc[:doc.index(start) + len(start)] + "\n" + text + "\n" + doc[doc.index(end):])
