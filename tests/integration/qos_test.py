#!/usr/bin/env python3
"""Volume types hold NBD I/O to their rates (docs/qos.md), driven by fio's nbd engine and boto3
against stratad with its default --qos on: gp3's defaults, a provisioned gp3, io1, io2, gp2's
burst and then its baseline, st1's throughput in 1 MiB units, two volumes that do not take each
other's budget, ModifyVolume on a volume in use (the same connection speeds up), invalid types
refused with AWS's codes and nothing changed, and the CloudWatch figures (GetMetricData,
GetMetricStatistics, ListMetrics, the aws CLI) agreeing with what fio did. Runs are a few seconds
each; bounds are generous below (the machine is shared) and tight above. It ends by printing the
table of provisioned against measured figures (docs/qos.md's table comes from it).

Usage: qos_test.py BIN_DIR. Prints "N passed, M failed".
"""
import datetime
import json
import os
import subprocess
import sys
import threading
import time

import botocore

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_testlib import MiB, Checks, Daemon, scratch_dir  # noqa: E402

BIN = sys.argv[1]
SECONDS = 4
TABLE = []  # (volume, workload, provisioned, measured, unit)
LAST = {}   # The last fio run's totals.


check = Checks(verbose=True)


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
    LAST.update(ios=side["total_ios"], bytes=side["io_bytes"])
    return side["iops"], side["bw_bytes"]


def within(value, target, low=0.6, high=1.1):
    """Generous below (a shared machine may not reach the rate), strict above (the limit)."""
    return target * low <= value <= target * high


def row(volume, workload, provisioned, measured, unit):
    TABLE.append((volume, workload, provisioned, measured, unit))


