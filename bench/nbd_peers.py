#!/usr/bin/env python3
"""fio's nbd engine against stratad and its peers, in one run on one file system: nbdkit (file
and memory plugins), nbd-server, qemu-nbd on a raw file, on a qcow2 overlay with a backing file
and on a LUKS qcow2, and nbdkit's null plugin, which stores nothing: the ceiling of what the NBD
protocol, fio and the loopback reach on this machine (a column, never a peer of the targets).
Strata runs as it starts by default (connections poll before they sleep, for an adaptive window
of up to 50 us) and with --nbd-poll-us 0 (strata-sleep, strata-encrypted-sleep: they sleep at
once); the encrypted table and the targets are given for each. Each row runs --rounds times
per server; the table takes the median of throughput, latency and the server's CPU time per
request (utime + stime of the server and its child processes, from /proc, sampled twice inside
fio's measured time: the CPU rate in that steady window over fio's request rate), and gives the ratios
of Strata to each peer, each taken round by round (the servers of a round run the row within a
minute of each other) and then their median; the targets show the range over the rounds too.
The encrypted table compares the CPU encryption adds per request with the cipher's own cost
(bytes / the single-core AES-256-XTS rate that xts_bench measures in the same run), and a
summary checks issue 17's targets row by row. Writes the tables to stdout and,
with --write-docs, into docs/benchmarks.md between its NBD markers, with docs/nbd-peers.svg.

Usage: bench/nbd_peers.py BUILD_BIN_DIR [--runtime S] [--rounds N] [--only SERVERS] [--rows TEXT]
       [--save-runs FILE] [--write-docs]
       bench/nbd_peers.py BUILD_BIN_DIR --load-runs FILE [--write-docs]  (the tables of a saved run)
Scratch files go to STRATA_BENCH_DIR (default /var/tmp)."""
import argparse
import json
import os
import statistics
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from strata_testlib import GiB, MiB, Daemon, write_docs_section  # noqa: E402

