#!/usr/bin/env python3
"""Cross-region copy through the real aws CLI and boto3, over the transfer protocol.

One stratad serving two regions: a chain of copies (full, then 1% changed: only the changed
chunks cross), Progress while pending, strata copy-stats, an encrypted copy under the
destination region's own KMS key with the invariant-5 scan of the data directory, and refused
requests that change nothing. Then two stratad processes as two regions on loopback
(--peer-region / --transfer-listen): the source is killed with SIGKILL mid-copy and restarted,
and the copy resumes without re-sending what arrived.

Usage: region_copy_test.py BIN_DIR. Prints "N passed, M failed"."""
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time

import boto3

from strata_testlib import MiB, Checks, Daemon, error_code, scratch_dir, sh, wait_until

BIN = sys.argv[1]
check = Checks()
CHUNK = 64 * 1024


def client(daemon, region, service="ec2"):
    key, secret = daemon.admin_keys()
    return boto3.client(service, endpoint_url=f"http://127.0.0.1:{daemon.api}", region_name=region,
                        aws_access_key_id=key, aws_secret_access_key=secret)


def aws(daemon, region, *args):
    return daemon.aws(*args, region=region)


def wait(fn, what, timeout=120):
    value = wait_until(fn, timeout)
    if not value:
        check(False, f"timed out waiting for {what}")
    return value or None


def snapshot_state(ec2, snap):
    return ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]


def completed(ec2, snap):
    s = snapshot_state(ec2, snap)
    return s if s["State"] in ("completed", "error") else None


def digest(daemon, export, size):
    """SHA-256 of an export's first `size` bytes, read with nbdcopy."""
    out = subprocess.run(["nbdcopy", daemon.uri(export), "-"], capture_output=True, timeout=120)
    check(out.returncode == 0, f"nbdcopy read {export}: {out.stderr[-200:]!r}")
    return hashlib.sha256(out.stdout[:size]).hexdigest()


def volume_with(daemon, ec2, zone, writes, encrypted=False, kms=None):
    """A 1 GiB volume; `writes` is a list of (offset, bytes) written over NBD."""
    extra = {"Encrypted": True} if encrypted else {}
    if kms:
        extra["KmsKeyId"] = kms
    vol = ec2.create_volume(Size=1, AvailabilityZone=zone, **extra)["VolumeId"]
    ec2.attach_volume(VolumeId=vol, InstanceId="i-" + vol[4:], Device="/dev/sdf")
    write(daemon, vol, writes)
    return vol


def write(daemon, vol, writes):
    path = os.path.join(os.path.dirname(daemon.data_dir), "piece")
    for offset, data in writes:
        with open(path, "wb") as f:
            f.write(data)
        out = sh("qemu-io", "-f", "raw", "-c", f"write -s {path} {offset} {len(data)}",
                 daemon.uri(vol))
        check(out.returncode == 0, f"write {len(data)} bytes at {offset} to {vol}: {out.stderr}")


def snapshot(ec2, vol):
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    s = wait(lambda: completed(ec2, snap), f"snapshot {snap}")
    check(s and s["State"] == "completed", f"snapshot {snap} completed")
    return snap


def copy_stats(daemon, snap):
    out = sh(f"{BIN}/strata", "--data-dir", daemon.data_dir, "--endpoint",
             f"http://127.0.0.1:{daemon.api}", "copy-stats", snap)
    check(out.returncode == 0, f"strata copy-stats {snap}: {out.stderr}")
    stats = {}
    m = re.search(r"chunks\s+(\d+) of (\d+) sent, (\d+) skipped", out.stdout)
    if m:
        stats["sent"], stats["total"], stats["skipped"] = map(int, m.groups())
    for key, pattern in (("bytes_sent", r"bytes sent\s+(\d+)"), ("changed", r"changed bytes\s+(\d+)"),
                         ("retries", r"retries\s+(\d+)")):
        m = re.search(pattern, out.stdout)
        if m:
            stats[key] = int(m.group(1))
    stats["text"] = out.stdout
    return stats


def scan_for(data_dir, marker):
    """Files under data_dir holding `marker` (invariant 5: none for encrypted data)."""
    hits = []
    for root, _, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    if marker in f.read():
                        hits.append(path)
            except OSError:
                pass
    return hits