def iops_log(work, name, uri, seconds, depth=32):
    """(ms, IOPS) half-second averages of a time-based 4 KiB random read run on one connection."""
    log = os.path.join(work, name)
    job = subprocess.Popen(
        ["fio", f"--name={name}", "--ioengine=nbd", f"--uri={uri}", "--rw=randread",
         "--bs=4k", f"--iodepth={depth}", "--size=512M", "--time_based", f"--runtime={seconds}",
         f"--write_iops_log={log}", "--log_avg_msec=500"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return job, log


def read_iops_log(work, name):
    samples = []
    for f in os.listdir(work):
        if f.startswith(f"{name}_iops") and f.endswith(".log"):
            for line in open(os.path.join(work, f)):
                ms, value = line.split(",")[:2]
                samples.append((int(ms), int(value)))
    return samples


def mean(values):
    return sum(values) / max(len(values), 1)


def metric(cw, volume, name, stat, start, end, period=1):
    """(timestamps, values) of one AWS/EBS metric, oldest first."""
    r = cw.get_metric_data(
        MetricDataQueries=[{"Id": "m", "MetricStat": {
            "Metric": {"Namespace": "AWS/EBS", "MetricName": name,
                       "Dimensions": [{"Name": "VolumeId", "Value": volume}]},
            "Period": period, "Stat": stat}}],
        StartTime=start, EndTime=end, ScanBy="TimestampAscending")["MetricDataResults"][0]
    return r["Timestamps"], r["Values"]


def check_metrics(d, cw, gp3, gp2, reads, writes, start):
    """The CloudWatch figures of gp3 agree with the fio runs made on it since `start`."""
    time.sleep(2.5)  # Samples are taken as each second ends.
    end = datetime.datetime.now(datetime.timezone.utc)
    _, ops = metric(cw, gp3, "VolumeReadOps", "Sum", start, end)
    check(abs(sum(ops) - reads) <= max(reads * 0.01, 2),
          f"VolumeReadOps sums to fio's reads: {sum(ops):.0f} of {reads}")
    check(0 < max(ops) <= 3000 * 1.1, f"no second holds more than 3,000 reads: {max(ops):.0f}")
    _, wbytes = metric(cw, gp3, "VolumeWriteBytes", "Sum", start, end)
    check(abs(sum(wbytes) - writes * 4096) <= max(writes * 4096 * 0.01, 8192),
          f"VolumeWriteBytes: {sum(wbytes):.0f} for {writes} 4 KiB writes")
    _, minute = metric(cw, gp3, "VolumeReadOps", "Sum", start, end, period=3600)
    check(len(minute) == 1 and minute[0] == sum(ops), f"a longer period sums the seconds: {minute}")
    _, queue = metric(cw, gp3, "VolumeQueueLength", "Maximum", start, end)
    check(0 < max(queue) <= 64, f"VolumeQueueLength while held to its rate: {max(queue):.1f}")
    _, idle = metric(cw, gp3, "VolumeIdleTime", "Sum", start, end, period=3600)
    check(len(idle) == 1 and idle[0] >= 2, f"VolumeIdleTime counts the idle seconds: {idle}")
    stats = cw.get_metric_statistics(
        Namespace="AWS/EBS", MetricName="VolumeReadBytes",
        Dimensions=[{"Name": "VolumeId", "Value": gp3}], StartTime=start, EndTime=end,
        Period=60, Statistics=["Sum", "SampleCount"])["Datapoints"]
    check(stats and all(p["Unit"] == "Bytes" for p in stats),
          f"GetMetricStatistics VolumeReadBytes: {stats[:2]}")
    # A gp2 of 1,000 GiB has a 3,000 IOPS baseline and no credit bucket: no BurstBalance.
    big_gp2 = d.client().create_volume(Size=1000, AvailabilityZone="local-1a",
                                       VolumeType="gp2")["VolumeId"]
    listed = cw.list_metrics(Namespace="AWS/EBS")["Metrics"]
    names = {(m["Dimensions"][0]["Value"], m["MetricName"]) for m in listed}
    check((gp3, "VolumeReadOps") in names and (gp3, "BurstBalance") not in names
          and (gp2, "BurstBalance") in names and (big_gp2, "VolumeReadOps") in names
          and (big_gp2, "BurstBalance") not in names, f"ListMetrics: {len(listed)} metrics")
    expect_error("InvalidParameterValue", cw.get_metric_data, MetricDataQueries=[
        {"Id": "m", "MetricStat": {"Metric": {"Namespace": "AWS/EBS", "MetricName": "VolumeReadOps"},
                                   "Period": 1, "Stat": "p99"}}], StartTime=start, EndTime=end)
    far = cw.get_metric_statistics(
        Namespace="AWS/EBS", MetricName="VolumeReadOps",
        Dimensions=[{"Name": "VolumeId", "Value": gp3}], StartTime=datetime.datetime(1970, 1, 1),
        EndTime=datetime.datetime(9999, 1, 1), Period=86400, Statistics=["Sum"])["Datapoints"]
    check(sum(p["Sum"] for p in far) == sum(ops), f"the whole of time at once: {far}")
    expect_error("InvalidParameterValue", cw.get_metric_statistics, Namespace="AWS/EBS",
                 MetricName="VolumeReadOps", StartTime=end, EndTime=start, Period=60,
                 Statistics=["Sum"])
    # strata stats VOL: the same figures, per second.
    r = subprocess.run([os.path.join(BIN, "strata"), "--data-dir", d.data_dir, "--endpoint",
                        f"http://127.0.0.1:{d.api}", "stats", gp3, "--seconds", "900"],
                       capture_output=True, text=True, timeout=60)
    rows = json.loads(r.stdout)["Seconds"] if r.returncode == 0 else []
    check(sum(x.get("VolumeReadOps", 0) for x in rows) == sum(ops)
          and all("BurstBalance" not in x for x in rows),
          f"strata stats VOL: {len(rows)} seconds {r.stderr[-300:]}")
    # The aws CLI, as users run it.
    env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=os.path.join(d.data_dir, "credentials"),
               AWS_CONFIG_FILE=os.path.join(d.data_dir, "config"))
    r = subprocess.run(["aws", "--endpoint-url", f"http://127.0.0.1:{d.api}", "cloudwatch",
                        "get-metric-statistics", "--namespace", "AWS/EBS", "--metric-name",
                        "VolumeWriteOps", "--dimensions", f"Name=VolumeId,Value={gp3}",
                        "--start-time", start.isoformat(), "--end-time", end.isoformat(),
                        "--period", "3600", "--statistics", "Sum", "--output", "json"],
                       capture_output=True, text=True, env=env, timeout=60)
    points = json.loads(r.stdout)["Datapoints"] if r.returncode == 0 else []
    check(len(points) == 1 and abs(points[0]["Sum"] - writes) <= max(writes * 0.01, 2),
          f"aws cloudwatch get-metric-statistics: {points} {r.stderr[-300:]}")


def main():
    work = scratch_dir("strata-qos-")
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
        start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=2)
        iops, _ = fio(work, d.uri(gp3), "randread", "4k")
        reads = LAST["ios"]
        check(within(iops, 3000), f"gp3 4 KiB random reads over 2 connections: {iops:.0f} IOPS")
        row("gp3 8 GiB (defaults)", "4 KiB random read, 2 connections", 3000, iops, "IOPS")
        time.sleep(2)  # Idle seconds, for VolumeIdleTime.
        iops, _ = fio(work, d.uri(gp3), "randwrite", "4k", jobs=1)
        writes = LAST["ios"]
        check(within(iops, 3000), f"gp3 4 KiB random writes: {iops:.0f} IOPS")
        row("gp3 8 GiB (defaults)", "4 KiB random write", 3000, iops, "IOPS")
        _, bw = fio(work, d.uri(gp3), "read", "1M", depth=4)
        reads += LAST["ios"]
        check(within(bw, 125 * MiB), f"gp3 1 MiB reads: {bw / MiB:.0f} MiB/s")
        row("gp3 8 GiB (defaults)", "1 MiB sequential read", 125, bw / MiB, "MiB/s")

        # Provisioned gp3 and io2.
        fast = volume(16, VolumeType="gp3", Iops=6000, Throughput=400)
        iops, _ = fio(work, d.uri(fast), "randread", "4k", depth=32)
        check(within(iops, 6000), f"gp3 at 6,000 IOPS: {iops:.0f}")
        row("gp3 16 GiB, 6,000 IOPS, 400 MiB/s", "4 KiB random read", 6000, iops, "IOPS")
        _, bw = fio(work, d.uri(fast), "read", "1M", depth=8)
        check(within(bw, 400 * MiB), f"gp3 at 400 MiB/s: {bw / MiB:.0f} MiB/s")
        row("gp3 16 GiB, 6,000 IOPS, 400 MiB/s", "1 MiB sequential read", 400, bw / MiB, "MiB/s")
        io2 = volume(20, VolumeType="io2", Iops=2000)
        iops, _ = fio(work, d.uri(io2), "randread", "4k")
        check(within(iops, 2000), f"io2 at 2,000 IOPS: {iops:.0f}")
        row("io2 20 GiB, 2,000 IOPS", "4 KiB random read", 2000, iops, "IOPS")
        io1 = volume(20, VolumeType="io1", Iops=1000)
        iops, _ = fio(work, d.uri(io1), "randwrite", "4k")
        check(within(iops, 1000), f"io1 at 1,000 IOPS: {iops:.0f}")
        row("io1 20 GiB, 1,000 IOPS", "4 KiB random write", 1000, iops, "IOPS")

        # gp2 of 10 GiB: a 100 IOPS baseline, bursting at 3,000 on its credits.
        gp2 = volume(10, VolumeType="gp2")
        check(ec2.describe_volumes(VolumeIds=[gp2])["Volumes"][0]["Iops"] == 100,
              "gp2 shows its baseline as Iops")
        iops, _ = fio(work, d.uri(gp2), "randread", "4k")
        check(within(iops, 3000), f"gp2 bursts at 3,000 IOPS: {iops:.0f}")
        row("gp2 10 GiB (full bucket)", "4 KiB random read", 3000, iops, "IOPS")
        check_metrics(d, d.client("cloudwatch"), gp3, gp2, reads, writes, start)

        # gp2 burst, then baseline: a volume whose bucket is nearly spent (0.2% of 5.4 million
        # credits: about 3.7 s at 3,000 IOPS less the 100 it earns) drops to its baseline.
        spent = volume(33, VolumeType="gp2", TagSpecifications=[{
            "ResourceType": "volume", "Tags": [{"Key": "strata:burst-balance", "Value": "0.2"}]}])
        job, _ = iops_log(work, "burst", d.uri(spent), 9)
        _, err = job.communicate(timeout=120)
        samples = read_iops_log(work, "burst")
        burst = mean([v for ms, v in samples if 500 <= ms <= 2500])
        base = mean([v for ms, v in samples if ms >= 6000])
        check(job.returncode == 0 and within(burst, 3000) and within(base, 100, 0.6, 1.3),
              f"gp2 bursts at {burst:.0f} IOPS, then keeps its baseline at {base:.0f} {err[-200:]}")
        row("gp2 33 GiB, bucket at 0.2%", "4 KiB random read, first 2 s", 3000, burst, "IOPS")
        row("gp2 33 GiB, bucket at 0.2%", "4 KiB random read, after 6 s", 100, base, "IOPS")
        time.sleep(1.5)
        now = datetime.datetime.now(datetime.timezone.utc)
        _, balance = metric(d.client("cloudwatch"), spent, "BurstBalance", "Average",
                            now - datetime.timedelta(seconds=15), now)
        check(balance and balance[0] <= 0.21 and balance[-1] < 0.01,
              f"BurstBalance runs down to nothing: {balance[:1]} .. {balance[-1:]}")
        expect_error("InvalidParameterValue", ec2.create_tags, Resources=[spent],
                     Tags=[{"Key": "strata:burst-balance", "Value": "150"}])

        # st1 of 125 GiB: 250 MiB/s per TiB of burst (30.5 MiB/s), counted in 1 MiB units, so
        # random 4 KiB reads get about 30 a second and sequential ones the full throughput.
        st1 = volume(125, VolumeType="st1")
        _, bw = fio(work, d.uri(st1), "read", "1M", depth=4)
        check(within(bw, 30.5 * MiB), f"st1 sequential 1 MiB: {bw / MiB:.1f} MiB/s")
        row("st1 125 GiB", "1 MiB sequential read", 30.5, bw / MiB, "MiB/s")
        iops, _ = fio(work, d.uri(st1), "randread", "4k", depth=4, jobs=1)
        check(within(iops, 30.5, 0.6, 1.3), f"st1 random 4 KiB, a whole unit each: {iops:.1f} IOPS")
        row("st1 125 GiB", "4 KiB random read (1 MiB units)", 30.5, iops, "IOPS")

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
        row("two gp3 side by side", "4 KiB random read, each", 3000,
            min(results["a"][0], results["b"][0]), "IOPS")

        # ModifyVolume on a volume in use: fio's one connection runs at the new rate, with no
        # reconnect (its IOPS log, half-second averages, before and after the call).
        job, _ = iops_log(work, "modify", d.uri(a), 7)
        time.sleep(3.5)
        ec2.modify_volume(VolumeId=a, Iops=8000, Throughput=250)
        _, err = job.communicate(timeout=120)
        samples = read_iops_log(work, "modify")
        before = [v for ms, v in samples if 1000 <= ms <= 3000]
        after = [v for ms, v in samples if ms >= 5000]
        b_avg = sum(before) / max(len(before), 1)
        a_avg = sum(after) / max(len(after), 1)
        check(job.returncode == 0 and within(b_avg, 3000, 0.7) and within(a_avg, 8000, 0.6),
              f"ModifyVolume applies without reconnecting: {b_avg:.0f} then {a_avg:.0f} IOPS "
              f"{err[-200:]}")
        row("gp3 modified in use", "4 KiB random read, after 3,000 -> 8,000", 8000, a_avg, "IOPS")
        mod = ec2.describe_volumes_modifications(VolumeIds=[a])["VolumesModifications"][0]
        check(mod["TargetIops"] == 8000 and mod["OriginalIops"] == 3000
              and mod["ModificationState"] in ("modifying", "optimizing", "completed"),
              f"DescribeVolumesModifications: {mod}")

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
    print("\n| volume | workload | provisioned | measured | ratio |")
    print("|---|---|---:|---:|---:|")
    for volume_, workload, target, measured, unit in TABLE:
        print(f"| {volume_} | {workload} | {target:,} {unit} | {measured:,.0f} | "
              f"{measured / target:.2f} |")
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
