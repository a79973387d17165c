#!/usr/bin/env python3
"""Volume types hold NBD I/O to their rates (docs/qos.md), driven by fio's nbd engine and boto3
against stratad with its default --qos on: gp3's defaults, a provisioned gp3, io2, gp2's burst,
st1's throughput in 1 MiB units, two volumes that do not take each other's budget, ModifyVolume
on a volume in use (the same connection speeds up), and invalid types refused with AWS's codes
and nothing changed. Runs are a few seconds each; bounds are generous below (the machine is
shared) and tight above; each check prints its figure (docs/qos.md's table).

Usage: qos_test.py BIN_DIR. Prints "N passed, M failed".
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import botocore

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_testlib import MiB, Daemon  # noqa: E402

BIN = sys.argv[1]
PASSED = 0
FAILED = 0
SECONDS = 4


def check(cond, what):
    global PASSED, FAILED
    print(("ok:   " if cond else "FAIL: ") + what, flush=True)
    if cond:
        PASSED += 1
    else:
        FAILED += 1


def expect_error(code, fn, **kwargs):
    try:
        fn(**kwargs)
    except botocore.exceptions.ClientError as e:
        check(e.response["Error"]["Code"] == code, f"expected {code}, got {e}")
        return
    check(False, f"expected {code}, the call succeeded")


def fio(work, uri, rw, bs, depth=16, jobs=2, seconds=SECONDS, name="q"):
    """IOPS and bytes/s of a time-based fio run over `jobs` connections."""
    out = os.path.join(work, f"{name}.json")
    r = subprocess.run(["fio", f"--name={name}", "--ioengine=nbd", f"--uri={uri}", f"--rw={rw}",
                        f"--bs={bs}", f"--iodepth={depth}", f"--numjobs={jobs}", "--size=512M",
                        "--time_based", f"--runtime={seconds}", "--group_reporting",
                        "--output-format=json", f"--output={out}"],
                       capture_output=True, text=True, cwd=work, timeout=seconds * 10 + 60)
    if r.returncode != 0:
        check(False, f"fio {rw} {bs} on {uri}: {r.stderr[-300:]}")
        return 0, 0
    job = json.load(open(out))["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return side["iops"], side["bw_bytes"]


def within(value, target, low=0.6, high=1.1):
    """Generous below (a shared machine may not reach the rate), strict above (the limit)."""
    return target * low <= value <= target * high


def main():
    work = tempfile.mkdtemp(prefix="strata-qos-")
    d = Daemon(BIN, os.path.join(work, "data"), ["--vm", "off", "--qos", "on"])
    if not d.start():
        print(d.log_text())
        return 1
    ec2 = d.client()
    attached = [0]

    def volume(size, **kw):
        v = ec2.create_volume(Size=size, AvailabilityZone="local-1a", **kw)["VolumeId"]
        attached[0] += 1
        ec2.attach_volume(VolumeId=v, InstanceId=f"i-0abcdef01234567{attached[0]:02d}",
                          Device="/dev/sdf")
        return v

    try:
        # gp3 defaults: 3,000 IOPS, 125 MiB/s, whatever the number of connections.
        gp3 = volume(8)
        desc = ec2.describe_volumes(VolumeIds=[gp3])["Volumes"][0]
        check(desc["Iops"] == 3000 and desc["Throughput"] == 125, f"gp3 defaults shown: {desc}")
        iops, _ = fio(work, d.uri(gp3), "randread", "4k")
        check(within(iops, 3000), f"gp3 4 KiB random reads over 2 connections: {iops:.0f} IOPS")
        iops, _ = fio(work, d.uri(gp3), "randwrite", "4k", jobs=1)
        check(within(iops, 3000), f"gp3 4 KiB random writes: {iops:.0f} IOPS")
        _, bw = fio(work, d.uri(gp3), "read", "1M", depth=4)
        check(within(bw, 125 * MiB), f"gp3 1 MiB reads: {bw / MiB:.0f} MiB/s")

        # Provisioned gp3 and io2.
        fast = volume(16, VolumeType="gp3", Iops=6000, Throughput=400)
        iops, _ = fio(work, d.uri(fast), "randread", "4k", depth=32)
        check(within(iops, 6000), f"gp3 at 6,000 IOPS: {iops:.0f}")
        _, bw = fio(work, d.uri(fast), "read", "1M", depth=8)
        check(within(bw, 400 * MiB), f"gp3 at 400 MiB/s: {bw / MiB:.0f} MiB/s")
        io2 = volume(20, VolumeType="io2", Iops=2000)
        iops, _ = fio(work, d.uri(io2), "randread", "4k")
        check(within(iops, 2000), f"io2 at 2,000 IOPS: {iops:.0f}")

        # gp2 of 10 GiB: a 100 IOPS baseline, bursting at 3,000 on its credits.
        gp2 = volume(10, VolumeType="gp2")
        check(ec2.describe_volumes(VolumeIds=[gp2])["Volumes"][0]["Iops"] == 100,
              "gp2 shows its baseline as Iops")
        iops, _ = fio(work, d.uri(gp2), "randread", "4k")
        check(within(iops, 3000), f"gp2 bursts at 3,000 IOPS: {iops:.0f}")

        # st1 of 125 GiB: 250 MiB/s per TiB of burst (30.5 MiB/s), counted in 1 MiB units, so
        # random 4 KiB reads get about 30 a second and sequential ones the full throughput.
        st1 = volume(125, VolumeType="st1")
        _, bw = fio(work, d.uri(st1), "read", "1M", depth=4)
        check(within(bw, 30.5 * MiB), f"st1 sequential 1 MiB: {bw / MiB:.1f} MiB/s")
        iops, _ = fio(work, d.uri(st1), "randread", "4k", depth=4, jobs=1)
        check(within(iops, 30.5, 0.6, 1.3), f"st1 random 4 KiB, a whole unit each: {iops:.1f} IOPS")

        # Two volumes at once: a saturated one does not take the other's budget.
        a, b = volume(16), volume(16)
        results = {}
        t = threading.Thread(target=lambda: results.update(a=fio(work, d.uri(a), "randread", "4k",
                                                                  name="a")))
        t.start()
        results["b"] = fio(work, d.uri(b), "randread", "4k", name="b")
        t.join()
        check(within(results["a"][0], 3000) and within(results["b"][0], 3000),
              f"two gp3 volumes side by side: {results['a'][0]:.0f} and {results['b'][0]:.0f} IOPS")

        # ModifyVolume on a volume in use: fio's one connection runs at the new rate, with no
        # reconnect (its IOPS log, half-second averages, before and after the call).
        log = os.path.join(work, "modify")
        job = subprocess.Popen(
            ["fio", "--name=m", "--ioengine=nbd", f"--uri={d.uri(a)}", "--rw=randread",
             "--bs=4k", "--iodepth=32", "--size=512M", "--time_based", "--runtime=7",
             f"--write_iops_log={log}", "--log_avg_msec=500"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(3.5)
        ec2.modify_volume(VolumeId=a, Iops=8000, Throughput=250)
        _, err = job.communicate(timeout=120)
        samples = []
        for name in os.listdir(work):
            if name.startswith("modify_iops") and name.endswith(".log"):
                for line in open(os.path.join(work, name)):
                    ms, value = line.split(",")[:2]
                    samples.append((int(ms), int(value)))
        before = [v for ms, v in samples if 1000 <= ms <= 3000]
        after = [v for ms, v in samples if ms >= 5000]
        b_avg = sum(before) / max(len(before), 1)
        a_avg = sum(after) / max(len(after), 1)
        check(job.returncode == 0 and within(b_avg, 3000, 0.7) and within(a_avg, 8000, 0.6),
              f"ModifyVolume applies without reconnecting: {b_avg:.0f} then {a_avg:.0f} IOPS "
              f"{err[-200:]}")

        # Invalid types and combinations: AWS's codes, nothing changed.
        expect_error("InvalidParameterCombination", ec2.create_volume, Size=10,
                     AvailabilityZone="local-1a", VolumeType="gp2", Iops=300)
        expect_error("MissingParameter", ec2.create_volume, Size=10, AvailabilityZone="local-1a",
                     VolumeType="io1")
        expect_error("InvalidParameterValue", ec2.create_volume, Size=10,
                     AvailabilityZone="local-1a", VolumeType="io1", Iops=1000)  # 50 per GiB.
        expect_error("InvalidParameterValue", ec2.create_volume, Size=10,
                     AvailabilityZone="local-1a", VolumeType="st1")  # 125 GiB at least.
        expect_error("InvalidParameterValue", ec2.modify_volume, VolumeId=b, Size=17,
                     VolumeType="io1")  # 3,000 IOPS (the default) on 17 GiB: past 50 per GiB.
        expect_error("InvalidParameterCombination", ec2.modify_volume, VolumeId=b,
                     VolumeType="gp2", Iops=300)  # gp2's IOPS follow from its size.
        v = ec2.describe_volumes(VolumeIds=[b])["Volumes"][0]
        check(v["Size"] == 16 and v["VolumeType"] == "gp3" and v["Iops"] == 3000,
              f"a refused ModifyVolume changed nothing: {v}")
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", work])
    print(f"{PASSED} passed, {FAILED} failed")
    return 0 if FAILED == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