def one_process(work):
    daemon = Daemon(BIN, os.path.join(work, "one"),
                    ["--region", "east-1,west-1", "--vm", "off",
                     "--link", "bandwidth=20MB,rtt=5ms,streams=2"])
    check(daemon.start(), "stratad with two regions started")
    east, west = client(daemon, "east-1"), client(daemon, "west-1")
    regions = sorted(r["RegionName"] for r in west.describe_regions()["Regions"])
    check(regions == ["east-1", "west-1"], f"DescribeRegions: {regions}")

    # A chain: 16 MiB of data, copied in full; then 2 of its 256 chunks changed, copied again.
    data = os.urandom(16 * MiB)
    vol = volume_with(daemon, east, "east-1a", [(0, data)])
    first = snapshot(east, vol)
    out = aws(daemon, "west-1", "ec2", "copy-snapshot", "--source-region", "east-1",
              "--source-snapshot-id", first, "--description", "dr copy")
    check(out.returncode == 0, f"aws ec2 copy-snapshot: {out.stderr}")
    copy1 = json.loads(out.stdout)["SnapshotId"] if out.returncode == 0 else None
    seen = snapshot_state(west, copy1)
    check(seen["State"] == "pending", f"the copy starts pending: {seen['State']}")
    progress = set()
    def done_watching():
        s = snapshot_state(west, copy1)
        progress.add(s.get("Progress"))
        return s if s["State"] != "pending" else None
    s = wait(done_watching, "the first copy")
    check(s and s["State"] == "completed", f"first copy completed: {s}")
    check(any(p not in ("0%", "100%") for p in progress), f"Progress moved while pending: {progress}")
    check(s["Description"] == "dr copy" and s["VolumeSize"] == 1, f"copy's attributes: {s}")
    check(digest(daemon, copy1, 16 * MiB) == hashlib.sha256(data).hexdigest(),
          "the first copy reads back byte-identical")
    full = copy_stats(daemon, copy1)
    check(full.get("sent") == 256 and full.get("skipped") == 0, f"full copy: {full}")

    write(daemon, vol, [(3 * CHUNK, os.urandom(CHUNK)), (200 * CHUNK + 4096, os.urandom(8192))])
    second = snapshot(east, vol)
    copy2 = west.copy_snapshot(SourceRegion="east-1", SourceSnapshotId=second)["SnapshotId"]
    s = wait(lambda: completed(west, copy2), "the second copy")
    check(s and s["State"] == "completed", f"second copy completed: {s}")
    check(digest(daemon, copy2, 16 * MiB) == digest(daemon, second, 16 * MiB),
          "the second copy reads back byte-identical to its source")
    check(digest(daemon, copy1, 16 * MiB) == hashlib.sha256(data).hexdigest(),
          "the first copy is unchanged by the second")
    inc = copy_stats(daemon, copy2)
    check(inc.get("sent") == 2 and inc.get("skipped") == 254, f"incremental copy: {inc}")
    check(inc.get("bytes_sent", 1 << 40) <= 2 * CHUNK + 2048,
          f"the second copy sent at most the 2 changed chunks plus framing: {inc.get('bytes_sent')}")
    check("the copy of " + first in inc["text"], "copy-stats names the base")
    api = ["--data-dir", daemon.data_dir, "--endpoint", f"http://127.0.0.1:{daemon.api}"]
    out = sh(f"{BIN}/strata", *api, "copy-stats", "--json")
    copies = json.loads(out.stdout or "{}").get("copySet", [])
    check(out.returncode == 0 and {c["snapshotId"] for c in copies} == {copy1, copy2},
          "copy-stats --json lists every copy through the API", out)
    out = sh(f"{BIN}/strata", *api, "copy-stats", "snap-0123456789abcdef0")
    check(out.returncode == 254 and "InvalidSnapshot.NotFound" in out.stderr,
          "copy-stats of no copy: InvalidSnapshot.NotFound", out)
    keys = sh(f"{BIN}/strata", *api, "account", "create", "copy-viewer")
    account = json.loads(keys.stdout or "{}")
    out = sh(f"{BIN}/strata", *api, "copy-stats", "--json",
             env=dict(os.environ, AWS_ACCESS_KEY_ID=account.get("AccessKeyId", ""),
                      AWS_SECRET_ACCESS_KEY=account.get("SecretAccessKey", "")))
    check(out.returncode == 0 and json.loads(out.stdout or "{}").get("copySet") in (None, [], ""),
          "another account sees none of the copies", out)

    # Encrypted: the source under east's default key, the copy under a key of west's own.
    key = client(daemon, "west-1", "kms").create_key(Description="dr key")["KeyMetadata"]
    marker = b"STRATA-PLAINTEXT-MARKER-" + os.urandom(8).hex().encode()
    secret = (marker * (CHUNK // len(marker) + 1))[:CHUNK] * 16
    evol = volume_with(daemon, east, "east-1a", [(0, secret)], encrypted=True)
    esnap = snapshot(east, evol)
    ecopy = west.copy_snapshot(SourceRegion="east-1", SourceSnapshotId=esnap, Encrypted=True,
                               KmsKeyId=key["KeyId"])["SnapshotId"]
    s = wait(lambda: completed(west, ecopy), "the encrypted copy")
    check(s and s["State"] == "completed" and s["Encrypted"], f"encrypted copy: {s}")
    check(s and s.get("KmsKeyId") == key["Arn"], f"under the destination key: {s and s.get('KmsKeyId')}")
    check(digest(daemon, ecopy, len(secret)) == hashlib.sha256(secret).hexdigest(),
          "the encrypted copy reads back")
    east.detach_volume(VolumeId=vol)
    east.detach_volume(VolumeId=evol)

    # Refused requests change nothing.
    before = sorted(x["SnapshotId"] for x in west.describe_snapshots(OwnerIds=["self"])["Snapshots"])
    check(error_code(west.copy_snapshot, SourceRegion="east-1",
                     SourceSnapshotId="snap-0123456789abcdef0") == "InvalidSnapshot.NotFound",
          "an unknown source snapshot: InvalidSnapshot.NotFound")
    check(error_code(west.copy_snapshot, SourceRegion="east-1", SourceSnapshotId=first,
                     CompletionDurationMinutes=5) == "InvalidParameterValue",
          "CompletionDurationMinutes below 15: InvalidParameterValue")
    check(error_code(west.copy_snapshot, SourceRegion="mars-1", SourceSnapshotId=first)
          == "InvalidParameterValue", "an unknown source region: InvalidParameterValue")
    after = sorted(x["SnapshotId"] for x in west.describe_snapshots(OwnerIds=["self"])["Snapshots"])
    check(before == after, "refused copies created nothing")
    timed = west.copy_snapshot(SourceRegion="east-1", SourceSnapshotId=second,
                               CompletionDurationMinutes=15)["SnapshotId"]
    s = wait(lambda: completed(west, timed), "a time-based copy")
    check(s and s["State"] == "completed", "a time-based copy the link can make completes")
    check(daemon.stop() == 0, "stratad stopped cleanly")
    hits = scan_for(daemon.data_dir, marker)
    check(not hits, f"invariant 5: no plaintext of the encrypted volume on disk: {hits}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def transfer_refusals(work, port, key):
    """The transfer listener speaks only TLS with a shared key: a plaintext HELLO gets nothing,
    a wrong key fails the handshake, the right one completes it (openssl s_client, TLS 1.3)."""
    with socket.create_connection(("127.0.0.1", port), timeout=40) as s:
        hello = b"STXF" + bytes([1]) + (8).to_bytes(4, "little") + b"\0" * 8
        s.sendall(hello)
        try:
            reply = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            reply = b""
    check(b"STXF" not in reply and b"east" not in reply,
          f"a plaintext HELLO gets no frame back: {reply[:64]!r}")

    def handshake(psk):
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                               "-psk_identity", "peers", "-psk", psk, "-brief"],
                              input="", capture_output=True, text=True, timeout=40)
    good, bad = handshake(key), handshake(os.urandom(32).hex())
    check("CONNECTION ESTABLISHED" in good.stderr and "TLSv1.3" in good.stderr,
          f"the shared key completes a TLS 1.3 handshake: {good.stderr[-400:]}")
    check("CONNECTION ESTABLISHED" not in bad.stderr,
          f"another key does not: {bad.stderr[-300:]}")


def two_processes(work):
    port = free_port()
    key = os.urandom(32).hex()
    psk = os.path.join(work, "transfer.psk")
    with open(psk, "w") as f:
        f.write(f"peers:{key}\n")
    out = sh(f"{BIN}/stratad", "--data-dir", os.path.join(work, "nokey"), "--transfer-listen",
             f"127.0.0.1:{port}")
    check(out.returncode != 0 and "--transfer-psk-file" in out.stderr,
          f"--transfer-listen without a key is refused at start: {out.stderr[-300:]}")
    out = sh(f"{BIN}/stratad", "--data-dir", os.path.join(work, "nokey"), "--peer-region",
             f"east-1=127.0.0.1:{port}")
    check(out.returncode != 0 and "--transfer-psk-file" in out.stderr,
          f"so is --peer-region: {out.stderr[-300:]}")
    source = Daemon(BIN, os.path.join(work, "east"),
                    ["--region", "east-1", "--vm", "off", "--transfer-listen", f"127.0.0.1:{port}",
                     "--transfer-psk-file", psk])
    check(source.start(), "source stratad (east-1) started")
    transfer_refusals(work, port, key)
    # corrupt=0.5 would damage half the chunks, each then asked again: a peer's HELLO may not
    # inject faults (they are a local test option), so the retries below are the reconnections
    # after the kill only.
    dest = Daemon(BIN, os.path.join(work, "west"),
                  ["--region", "west-1", "--vm", "off", "--peer-region", f"east-1=127.0.0.1:{port}",
                   "--transfer-psk-file", psk, "--link", "bandwidth=6MB,rtt=5ms,streams=2,corrupt=0.5"])
    check(dest.start(), "destination stratad (west-1) started")
    east, west = client(source, "east-1"), client(dest, "west-1")
    regions = sorted(r["RegionName"] for r in west.describe_regions()["Regions"])
    check(regions == ["east-1", "west-1"], f"the peer region is listed: {regions}")
    data = os.urandom(24 * MiB)
    vol = volume_with(source, east, "east-1a", [(0, data)])
    snap = snapshot(east, vol)
    east.detach_volume(VolumeId=vol)
    # Another process's account may copy it only once it is shared.
    dest_account = open(os.path.join(dest.data_dir, "accounts")).read().split("\t")[0]
    check(error_code(west.copy_snapshot, SourceRegion="east-1", SourceSnapshotId=snap)
          == "InvalidSnapshot.NotFound", "an unshared snapshot of a peer is not found")
    east.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                   OperationType="add", UserIds=[dest_account])
    copy = west.copy_snapshot(SourceRegion="east-1", SourceSnapshotId=snap)["SnapshotId"]
    wait(lambda: snapshot_state(west, copy).get("Progress", "0%") not in ("0%", ""),
         "the copy to make progress")
    source.kill()  # SIGKILL mid-copy.
    time.sleep(1.5)
    mid = snapshot_state(west, copy)
    check(mid["State"] == "pending", f"the copy waits for the source, pending: {mid['State']} {mid.get('Progress')}")
    check(source.start(), "the source restarted")
    s = wait(lambda: completed(west, copy), "the resumed copy", timeout=180)
    check(s and s["State"] == "completed", f"the copy completed after the source came back: {s}")
    stats = copy_stats(dest, copy)
    check(stats.get("sent") == 384 and 0 < stats.get("retries", 0) < 100,
          f"all 384 chunks arrived, with reconnections and no injected damage: {stats}")
    check(stats.get("changed") == 24 * MiB, f"no chunk landed twice: {stats.get('changed')}")
    check(digest(dest, copy, 24 * MiB) == hashlib.sha256(data).hexdigest(),
          "the copy across processes reads back byte-identical")

    # The destination killed mid-copy: after its restart the copy resumes where it was.
    data2 = os.urandom(24 * MiB)
    east = client(source, "east-1")  # The restarted source listens on new API and NBD ports.
    vol2 = volume_with(source, east, "east-1a", [(0, data2)])
    snap2 = snapshot(east, vol2)
    east.detach_volume(VolumeId=vol2)
    east.modify_snapshot_attribute(SnapshotId=snap2, Attribute="createVolumePermission",
                                   OperationType="add", UserIds=[dest_account])
    copy2 = west.copy_snapshot(SourceRegion="east-1", SourceSnapshotId=snap2)["SnapshotId"]
    wait(lambda: int(snapshot_state(west, copy2).get("Progress", "0%").rstrip("%") or 0) >= 30,
         "the second copy to pass 30%")
    dest.kill()
    check(dest.start(), "the destination restarted")
    west = client(dest, "west-1")
    mid = snapshot_state(west, copy2)
    check(mid["State"] == "pending", f"the copy is still pending after the restart: {mid['State']}")
    s = wait(lambda: completed(west, copy2), "the copy resumed after the destination restart",
             timeout=180)
    check(s and s["State"] == "completed", f"the copy completed after the destination came back: {s}")
    stats = copy_stats(dest, copy2)
    check(stats.get("sent") == 384 and stats.get("changed") == 24 * MiB and stats.get("retries", 0) >= 1,
          f"every chunk landed once in the copy's record, the restart counted: {stats}")
    check(stats.get("bytes_sent", 1 << 40) < 24 * MiB * 1.6,
          f"chunks that had arrived were not sent again (at most the last second's): {stats.get('bytes_sent')}")
    check(digest(dest, copy2, 24 * MiB) == hashlib.sha256(data2).hexdigest(),
          "the copy resumed across a destination restart reads back byte-identical")
    check(dest.stop() == 0 and source.stop() == 0, "both stratad stopped cleanly")


def main():
    work = scratch_dir("strata-regions-")
    try:
        one_process(work)
        two_processes(work)
    finally:
        subprocess.run(["pkill", "-f", f"stratad --data-dir {work}"], check=False)
        if os.environ.get("STRATA_KEEP_WORK"):
            print(f"work directory kept: {work}")
        else:
            return check.summary()


if __name__ == "__main__":
    sys.exit(main())
