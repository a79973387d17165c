#!/usr/bin/env python3
"""NBD with the real clients (nbdinfo, nbdcopy, qemu-img, qemu-io) and a raw socket client for
malformed requests; volumes made, attached and snapshotted through boto3.

Usage: nbd_test.py BIN_DIR. Prints "N passed, M failed".
"""
import base64
import hashlib
import json
import os
import re
import sys
import time

import boto3
import botocore

from strata_testlib import MiB, Checks, Daemon, RawClient, sh, scratch_dir

BIN = sys.argv[1]
check = Checks()


def main():
    work = scratch_dir("strata-nbd-")
    data_dir = os.path.join(work, "data")
    daemon = Daemon(BIN, data_dir)
    check(daemon.start(), "stratad printed its API and NBD ports")
    try:
        run(work, data_dir, daemon)
    finally:
        check(daemon.stop() == 0, "stratad stops cleanly")
    run_polling(work)
    run_spliced_writes(work)
    return check.summary()


def run_spliced_writes(work):
    """Large writes to chunks a volume holds move from the socket into its head by splice(2), over
    plaintext TCP and the unix socket alike: real clients' writes read back, land in the next
    snapshot and not in the one before."""
    daemon = Daemon(BIN, os.path.join(work, "splice"), ["--nbd-auth", "none"])
    check(daemon.start(), "stratad starts with --nbd-auth none")
    try:
        ec2 = daemon.client()
        vol = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
        ec2.attach_volume(VolumeId=vol, InstanceId="i-0abcdef0123456789", Device="/dev/sdf")
        tcp = f"nbd://127.0.0.1:{daemon.nbd}/{vol}"
        first, second = (os.path.join(work, f"splice-{n}.raw") for n in ("first", "second"))
        for path in (first, second):
            with open(path, "wb") as f:
                f.write(os.urandom(32 * MiB))
        # The first copy makes the volume hold the chunks (a new volume's writes are not spliced).
        out = sh("nbdcopy", first, daemon.uri(vol))
        check(out.returncode == 0, f"nbdcopy fills the volume: {out.stderr}")
        before = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[before], WaiterConfig={"Delay": 1})
        out = sh("nbdcopy", "--request-size=1048576", second, tcp)
        check(out.returncode == 0, f"nbdcopy of 1 MiB writes over TCP: {out.stderr}")
        expected = bytearray(open(second, "rb").read())
        for pattern, at, length, uri in ((0x77, 8 * MiB, MiB, daemon.uri(vol)),
                                         (0x66, 20 * MiB, 256 * 1024, daemon.uri(vol)),
                                         (0x55, 30 * MiB + 512, 65536, tcp)):
            out = sh("qemu-io", "-f", "raw", "-c", f"write -P {pattern:#x} {at} {length}", uri)
            check(out.returncode == 0, f"qemu-io write of {length} bytes at {at}: {out.stderr}")
            expected[at:at + length] = bytes([pattern]) * length
        back = os.path.join(work, "splice-back.raw")
        out = sh("nbdcopy", tcp, back)
        got = open(back, "rb").read(32 * MiB) if out.returncode == 0 else b""
        check(got == bytes(expected), "large writes over TCP and the unix socket read back")
        # fio at queue depth 8, each 1 MiB block verified when read back.
        out = sh("fio", "--name=splice", "--ioengine=nbd", f"--uri={tcp}", "--rw=randwrite",
                 "--bs=1M", "--iodepth=8", "--size=32M", "--verify=crc32c", "--do_verify=1",
                 "--output-format=terse")
        check(out.returncode == 0, f"fio 1 MiB writes at QD8 over TCP verified: {out.stderr[-500:]}")
        out = sh("nbdcopy", tcp, back)
        expected = open(back, "rb").read(32 * MiB) if out.returncode == 0 else b"x"
        after = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
        ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[after], WaiterConfig={"Delay": 1})
        for snap, want, what in ((before, open(first, "rb").read(), "the snapshot before holds none of them"),
                                 (after, expected, "the snapshot after holds them")):
            clone = ec2.create_volume(SnapshotId=snap, AvailabilityZone="local-1a")["VolumeId"]
            ec2.attach_volume(VolumeId=clone, InstanceId="i-0abcdef0123456789", Device="/dev/sdg")
            out = sh("nbdcopy", daemon.uri(clone), back)
            check(out.returncode == 0 and open(back, "rb").read(32 * MiB) == want, what)
            ec2.detach_volume(VolumeId=clone)
    finally:
        check(daemon.stop() == 0, "the stratad with --nbd-auth none stops cleanly")