SIZE = GiB
# A server that stores nothing (reads are zeros, writes are dropped): what the NBD protocol, fio
# and the loopback reach on this machine, the ceiling of every row. Not a peer for the targets.
CEILING = "nbdkit-null"
# Strata as it starts by default (polling before it sleeps), and sleeping at once.
DEFAULT = ("strata", "strata-encrypted")
SLEEPING = ("strata-sleep", "strata-encrypted-sleep")
# The write size that lays down every server's filled target (nbdcopy's for Strata).
FILL_REQUEST_BYTES = 256 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROWS = [
    # name, fio rw, block size, iodepth, connections, fresh target (first write)
    ("1 MiB seq read QD8", "read", "1M", 8, 1, False),
    ("1 MiB seq write QD8", "write", "1M", 8, 1, False),
    ("4 KiB rand read QD32", "randread", "4k", 32, 1, False),
    ("4 KiB rand write QD32", "randwrite", "4k", 32, 1, False),
    ("4 KiB rand read QD1", "randread", "4k", 1, 1, False),
    ("4 KiB rand write QD1", "randwrite", "4k", 1, 1, False),
    ("4 KiB first write QD32", "randwrite", "4k", 32, 1, True),
    ("1 MiB seq read QD8 x2 conn", "read", "1M", 8, 2, False),
    ("4 KiB rand read QD32 x2 conn", "randread", "4k", 32, 2, False),
    ("4 KiB rand write QD32 x2 conn", "randwrite", "4k", 32, 2, False),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not listen")


def tcp_timeouts():
    """The host's count of TCP retransmission timeouts (TCPTimeouts in /proc/net/netstat). A
    timeout on the loopback stalls a connection for 200 ms or more: a run with one is slow for
    a reason outside the server, and its line says so."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:])).get("TCPTimeouts", 0))
    return 0


def cpu_seconds(pid):
    """utime + stime of `pid` and of its children it has reaped (nbd-server forks per client)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def tree_cpu_seconds(pid):
    """cpu_seconds of `pid` and of its live descendants: a forking server's child serving a
    connection counts while it runs, not only once reaped."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                pass  # Exited meanwhile.
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += cpu_seconds(p)
        except OSError:
            continue
        todo += children.get(p, [])
    return total


class Peer:
    """A server process exporting SIZE bytes; `fresh()` gives a never-written target."""

    def __init__(self, name, work, image):
        self.name, self.work, self.image = name, work, image
        self.proc = None
        self.pid = None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


class ProcessPeer(Peer):
    def __init__(self, name, work, image, argv_for, prepare=None):
        super().__init__(name, work, image)
        self.argv_for, self.prepare = argv_for, prepare
        self.prepared = False

    def start(self, fresh):
        # The filled target is made once and reused by every row; a fresh one per use.
        target = os.path.join(self.work, f"{self.name}-{'fresh' if fresh else 'data'}")
        if fresh or not self.prepared:
            for f in os.listdir(self.work):
                if f.startswith(f"{self.name}-{'fresh' if fresh else 'data'}"):
                    os.remove(os.path.join(self.work, f))
            if self.prepare:
                self.prepare(target, fresh)
            self.prepared |= not fresh
        port = free_port()
        argv, export = self.argv_for(target, port)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, self.proc)
        self.pid = self.proc.pid
        return f"nbd://127.0.0.1:{port}/{export}"


class DaemonPeer(ProcessPeer):
    """A server that forks into the background and writes its pid to a file (nbd-server, which
    in the foreground serves a single client: fio's nbd engine connects more than once)."""

    def start(self, fresh):
        self.pidfile = os.path.join(self.work, f"{self.name}.pid")
        if os.path.exists(self.pidfile):
            os.remove(self.pidfile)
        target = os.path.join(self.work, f"{self.name}-{'fresh' if fresh else 'data'}")
        if fresh or not self.prepared:
            if self.prepare:
                self.prepare(target, fresh)
            self.prepared |= not fresh
        port = free_port()
        argv, export = self.argv_for(target, port)
        subprocess.run(argv + ["-p", self.pidfile], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
        wait_port(port, None)
        with open(self.pidfile) as f:
            self.pid = int(f.read().strip())
        return f"nbd://127.0.0.1:{port}/{export}"

    def stop(self):
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        end = time.time() + 10
        while time.time() < end:
            try:
                with open(f"/proc/{self.pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except FileNotFoundError:
                break
            time.sleep(0.05)
        self.pid = None


class StrataPeer(Peer):
    """stratad under `name`; `flags` are more stratad flags (--nbd-poll-us); `no_io_uring` runs
    it with STRATA_NO_IO_URING=1 (the ring's pread/pwrite stand-in), to measure what io_uring
    itself brings."""

    def __init__(self, name, work, image, bin_dir, encrypted=False, flags=(), no_io_uring=False):
        super().__init__(name, work, image)
        self.bin_dir = bin_dir
        self.encrypted = encrypted
        self.flags = list(flags)
        self.no_io_uring = no_io_uring
        self.daemon = None

    def start(self, fresh):
        if self.daemon is None:
            # Plaintext TCP like every peer: --nbd-auth none (the default needs TLS over TCP).
            self.daemon = Daemon(self.bin_dir, os.path.join(self.work, f"{self.name}-store"),
                                 ["--nbd-auth", "none"] + self.flags)
            if self.no_io_uring:
                os.environ["STRATA_NO_IO_URING"] = "1"
            try:
                started = self.daemon.start()
            finally:
                os.environ.pop("STRATA_NO_IO_URING", None)
            if not started:
                raise RuntimeError("stratad did not start")
            self.ec2 = self.daemon.client()
            self.data_vol = self.volume()
            subprocess.run(["nbdcopy", f"--request-size={FILL_REQUEST_BYTES}", self.image,
                            self.tcp_uri(self.data_vol)], check=True)
        self.pid = self.daemon.proc.pid
        return self.tcp_uri(self.volume() if fresh else self.data_vol)

    def tcp_uri(self, export):
        return f"nbd://127.0.0.1:{self.daemon.nbd}/{export}"

    def volume(self):
        vol = self.ec2.create_volume(Size=SIZE // GiB, AvailabilityZone="local-1a",
                                     Encrypted=self.encrypted)["VolumeId"]
        self.ec2.attach_volume(VolumeId=vol, InstanceId="i-0abcdef0123456789",
                               Device=f"/dev/sd{chr(ord('f') + len(self.ec2.describe_volumes()['Volumes']) - 1)}")
        return vol

    def stop(self):
        pass

    def close(self):
        if self.daemon is not None:
            self.daemon.stop()


def fill_copy(image, target):
    """Copies in FILL_REQUEST_BYTES writes, as nbdcopy fills Strata's volume: the page cache's
    folios (sized by the writes that made them on this kernel) are then alike for every server,
    and a 4 KiB overwrite costs the same in each (bench/page_cache_folios.py: one into a file
    laid down in 1 MiB writes costs about three times one into a file laid down in 4 KiB
    writes)."""
    with open(image, "rb") as src, open(target, "wb") as dst:
        while block := src.read(FILL_REQUEST_BYTES):
            dst.write(block)


def copy_or_sparse(image):
    def prepare(target, fresh):
        if fresh:
            with open(target, "wb") as f:
                f.truncate(SIZE)
        else:
            fill_copy(image, target)
    return prepare


def peers(work, image, bin_dir):
    nbdkit = ["nbdkit", "-f", "--exit-with-parent", "-i", "127.0.0.1"]
    sleep = ["--nbd-poll-us", "0"]
    out = [StrataPeer(DEFAULT[0], work, image, bin_dir),
           StrataPeer(DEFAULT[1], work, image, bin_dir, encrypted=True),
           StrataPeer(SLEEPING[0], work, image, bin_dir, flags=sleep),
           StrataPeer(SLEEPING[1], work, image, bin_dir, encrypted=True, flags=sleep),
           StrataPeer("strata-no-io-uring", work, image, bin_dir, no_io_uring=True)]
    out.append(ProcessPeer("nbdkit-file", work, image,
                           lambda t, p: (nbdkit + ["-p", str(p), "file", t], ""), copy_or_sparse(image)))

    def memory_argv(t, p):
        return nbdkit + ["-p", str(p), "memory", f"size={SIZE}"], ""
    out.append(ProcessPeer("nbdkit-memory", work, image, memory_argv))

    def null_argv(t, p):  # No storage at all: the protocol's ceiling on this machine.
        return nbdkit + ["-p", str(p), "null", f"size={SIZE}"], ""
    out.append(ProcessPeer(CEILING, work, image, null_argv))

    def nbd_server_argv(t, p):
        conf = t + ".conf"
        with open(conf, "w") as f:
            f.write(f"[generic]\n    listenaddr = 127.0.0.1\n    port = {p}\n    allowlist = false\n"
                    f"[export]\n    exportname = {t}\n")
        return ["nbd-server", "-C", conf], "export"
    out.append(DaemonPeer("nbd-server", work, image, nbd_server_argv, copy_or_sparse(image)))
    qemu = ["qemu-nbd", "-t", "-e", "0", "-b", "127.0.0.1"]
    out.append(ProcessPeer("qemu-nbd-raw", work, image,
                           lambda t, p: (qemu + ["-p", str(p), "-f", "raw", t], ""), copy_or_sparse(image)))

    def overlay(target, fresh):
        base = target + ".base"
        if fresh:
            with open(base, "wb") as f:
                f.truncate(SIZE)
        else:
            fill_copy(image, base)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", target],
                       check=True)
    out.append(ProcessPeer("qemu-nbd-qcow2-overlay", work, image,
                           lambda t, p: (qemu + ["-p", str(p), "-f", "qcow2", t], ""), overlay))
    secret = ["--object", "secret,id=s0,data=strata-bench"]

    def luks(target, fresh):
        options = ["-O" if not fresh else "-f", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=s0"]
        argv = (["qemu-img", "create", "-q", *secret, *options, target, str(SIZE)] if fresh else
                ["qemu-img", "convert", *secret, *options, "-f", "raw", image, target])
        # LUKS times its key derivation by the thread's CPU time; when that reads 0 (a clock tick
        # coarser than the first trial), qemu-img gives up with "Unable to get accurate CPU
        # usage". Another try measures again.
        for _ in range(5):
            if subprocess.run(argv).returncode == 0:
                return
        raise RuntimeError(f"{argv} failed 5 times")
    out.append(ProcessPeer("qemu-nbd-luks-qcow2", work, image,
                           lambda t, p: (qemu + ["-p", str(p), *secret, "--image-opts",
                                                 f"driver=qcow2,encrypt.key-secret=s0,file.filename={t}"], ""),
                           luks))
    return out


# A timed run starts measuring after this ramp; the servers' CPU is sampled this far inside
# the measured window at each end.
RAMP_S = 1
CPU_MARGIN_S = 0.25


def run_fio(uri, rw, bs, depth, conns, fresh, runtime, work, cpu_pids=()):
    """fio's results; with `cpu_pids`, also "cpu_us_of": each process tree's CPU per request.
    A timed run takes it in the steady window (its CPU rate between two samples inside the
    measured time, over fio's request rate), so the ramp and the connection setup are not
    charged to the requests fio counts; a first-write run (a fixed size, no ramp) takes it over
    the whole run."""
    out = os.path.join(work, "fio.json")
    args = ["fio", "--name=bench", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}", f"--bs={bs}",
            f"--iodepth={depth}", f"--numjobs={conns}", "--group_reporting", "--output-format=json",
            f"--output={out}", "--lat_percentiles=1"]
    per_job = SIZE // conns
    args += [f"--size={per_job if not fresh else 256 * MiB // conns}", f"--offset_increment={per_job}"]
    if not fresh:
        args += ["--time_based", f"--runtime={runtime}", f"--ramp_time={RAMP_S}"]
    start = time.monotonic()
    samples = []  # (time, [CPU seconds of each tree])

    def sample():
        samples.append((time.monotonic(), [tree_cpu_seconds(p) for p in cpu_pids]))
    if fresh and cpu_pids:
        sample()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    if not fresh and cpu_pids:
        for at in (RAMP_S + CPU_MARGIN_S, RAMP_S + runtime - CPU_MARGIN_S):
            time.sleep(max(0.0, start + at - time.monotonic()))
            sample()
    try:
        returncode = proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    if fresh and cpu_pids:
        time.sleep(0.2)  # A forked server's children exit and are reaped.
        sample()
    if returncode != 0:
        return None
    job = json.load(open(out))["jobs"][0]
    side = job["read"] if rw in ("read", "randread") else job["write"]
    cpu_us_of = []
    if len(samples) == 2 and side["total_ios"] > 0:
        (t0, c0), (t1, c1) = samples
        for before, after in zip(c0, c1):
            if fresh:
                cpu_us_of.append((after - before) * 1e6 / side["total_ios"])
            else:
                cpu_us_of.append((after - before) / (t1 - t0) / side["iops"] * 1e6)
    # fio's own CPU (usr + sys, % of one core): it shares the machine's 2 cores with the server.
    return {"bw": side["bw_bytes"], "iops": side["iops"], "ios": side["total_ios"],
            "cpu_us_of": cpu_us_of,
            "fio_cpu": job["usr_cpu"] + job["sys_cpu"],
            "p50": side["clat_ns"]["percentile"].get("50.000000", 0) / 1000 if "percentile" in side.get("clat_ns", {}) else
            side["lat_ns"]["percentile"].get("50.000000", 0) / 1000 if "percentile" in side.get("lat_ns", {}) else 0}


def fmt_bw(b):
    return f"{b / MiB:.0f} MiB/s" if b >= MiB else f"{b / 1024:.0f} KiB/s"


def median_result(runs):
    """The median of each measure over a row's rounds (None when every round failed)."""
    runs = [r for r in runs if r is not None and r.get("ios", 0) > 0]
    if not runs:
        return None
    return {k: statistics.median(r[k] for r in runs) for k in ("bw", "iops", "p50", "cpu_us")}


class Results:
    """Each (row, server)'s rounds. A server's measure is the median over its rounds. A ratio or
    difference of two servers is taken round by round first (in a round the servers run the
    row one after the other, within a minute, so it compares runs close in time), then its
    median over the rounds is given, with its range."""

    def __init__(self, runs):
        self.runs = {k: [r if r is not None and r.get("ios", 0) > 0 else None for r in v]
                     for k, v in runs.items()}

    def median(self, row, server):
        return median_result(self.runs.get((row, server), []))

    def paired(self, row, a, b, f):
        """f(a's result, b's result) in each round both completed: (median, least, most)."""
        values = [f(x, y) for x, y in zip(self.runs.get((row, a), []), self.runs.get((row, b), []))
                  if x is not None and y is not None]
        return (statistics.median(values), min(values), max(values)) if values else None

    def ratio(self, row, a, b):
        """a's throughput / b's, paired by round."""
        return self.paired(row, a, b, lambda x, y: x["bw"] / y["bw"])

    def cpu_difference(self, row, a, b):
        """a's CPU per request minus b's, paired by round."""
        return self.paired(row, a, b, lambda x, y: x["cpu_us"] - y["cpu_us"])


def xts_rates(bin_dir):
    """Single-core AES-256-XTS bytes/s of the backend stratad uses, per request size, measured
    by xts_bench now (same run)."""
    backend = "OpenSsl" if os.environ.get("STRATA_XTS") == "openssl" else "Gcrypt"
    r = subprocess.run([os.path.join(bin_dir, "xts_bench"), f"--benchmark_filter=Encrypt{backend}/",
                        "--benchmark_format=json", "--benchmark_min_time=0.5"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return {}
    return {int(b["name"].rsplit("/", 1)[1]): b["bytes_per_second"]
            for b in json.loads(r.stdout)["benchmarks"]}


def median_rates(samples):
    """The median per request size of several xts_rates() measurements. The rate moves by a
    quarter within an hour on these machines (8.1 against 10.6 GB/s), so a run measures it
    before each round and once at its end."""
    sizes = {size for sample in samples for size in sample}
    return {size: statistics.median(s[size] for s in samples if size in s) for size in sizes}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bin_dir")
    parser.add_argument("--runtime", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="runs per row and server (median)")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated peer names")
    parser.add_argument("--rows", default="", help="only rows whose name contains this")
    parser.add_argument("--save-runs", default="", help="write every round's results to this JSON file")
    parser.add_argument("--load-runs", default="", help="render the tables from a --save-runs file")
    a = parser.parse_args()
    if a.load_runs:
        saved = json.load(open(a.load_runs))
        runs = {tuple(k.split("|", 1)): v for k, v in saved["runs"].items()}
        a.rounds, a.runtime = saved["rounds"], saved["runtime"]
        report(a, runs, saved["names"], saved["rows"], {int(k): v for k, v in saved["rates"].items()},
               saved.get("rate_measurements", 1))
        return
    base = os.environ.get("STRATA_BENCH_DIR", "/var/tmp")
    work = tempfile.mkdtemp(prefix="strata-nbd-bench-", dir=base)
    image = os.path.join(work, "image.raw")
    with open(image, "wb") as f:
        for _ in range(SIZE // (64 * MiB)):
            f.write(os.urandom(64 * MiB))
    all_peers = peers(work, image, os.path.abspath(a.bin_dir))
    # strata-no-io-uring runs only when named.
    keep = set(a.only.split(",")) | set(DEFAULT) if a.only else None
    all_peers = [p for p in all_peers
                 if (keep is None and p.name != "strata-no-io-uring") or (keep and p.name in keep)]
    runs = {}  # (row, peer) -> [result dict with cpu_us, per round]
    rows = [r for r in ROWS if a.rows in r[0]]
    rate_samples = []
    try:
        for round_index in range(a.rounds):
            rate_samples.append(xts_rates(os.path.abspath(a.bin_dir)))
            for row in rows:
                name, rw, bs, depth, conns, fresh = row
                # Each round starts the row with another server, so none always runs right
                # after the same one.
                shift = round_index % len(all_peers)
                for peer in all_peers[shift:] + all_peers[:shift]:
                    # The previous run's dirty pages are written back before this one starts:
                    # otherwise the server after a writer pays for its writeback (measured:
                    # the second of two identical stratad runs lost 6-20% on 4 KiB writes).
                    os.sync()
                    uri = peer.start(fresh)
                    timeouts = tcp_timeouts()
                    r = run_fio(uri, rw, bs, depth, conns, fresh, a.runtime, work,
                                cpu_pids=[peer.pid])
                    timeouts = tcp_timeouts() - timeouts
                    peer.stop()
                    if r is not None and r["cpu_us_of"]:
                        r["cpu_us"] = r["cpu_us_of"][0]
                    runs.setdefault((name, peer.name), []).append(r)
                    print(f"[{round_index + 1}/{a.rounds}] {name:32} {peer.name:24} " +
                          (f"{fmt_bw(r['bw']):>12} {r['iops']:>9.0f} IOPS p50 {r['p50']:>7.0f} us "
                           f"cpu {r['cpu_us']:.1f} us/req, fio {r['fio_cpu']:.0f}%" if r else "failed") +
                          (f", {timeouts} TCP retransmission timeouts" if timeouts else ""), flush=True)
    finally:
        for p in all_peers:
            p.stop()
        for p in all_peers:
            if isinstance(p, StrataPeer):
                p.close()
        shutil.rmtree(work, ignore_errors=True)
    rates = median_rates(rate_samples + [xts_rates(os.path.abspath(a.bin_dir))])
    names = [p.name for p in all_peers]
    if a.save_runs:
        with open(a.save_runs, "w") as f:
            json.dump({"runs": {"|".join(k): v for k, v in runs.items()}, "names": names,
                       "rows": [r[0] for r in rows], "rates": rates,
                       "rate_measurements": len(rate_samples) + 1, "rounds": a.rounds,
                       "runtime": a.runtime}, f)
    report(a, runs, names, [r[0] for r in rows], rates, len(rate_samples) + 1)


def report(a, runs, names, row_names, rates, rate_measurements):
    """Prints the tables of `runs` ((row, server) -> each round's result) and, with
    --write-docs, puts them in docs/benchmarks.md and the plot in docs/nbd-peers.svg."""
    rows = [r for r in ROWS if r[0] in row_names]
    results = Results(runs)
    table = render(results, names, rates, rate_measurements, a.rounds, a.runtime, rows)
    print(table)
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    if a.write_docs:
        svg_plot(results, names, os.path.join(root, "docs", "nbd-peers.svg"))
        write_docs_section("nbd-peers", table)


def request_bytes(row):
    return 1 << 20 if row[2] == "1M" else 4096


def render(results, names, rates, rate_measurements, rounds, runtime, rows):
    head = (f"{rounds} rounds of {runtime} s per row and server; fio and the server share the "
            f"machine's 2 cores. Throughput and CPU/req (the server's utime + stime per request, "
            f"in fio's steady window: ramp and connection setup excluded) are medians over the "
            f"rounds; a ratio is taken in each round, then its median is "
            f"given (the targets also give its range over the rounds).")
    parts = [head, render_plain(results, names, rows)]
    for variant in (DEFAULT, SLEEPING):
        if any(results.median(r[0], variant[0]) for r in rows):
            title = ("Strata as it starts by default" if variant == DEFAULT else
                     f"Strata with --nbd-poll-us 0 ({variant[0]}, {variant[1]})")
            parts += [f"**{title}.**", render_encrypted(results, rates, rate_measurements, rows, variant),
                      render_targets(results, names, rates, rows, variant)]
    return "\n\n".join(parts)


def cipher_us(row, rates):
    rate = rates.get(request_bytes(row))
    return request_bytes(row) / rate * 1e6 if rate else None


def fmt_median(spread, digits=2):
    return f"{spread[0]:.{digits}f}" if spread else "n/a"


def render_encrypted(results, rates, rate_measurements, rows, variant):
    lines = ["Encrypted Strata (AES-256-XTS) in the same run. Added CPU/req is encrypted minus "
             "unencrypted Strata's CPU per request (round by round, median); cipher CPU/req is "
             "the request's bytes at the single-core XTS rate xts_bench measured in this run ("
             + ("the median of a measurement before each round and one at the end"
                if rate_measurements > 1 else "once, at the end") + ") "
             + ", ".join(f"({fmt_bw(r)} at {b // 1024} KiB)" for b, r in sorted(rates.items())) + ".",
             "",
             "| row | encrypted Strata | encrypted / unencrypted Strata | encrypted Strata / qemu-nbd LUKS qcow2 | encrypted CPU/req | added CPU/req | cipher CPU/req | added / cipher |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        e = results.median(row[0], variant[1])
        added = results.cpu_difference(row[0], variant[1], variant[0])
        cipher = cipher_us(row, rates)
        lines.append("| " + " | ".join([
            row[0], fmt_bw(e["bw"]) if e else "failed",
            fmt_median(results.ratio(row[0], variant[1], variant[0])),
            fmt_median(results.ratio(row[0], variant[1], "qemu-nbd-luks-qcow2"), 1),
            f"{e['cpu_us']:.1f} us" if e else "n/a",
            f"{added[0]:.1f} us" if added else "n/a",
            f"{cipher:.1f} us" if cipher else "n/a",
            f"{added[0] / cipher:.2f}" if added and cipher else "n/a"]) + " |")
    return "\n".join(lines)


def render_targets(results, names, rates, rows, variant):
    """Issue 17's targets, each row checked on the median of its per-round values (their range
    is given); a missing measurement counts as missed."""
    checks = []

    def check(what, spread, floor=None, ceiling=None, scale=1.0):
        value = spread[0] / scale if spread else None
        ok = value is not None and (floor is None or value >= floor) and (ceiling is None or value <= ceiling)
        bound = f">= {floor}" if floor is not None else f"<= {ceiling}"
        shown = "n/a" if value is None else (f"{value:.2f} (rounds {spread[1] / scale:.2f} to "
                                             f"{spread[2] / scale:.2f})")
        checks.append((ok, f"{what}: {shown} (target {bound})"))

    peers_only = [n for n in names if not n.startswith("strata") and n != CEILING]
    for row in rows:
        name, conns = row[0], row[4]
        s_name, e_name = variant
        check(f"{name}: encrypted / unencrypted", results.ratio(name, e_name, s_name),
              floor=0.7 if row[2] == "1M" else 0.9)
        check(f"{name}: encrypted / qemu-nbd LUKS", results.ratio(name, e_name, "qemu-nbd-luks-qcow2"),
              floor=3)
        ceiling = results.ratio(name, CEILING, "qemu-nbd-luks-qcow2")
        if ceiling and ceiling[0] < 3:
            checks[-1] = (checks[-1][0], checks[-1][1] + f"; above this machine's ceiling: {CEILING} "
                          f"/ qemu-nbd LUKS is {ceiling[0]:.2f}")
        if conns == 1:
            check(f"{name}: Strata / nbdkit-file", results.ratio(name, s_name, "nbdkit-file"), floor=1.0)
        else:
            medians = {n: results.median(name, n) for n in peers_only}
            best = max((n for n in peers_only if medians[n]), key=lambda n: medians[n]["bw"], default=None)
            check(f"{name}: Strata / best peer ({best})",
                  results.ratio(name, s_name, best) if best else None, floor=1.0)
        cipher = cipher_us(row, rates)
        check(f"{name}: added CPU / cipher CPU",
              results.cpu_difference(name, e_name, s_name) if cipher else None, ceiling=1.25,
              scale=cipher or 1.0)
    met = sum(ok for ok, _ in checks)
    lines = [f"Targets (issue 17): {met} of {len(checks)} met in this run.", ""]
    lines += [f"- {'met' if ok else '**missed**'}: {text}" for ok, text in checks]
    return "\n".join(lines)


def svg_plot(results, names, path):
    """Grouped bars: each server's throughput per row, relative to nbdkit-file's (1.0)."""
    rows = [r[0] for r in ROWS if results.median(r[0], "nbdkit-file")]
    colors = ["#1f77b4", "#aec7e8", "#ff7f0e", "#2ca02c", "#98df8a", "#d62728", "#9467bd",
              "#8c564b", "#e377c2", "#7f7f7f"]
    bar, gap, left, top = 9, 14, 230, 40
    group = bar * len(names) + gap
    ratios = {(r, n): results.ratio(r, n, "nbdkit-file") for r in rows for n in names}
    vmax = max([v[0] for v in ratios.values() if v] + [1.0]) * 1.05
    width, height = 900, top + group * len(rows) + 40 + 16 * len(names)
    scale = (width - left - 40) / vmax
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="20" font-size="13">NBD throughput relative to nbdkit-file '
             f'(fio, median of rounds; longer is faster)</text>']
    x1 = left + scale
    parts.append(f'<line x1="{x1:.1f}" y1="{top - 6}" x2="{x1:.1f}" y2="{top + group * len(rows)}" '
                 f'stroke="#444" stroke-dasharray="3,3"/>')
    for i, r in enumerate(rows):
        y0 = top + i * group
        parts.append(f'<text x="{left - 6}" y="{y0 + bar * len(names) / 2 + 4:.1f}" '
                     f'text-anchor="end">{r}</text>')
        for j, n in enumerate(names):
            if not ratios[(r, n)]:
                continue
            v = ratios[(r, n)][0]
            parts.append(f'<rect x="{left}" y="{y0 + j * bar}" width="{v * scale:.1f}" '
                         f'height="{bar - 1}" fill="{colors[j % len(colors)]}"/>')
            parts.append(f'<text x="{left + v * scale + 3:.1f}" y="{y0 + j * bar + bar - 1}" '
                         f'font-size="8">{v:.2f}</text>')
    ly = top + group * len(rows) + 20
    for j, n in enumerate(names):
        parts.append(f'<rect x="{left}" y="{ly + j * 16 - 9}" width="10" height="10" '
                     f'fill="{colors[j % len(colors)]}"/>')
        parts.append(f'<text x="{left + 16}" y="{ly + j * 16}">{n}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def render_plain(results, names, rows):
    peers_only = [n for n in names if n not in DEFAULT and n != SLEEPING[1]]
    lines = ["| row | Strata | " + " | ".join(f"Strata / {n}" for n in peers_only) +
             " | Strata CPU/req | " + " | ".join(f"{n} CPU/req" for n in peers_only) + " |",
             "| --- " * (3 + 2 * len(peers_only)) + "|"]
    for row in rows:
        s = results.median(row[0], "strata")
        cells = [row[0], (fmt_bw(s["bw"]) + (f", p50 {s['p50']:.0f} us" if row[3] == 1 else "")) if s else "failed"]
        for n in peers_only:
            cells.append(fmt_median(results.ratio(row[0], "strata", n)))
        cells.append(f"{s['cpu_us']:.1f} us" if s else "n/a")
        for n in peers_only:
            p = results.median(row[0], n)
            cells.append(f"{p['cpu_us']:.1f} us" if p else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