def run_polling(work):
    """--nbd-poll-us: how long connections poll before they sleep (the main daemon runs the
    default, 50 us). 0: they sleep at once. 2 ms: requests arrive both while a connection polls
    and after it gave up (the client idles past it), and the window shrinks and grows again."""
    for bad in ("-1", "10001", "x"):
        out = sh(f"{BIN}/stratad", "--data-dir", os.path.join(work, "unused"), "--nbd-poll-us", bad)
        check(out.returncode == 2 and "--nbd-poll-us" in out.stderr,
              f"--nbd-poll-us {bad} is refused: {out.returncode} {out.stderr}")
    for poll_us in ("0", "2000"):
        run_poll_us(work, poll_us)


def run_poll_us(work, poll_us):
    daemon = Daemon(BIN, os.path.join(work, f"poll-{poll_us}"), ["--nbd-poll-us", poll_us])
    check(daemon.start(), f"stratad starts with --nbd-poll-us {poll_us}")
    try:
        ec2 = daemon.client()
        vol = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
        ec2.attach_volume(VolumeId=vol, InstanceId="i-0abcdef0123456789", Device="/dev/sdf")
        image = os.path.join(work, f"poll-{poll_us}.raw")
        with open(image, "wb") as f:
            f.write(os.urandom(16 * MiB))
        out = sh("nbdcopy", image, daemon.uri(vol))
        check(out.returncode == 0, f"nbdcopy to a server with --nbd-poll-us {poll_us}: {out.stderr}")
        out = sh("qemu-img", "compare", "-f", "raw", "-F", "raw", image, daemon.uri(vol))
        check(out.returncode == 0, f"qemu-img compare, --nbd-poll-us {poll_us}: {out.stdout} {out.stderr}")
        # Queue depth 1, each block verified when read back.
        out = sh("fio", "--name=qd1", "--ioengine=nbd", f"--uri={daemon.uri(vol)}",
                 "--rw=randwrite", "--bs=4k", "--iodepth=1", "--size=8M", "--offset=32M",
                 "--verify=crc32c", "--do_verify=1", "--output-format=terse")
        check(out.returncode == 0, f"fio QD1 writes verified, --nbd-poll-us {poll_us}: {out.stderr[-500:]}")
        held = RawClient(daemon.unix_socket, vol)
        check(held.request(0, 0, 4096)[1] == open(image, "rb").read(4096), "a raw client reads")
        expected = open(image, "rb").read(25 * 4096)
        idled = []
        for i in range(1, 6):  # Past the poll each time: the connection sleeps, and its window shrinks.
            time.sleep(0.05)
            idled.append(held.request(0, 4096 * i, 4096)[1] == expected[4096 * i:4096 * (i + 1)])
        check(all(idled), f"a raw client reads after idling past the poll, five times: {idled}")
        back_to_back = [held.request(0, 4096 * i, 4096)[1] == expected[4096 * i:4096 * (i + 1)]
                        for i in range(25)]
        check(all(back_to_back), "a raw client reads 25 blocks back to back as the window reopens")
        held.s.close()
        ec2.detach_volume(VolumeId=vol)
        for _ in range(100):  # The server notices the close, polling or asleep, and unpins.
            try:
                ec2.delete_volume(VolumeId=vol)
                break
            except botocore.exceptions.ClientError:
                time.sleep(0.05)
        check(not ec2.describe_volumes()["Volumes"], "the volume is deleted once the client closed")
    finally:
        check(daemon.stop() == 0, f"the stratad with --nbd-poll-us {poll_us} stops cleanly")


def run(work, data_dir, daemon):
    api, sock_path = daemon.api, daemon.unix_socket
    creds = open(os.path.join(data_dir, "credentials")).read()
    key = re.search(r"aws_access_key_id = (\S+)", creds).group(1)
    secret = re.search(r"aws_secret_access_key = (\S+)", creds).group(1)
    ec2 = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{api}", region_name="local-1",
                       aws_access_key_id=key, aws_secret_access_key=secret)
    group = "i-0abcdef0123456789"
    vol = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
    uri = daemon.uri(vol)
    out = sh("nbdinfo", "--size", uri)
    check(out.returncode != 0, "a detached volume is not exported")
    ec2.attach_volume(VolumeId=vol, InstanceId=group, Device="/dev/sdf")
    out = sh("nbdinfo", "--size", uri)
    check(out.stdout.strip() == str(1 << 30), f"nbdinfo --size: {out.stdout} {out.stderr}")
    out = sh("nbdinfo", "--list", "--json", daemon.uri())
    names = [e["export-name"] for e in json.loads(out.stdout)["exports"]] if out.returncode == 0 else []
    check(names == [vol], f"nbdinfo --list: {names}")

    # Write an image over NBD, compare it back through qemu-img.
    image = os.path.join(work, "image.raw")
    with open(image, "wb") as f:
        f.write(os.urandom(48 * MiB))
        f.truncate(1 << 30)
    out = sh("nbdcopy", image, uri)
    check(out.returncode == 0, f"nbdcopy to the volume: {out.stderr}")
    out = sh("qemu-img", "compare", "-f", "raw", "-F", "raw", image, f"nbd+unix:///{vol}?socket={sock_path}")
    check(out.returncode == 0, f"qemu-img compare over the unix socket: {out.stdout} {out.stderr}")

    # Snapshot, then a volume from the snapshot reads the same data.
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    out = sh("qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M", uri)  # After the snapshot.
    check(out.returncode == 0, f"qemu-io write: {out.stderr}")
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig={"Delay": 1})
    clone = ec2.create_volume(SnapshotId=snap, AvailabilityZone="local-1a")["VolumeId"]
    ec2.attach_volume(VolumeId=clone, InstanceId=group, Device="/dev/sdg")
    back = os.path.join(work, "back.raw")
    out = sh("nbdcopy", daemon.uri(clone), back)
    check(out.returncode == 0 and open(back, "rb").read() == open(image, "rb").read(),
          "the volume from the snapshot holds the image, not the later write")
    out = sh("qemu-io", "-f", "raw", "-c", "read -P 0x5a 0 1M", uri)
    check(out.returncode == 0 and "read 1048576/1048576" in out.stdout, "the later write is on the volume")

    # base:allocation: holes and data as the volume holds them (structured replies).
    sparse = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
    ec2.attach_volume(VolumeId=sparse, InstanceId=group, Device="/dev/sdi")
    suri = daemon.uri(sparse)
    sh("qemu-io", "-f", "raw", "-c", "write -P 1 1M 128k", "-c", "write -P 2 100M 64k", suri)
    out = sh("qemu-img", "map", "--output=json", "-f", "raw", suri)
    extents = json.loads(out.stdout) if out.returncode == 0 else []
    data_runs = [(e["start"], e["length"]) for e in extents if e["data"]]
    check(data_runs == [(MiB, 128 * 1024), (100 * MiB, 64 * 1024)], f"qemu-img map: {data_runs} {out.stderr}")
    out = sh("nbdinfo", "--map", suri)
    check(out.returncode == 0 and "hole,zero" in out.stdout, f"nbdinfo --map: {out.stdout} {out.stderr}")
    converted = os.path.join(work, "sparse.qcow2")
    out = sh("qemu-img", "convert", "-O", "qcow2", suri, converted)
    check(out.returncode == 0 and sh("qemu-img", "compare", "-f", "raw", "-F", "qcow2", suri, converted).returncode == 0,
          "qemu-img convert skips holes and copies data exactly")
    ec2.detach_volume(VolumeId=sparse)

    # Malformed requests get the protocol's errors; the connection goes on.
    c = RawClient(sock_path, vol)
    check(c.go_reply == 1 and c.export_size == 1 << 30, "raw client: NBD_OPT_GO")
    check(c.request(0, 100, 512)[0] == 22, "misaligned read: EINVAL")
    check(c.request(0, (1 << 30) - 512, 1024)[0] == 22, "read past the end: EINVAL")
    check(c.request(0, 0, 64 * MiB)[0] == 75, "read longer than the maximum: EOVERFLOW")
    check(c.request(1, 1 << 30, 512, payload=b"x" * 512)[0] == 22, "write past the end: EINVAL, payload skipped")
    check(c.request(0, 0, 512, flags=0x8000)[0] == 22, "unknown flag: EINVAL")
    check(c.request(9, 0, 0)[0] == 22, "unknown command: EINVAL")
    err, data = c.request(0, 0, 4096)
    check(err == 0 and data == b"\x5a" * 4096, "a good read after the bad ones")
    check(c.request(3, 0, 0)[0] == 0, "flush")
    c.s.close()
    c = RawClient(sock_path, "vol-nosuch")
    check(c.go_reply == 0x80000006, "unknown export: NBD_REP_ERR_UNKNOWN")
    c.s.close()

    # The strata CLI through the API: attach prints the NBD lines, status lists exports.
    cli = [f"{BIN}/strata", "--data-dir", data_dir, "--endpoint", f"http://127.0.0.1:{api}",
           "--nbd", f"127.0.0.1:{daemon.nbd}"]
    third = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
    out = sh(*cli, "attach", third)
    attached = json.loads(out.stdout) if out.returncode == 0 else {}
    check(attached.get("NbdUri") == daemon.uri(third), f"strata attach: {out.stdout} {out.stderr}")
    check(sh("nbdinfo", "--size", attached.get("NbdUri", "nbd://x")).returncode == 0, "the printed URI works")
    out = sh(*cli, "status")
    status = json.loads(out.stdout) if out.returncode == 0 else {}
    check(daemon.uri(third) in status.get("NbdExports", []), f"strata status: {out.stdout}")
    out = sh(*cli, "ec2", "DescribeVolumes", f"VolumeId.1={third}", "--output", "text")
    check(out.returncode == 0 and out.stdout.split("\t")[0] == third, f"ec2 --output text: {out.stdout}")
    out = sh(*cli, "detach", third)
    check(out.returncode == 0 and sh("nbdinfo", "--size", attached.get("NbdUri", "nbd://x")).returncode != 0,
          "strata detach ends the export")
    out = sh(*cli, "ec2", "DeleteVolume", "VolumeId=vol-00000000000000000")
    check(out.returncode == 254 and "InvalidVolume.NotFound" in out.stderr, f"API error: {out.returncode} {out.stderr}")
    out = sh(f"{BIN}/strata", "--data-dir", data_dir, "--endpoint", "http://127.0.0.1:1", "status")
    check(out.returncode == 1 and "cannot reach stratad" in out.stderr, f"unreachable: {out.stderr}")

    # Accounts while stratad runs: the admin adds one through the API; others may not.
    out = sh(*cli, "account", "create", "dave")
    dave = json.loads(out.stdout) if out.returncode == 0 else {}
    check(re.fullmatch(r"\d{12}", dave.get("AccountId", "")), f"account create via the API: {out.stdout} {out.stderr}")
    dave_ec2 = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{api}", region_name="local-1",
                            aws_access_key_id=dave.get("AccessKeyId", "x"),
                            aws_secret_access_key=dave.get("SecretAccessKey", "x"))
    check(dave_ec2.describe_volumes()["Volumes"] == [], "the new account works and owns nothing")
    out = sh(*cli, "ec2", "CreateAccount", "AccountName=eve",
             env=dict(os.environ, AWS_ACCESS_KEY_ID=dave.get("AccessKeyId", "x"),
                      AWS_SECRET_ACCESS_KEY=dave.get("SecretAccessKey", "x")))
    check(out.returncode == 254 and "UnauthorizedOperation" in out.stderr, f"non-admin CreateAccount: {out.stderr}")

    # EBS direct round trip: upload blocks, make a volume of the snapshot, read it over NBD.
    ebs = boto3.client("ebs", endpoint_url=f"http://127.0.0.1:{api}", region_name="local-1",
                       aws_access_key_id=key, aws_secret_access_key=secret)
    block = 512 * 1024
    direct = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    blocks = {0: os.urandom(block), 7: os.urandom(block), 2047: os.urandom(block)}
    for index, data in blocks.items():
        ebs.put_snapshot_block(SnapshotId=direct, BlockIndex=index, BlockData=data, DataLength=block,
                               Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                               ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=direct, ChangedBlocksCount=len(blocks))
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[direct], WaiterConfig={"Delay": 1})
    restored = ec2.create_volume(SnapshotId=direct, AvailabilityZone="local-1a")["VolumeId"]
    ec2.attach_volume(VolumeId=restored, InstanceId=group, Device="/dev/sdh")
    read_back = os.path.join(work, "direct.raw")
    out = sh("nbdcopy", daemon.uri(restored), read_back)
    want = bytearray(1 << 30)
    for index, data in blocks.items():
        want[index * block:(index + 1) * block] = data
    check(out.returncode == 0 and open(read_back, "rb").read() == bytes(want),
          "a volume of an EBS direct snapshot reads back over NBD")
    ec2.detach_volume(VolumeId=restored)

    # Detached: no longer exported; deleting an attached volume is refused.
    try:
        ec2.delete_volume(VolumeId=clone)
        check(False, "delete of an attached volume must fail")
    except botocore.exceptions.ClientError as e:
        check(e.response["Error"]["Code"] == "VolumeInUse", f"{e}")
    held = RawClient(sock_path, clone)  # A connection open across the detach.
    ec2.detach_volume(VolumeId=clone)
    out = sh("nbdinfo", "--size", daemon.uri(clone))
    check(out.returncode != 0, "a detached volume is no longer exported")
    try:
        ec2.delete_volume(VolumeId=clone)
        check(False, "deleting a volume with an open NBD connection must fail")
    except botocore.exceptions.ClientError as e:
        check(e.response["Error"]["Code"] == "VolumeInUse", f"{e}")
    check(held.request(0, 0, 4096)[0] == 0, "the open connection still reads")
    held.s.close()
    for _ in range(100):  # The server notices the close and unpins.
        try:
            ec2.delete_volume(VolumeId=clone)
            break
        except botocore.exceptions.ClientError:
            time.sleep(0.05)
    check(not any(v["VolumeId"] == clone for v in ec2.describe_volumes()["Volumes"]),
          "deleted once the connection closed")


if __name__ == "__main__":
    sys.exit(main())
