#!/usr/bin/env python3
"""Drives stratad's AWS-compatible API with the real clients: boto3 and the aws CLI.

Usage: api_test.py BIN_DIR. Starts stratad on a free loopback port with a fresh store, runs the
workflows, stops it with SIGTERM. Prints "N passed, M failed".
"""
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
import botocore
import botocore.config
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from strata_testlib import Checks, scratch_dir  # noqa: E402

BIN = sys.argv[1]


check = Checks()


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except botocore.exceptions.ClientError as e:
        got = e.response["Error"]["Code"]
        check(got == code, f"expected {code}, got {got}: {e}")
        return e
    check(False, f"expected {code}, call succeeded")
    return None


def check_instances_always_have_a_way_to_their_disks(work):
    """stratad --nbd-listen without a unix socket serves DIR/nbd.sock too (instances' VMs boot
    from it); --nbd-listen off with VMs on is refused at start, not a running instance without
    a machine later."""
    data = os.path.join(work, "tcp-only")
    log = open(os.path.join(work, "tcp-only.log"), "w+")
    proc = subprocess.Popen([f"{BIN}/stratad", "--data-dir", data, "--api-listen", "127.0.0.1:0",
                             "--nbd-listen", "127.0.0.1:0"], stderr=log,
                            env={k: v for k, v in os.environ.items() if k != "STRATA_QUIET"})
    text = ""
    for _ in range(200):
        log.seek(0)
        text = log.read()
        if "NBD on" in text:
            break
        time.sleep(0.05)
    line = next((l for l in text.splitlines() if "NBD on" in l), "")
    check(f"unix:{data}/nbd.sock" in line, f"a TCP-only --nbd-listen also serves the socket: {line}")
    check(os.path.exists(os.path.join(data, "nbd.sock")), "DIR/nbd.sock exists")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    refused = subprocess.run([f"{BIN}/stratad", "--data-dir", os.path.join(work, "no-nbd"),
                              "--api-listen", "127.0.0.1:0", "--nbd-listen", "off"],
                             capture_output=True, text=True, timeout=60)
    check(refused.returncode != 0 and "--vm off" in refused.stderr,
          f"--nbd-listen off with VMs is refused: {refused.returncode} {refused.stderr[-300:]}")


def main():
    work = scratch_dir("strata-api-")
    check_instances_always_have_a_way_to_their_disks(work)
    data = os.path.join(work, "data")
    env = dict(os.environ, STRATA_QUIET="")
    env.pop("STRATA_QUIET")
    accounts = {}
    for name in ("alice", "bob", "carol"):
        out = subprocess.run([f"{BIN}/strata", "--data-dir", data, "account", "create", name],
                             check=True, capture_output=True, text=True).stdout
        accounts[name] = json.loads(out)
    log = open(os.path.join(work, "stratad.log"), "w+")
    daemon = subprocess.Popen([f"{BIN}/stratad", "--data-dir", data, "--api-listen", "127.0.0.1:0",
                               "--region", "local-1", "--region", "local-2",
                               "--modifying-seconds", "1", "--optimize-rate", "1G"],
                              stderr=log, env=env)
    port = None
    for _ in range(200):
        log.seek(0)
        m = re.search(r"API on http://127\.0\.0\.1:(\d+)", log.read())
        if m:
            port = int(m.group(1))
            break
        time.sleep(0.05)
    check(port is not None, "stratad printed its API port")
    endpoint = f"http://127.0.0.1:{port}"
    mode = os.stat(os.path.join(data, "accounts")).st_mode & 0o777
    check(mode == 0o600, f"DIR/accounts holds secrets and is owner-only (mode {oct(mode)})")

    def client(name, region="local-1", service="ec2"):
        a = accounts[name]
        return boto3.client(service, endpoint_url=endpoint, region_name=region,
                            aws_access_key_id=a["AccessKeyId"],
                            aws_secret_access_key=a["SecretAccessKey"])

    try:
        run(client, accounts, endpoint, data)
    finally:
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(timeout=60)
        check(rc == 0, f"stratad exit status {rc}")
        log.seek(0)
        check("stopped" in log.read(), "stratad stopped cleanly")
    return check.summary()


def run(client, accounts, endpoint, data):
    alice, bob, carol = client("alice"), client("bob"), client("carol")
    alice_id, bob_id = accounts["alice"]["AccountId"], accounts["bob"]["AccountId"]

    # Volumes: create with tags, describe with filters and pagination.
    vol = alice.create_volume(Size=1, AvailabilityZone="local-1a", VolumeType="gp3",
                              TagSpecifications=[{"ResourceType": "volume",
                                                  "Tags": [{"Key": "Name", "Value": "web-1"}]}])
    vid = vol["VolumeId"]
    check(re.fullmatch(r"vol-[0-9a-f]{17}", vid), f"volume id {vid}")
    check(vol["Size"] == 1 and vol["State"] == "available", f"create_volume {vol}")
    for i in range(6):
        alice.create_volume(Size=2, AvailabilityZone="local-1a",
                            TagSpecifications=[{"ResourceType": "volume",
                                                "Tags": [{"Key": "Name", "Value": f"db-{i}"}]}])
    got = alice.describe_volumes(Filters=[{"Name": "tag:Name", "Values": ["web-?"]}])["Volumes"]
    check([v["VolumeId"] for v in got] == [vid], "tag filter with ? wildcard")
    got = alice.describe_volumes(Filters=[{"Name": "size", "Values": ["2"]},
                                          {"Name": "tag:Name", "Values": ["db-*"]}])["Volumes"]
    check(len(got) == 6, f"two filters: {len(got)}")
    page = alice.describe_volumes(MaxResults=5)
    check(len(page["Volumes"]) == 5 and "NextToken" in page, "first page of 5")
    rest = alice.describe_volumes(MaxResults=5, NextToken=page["NextToken"])
    check(len(rest["Volumes"]) == 2 and "NextToken" not in rest, "second page of 2")
    paginator = alice.get_paginator("describe_volumes")
    total = sum(len(p["Volumes"]) for p in paginator.paginate(PaginationConfig={"PageSize": 5}))
    check(total == 7, f"paginator total {total}")
    check(carol.describe_volumes()["Volumes"] == [], "another account sees no volumes")
    expect_error("InvalidVolume.NotFound", carol.delete_volume, VolumeId=vid)
    expect_error("InvalidVolume.NotFound", alice.describe_volumes, VolumeIds=["vol-0123456789abcdef0"])
    expect_error("InvalidParameterValue", alice.create_volume, Size=0, AvailabilityZone="local-1a")
    expect_error("InvalidParameterValue", alice.create_volume, Size=1, AvailabilityZone="local-1a",
                 VolumeType="fast")
    expect_error("InvalidParameterValue", alice.describe_volumes,
                 Filters=[{"Name": "no-such-filter", "Values": ["x"]}])

    # Idempotent create with ClientToken.
    a = alice.create_volume(Size=1, AvailabilityZone="local-1a", ClientToken="tok-1")
    b = alice.create_volume(Size=1, AvailabilityZone="local-1a", ClientToken="tok-1")
    check(a["VolumeId"] == b["VolumeId"], "ClientToken makes CreateVolume idempotent")
    alice.delete_volume(VolumeId=a["VolumeId"])

    # ModifyVolume: grow and change type; shrinking is refused.
    # io2 starts at 4 GiB: 3 GiB is refused whole (AWS's rule), nothing changes.
    expect_error("InvalidParameterValue", alice.modify_volume, VolumeId=vid, Size=3,
                 VolumeType="io2", Iops=3000)
    check(alice.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Size"] == 1, "io2 at 3 GiB: no change")
    mod = alice.modify_volume(VolumeId=vid, Size=4, VolumeType="io2", Iops=3000)["VolumeModification"]
    check(mod["TargetSize"] == 4 and mod["OriginalSize"] == 1 and mod["TargetVolumeType"] == "io2",
          f"modify_volume {mod}")
    # Modifying (1 s here), then optimizing (4 GiB at 1 GiB/s), then completed; the new size
    # and type are the volume's at once, and another modification waits for completion.
    check(mod["ModificationState"] == "modifying" and mod["Progress"] == 0 and "EndTime" not in mod,
          f"a new modification is modifying: {mod}")
    v = alice.describe_volumes(VolumeIds=[vid])["Volumes"][0]
    check(v["Size"] == 4 and v["VolumeType"] == "io2" and v["Iops"] == 3000, f"applied at once: {v}")
    expect_error("IncorrectModificationState", alice.modify_volume, VolumeId=vid, Iops=4000)
    check(alice.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Iops"] == 3000,
          "a refused second modification changed nothing")
    for _ in range(50):
        m = alice.describe_volumes_modifications(VolumeIds=[vid])["VolumesModifications"][0]
        if m["ModificationState"] != "modifying":
            break
        time.sleep(0.1)
    check(m["ModificationState"] == "optimizing" and 0 <= m["Progress"] < 100,
          f"then optimizing: {m}")
    expect_error("InvalidParameterValue", alice.modify_volume, VolumeId=vid, Size=2)
    check(alice.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Size"] == 4, "grown to 4 GiB")

    # Snapshots: pending then completed, filters, tags.
    snap = alice.create_snapshot(VolumeId=vid, Description="nightly",
                                 TagSpecifications=[{"ResourceType": "snapshot",
                                                     "Tags": [{"Key": "tier", "Value": "gold"}]}])
    sid = snap["SnapshotId"]
    check(snap["State"] in ("pending", "completed") and snap["OwnerId"] == alice_id, f"snapshot {snap}")
    alice.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig={"Delay": 1})
    s = alice.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    check(s["State"] == "completed" and s["Progress"] == "100%" and s["VolumeSize"] == 4, f"{s}")
    got = alice.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:tier", "Values": ["g*"]}])
    check([x["SnapshotId"] for x in got["Snapshots"]] == [sid], "snapshot tag filter")
    got = alice.describe_snapshots(Filters=[{"Name": "description", "Values": ["night*"]}])
    check(len(got["Snapshots"]) == 1, "description filter")

    # A volume from the snapshot.
    clone = alice.create_volume(SnapshotId=sid, AvailabilityZone="local-1a")
    check(clone["SnapshotId"] == sid and clone["Size"] == 4, f"clone {clone}")

    # Sharing: bob may create a volume from it, carol may not.
    expect_error("InvalidSnapshot.NotFound", bob.create_volume, SnapshotId=sid, AvailabilityZone="local-1a")
    alice.modify_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission",
                                    OperationType="add", UserIds=[bob_id])
    attr = alice.describe_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
    check(attr["CreateVolumePermissions"] == [{"UserId": bob_id}], f"attribute {attr}")
    shared = bob.describe_snapshots(RestorableByUserIds=["self"])["Snapshots"]
    check([x["SnapshotId"] for x in shared] == [sid], "bob sees the shared snapshot")
    bob_vol = bob.create_volume(SnapshotId=sid, AvailabilityZone="local-1a")
    check(bob_vol["SnapshotId"] == sid, "bob creates a volume from the shared snapshot")
    expect_error("InvalidSnapshot.NotFound", carol.create_volume, SnapshotId=sid, AvailabilityZone="local-1a")
    check(carol.describe_snapshots(RestorableByUserIds=["self"])["Snapshots"] == [], "carol sees nothing")
    expect_error("InvalidSnapshot.NotFound", bob.delete_snapshot, SnapshotId=sid)
    expect_error("InvalidParameterValue", alice.modify_snapshot_attribute, SnapshotId=sid,
                 Attribute="createVolumePermission", OperationType="add", UserIds=["not-an-account"])
    alice.reset_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
    expect_error("InvalidSnapshot.NotFound", bob.create_volume, SnapshotId=sid, AvailabilityZone="local-1a")

    # Tags.
    alice.create_tags(Resources=[vid, sid], Tags=[{"Key": "env", "Value": "prod"}])
    check({"Key": "env", "Value": "prod"} in alice.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Tags"],
          "create_tags on a volume")
    alice.delete_tags(Resources=[sid], Tags=[{"Key": "env", "Value": "staging"}])
    tags = alice.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0].get("Tags", [])
    check({"Key": "env", "Value": "prod"} in tags, "delete_tags with another value keeps the tag")
    alice.delete_tags(Resources=[sid], Tags=[{"Key": "env"}])
    tags = alice.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0].get("Tags", [])
    check(all(t["Key"] != "env" for t in tags), "delete_tags")
    expect_error("InvalidVolume.NotFound", carol.create_tags, Resources=[vid],
                 Tags=[{"Key": "x", "Value": "y"}])

    # Attachment groups: attach two volumes to a local group, snapshot them at one point in time.
    group = "i-0123456789abcdef0"
    second = alice.create_volume(Size=1, AvailabilityZone="local-1a",
                                 TagSpecifications=[{"ResourceType": "volume",
                                                     "Tags": [{"Key": "role", "Value": "logs"}]}])["VolumeId"]
    att = alice.attach_volume(VolumeId=vid, InstanceId=group, Device="/dev/sdf")
    check(att["State"] == "attached" and att["InstanceId"] == group, f"attach {att}")
    alice.attach_volume(VolumeId=second, InstanceId=group, Device="/dev/sdg")
    expect_error("VolumeInUse", alice.attach_volume, VolumeId=vid, InstanceId=group, Device="/dev/sdh")
    expect_error("VolumeInUse", alice.delete_volume, VolumeId=vid)
    v = alice.describe_volumes(VolumeIds=[vid])["Volumes"][0]
    check(v["State"] == "in-use" and v["Attachments"][0]["Device"] == "/dev/sdf", f"in-use {v}")
    got = alice.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [group]}])["Volumes"]
    check(len(got) == 2, "attachment.instance-id filter")
    multi = alice.create_snapshots(InstanceSpecification={"InstanceId": group}, Description="group",
                                   CopyTagsFromSource="volume")["Snapshots"]
    check(sorted(x["VolumeId"] for x in multi) == sorted([vid, second]), f"create_snapshots {multi}")
    logs = [x for x in multi if x["VolumeId"] == second][0]
    check({"Key": "role", "Value": "logs"} in logs["Tags"], "CopyTagsFromSource=volume")
    alice.get_waiter("snapshot_completed").wait(SnapshotIds=[x["SnapshotId"] for x in multi],
                                                WaiterConfig={"Delay": 1})
    expect_error("InvalidInstanceId.NotFound", alice.create_snapshots,
                 InstanceSpecification={"InstanceId": "i-00000000000000000"})
    det = alice.detach_volume(VolumeId=second)
    check(det["State"] == "detached", f"detach {det}")
    expect_error("IncorrectState", alice.detach_volume, VolumeId=second)
    alice.detach_volume(VolumeId=vid, InstanceId=group)
    check(alice.describe_volumes(VolumeIds=[vid])["Volumes"][0]["State"] == "available", "available again")

    # Copy within the region, modifications and tags listings.
    copy = alice.copy_snapshot(SourceSnapshotId=sid, SourceRegion="local-1", Description="copy")
    c = alice.describe_snapshots(SnapshotIds=[copy["SnapshotId"]])["Snapshots"][0]
    check(c["State"] == "completed" and c["Description"] == "copy", f"copy {c}")
    seen = set()
    for _ in range(300):
        mods = alice.describe_volumes_modifications(VolumeIds=[vid])["VolumesModifications"]
        seen.add(mods[0]["ModificationState"])
        if mods[0]["ModificationState"] == "completed":
            break
        time.sleep(0.1)
    check(len(mods) == 1 and mods[0]["TargetSize"] == 4 and mods[0]["Progress"] == 100
          and "EndTime" in mods[0] and mods[0]["ModificationState"] == "completed",
          f"modifications {mods} (states seen: {sorted(seen)})")
    check(carol.describe_volumes_modifications()["VolumesModifications"] == [],
          "carol sees no modification of alice's volume")
    # CloudWatch: alice lists her volume's metrics; carol sees neither them nor their data.
    now = datetime.datetime.now(datetime.timezone.utc)
    query = dict(MetricDataQueries=[{"Id": "r", "MetricStat": {"Metric": {
        "Namespace": "AWS/EBS", "MetricName": "VolumeIdleTime",
        "Dimensions": [{"Name": "VolumeId", "Value": vid}]}, "Period": 60, "Stat": "Sum"}}],
        StartTime=now - datetime.timedelta(minutes=5), EndTime=now)
    mine = client("alice", service="cloudwatch")
    theirs = client("carol", service="cloudwatch")
    check(any(m["Dimensions"][0]["Value"] == vid for m in mine.list_metrics()["Metrics"]),
          "ListMetrics lists alice's volume for alice")
    check(not any(m["Dimensions"][0]["Value"] == vid for m in theirs.list_metrics()["Metrics"]),
          "ListMetrics does not list it for carol")
    check(mine.get_metric_data(**query)["MetricDataResults"][0]["Values"] != [],
          "alice reads her volume's VolumeIdleTime")
    check(theirs.get_metric_data(**query)["MetricDataResults"][0]["Values"] == [],
          "carol reads no data of alice's volume")
    alice.modify_volume(VolumeId=vid, Iops=4000)  # Completed: another may start.
    check(alice.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Iops"] == 4000,
          "a modification after completion applies")
    tags = alice.describe_tags(Filters=[{"Name": "resource-id", "Values": [vid]}])["Tags"]
    check({"Key": "Name", "Value": "web-1", "ResourceId": vid, "ResourceType": "volume"} in tags, f"tags {tags}")
    check(carol.describe_tags()["Tags"] == [], "carol has no tags")

    # Deleting: a volume with a pending snapshot is refused; a snapshot deletes.
    alice.delete_snapshot(SnapshotId=sid)
    expect_error("InvalidSnapshot.NotFound", alice.describe_snapshots, SnapshotIds=[sid])
    check(alice.describe_volumes(VolumeIds=[clone["VolumeId"]])["Volumes"][0]["SnapshotId"] == sid,
          "a volume made from a deleted snapshot keeps working")
    expect_error("InvalidAction", alice.describe_vpcs)  # Not served by Strata.
    expect_error("DryRunOperation", alice.describe_volumes, DryRun=True)

    run_ebs_direct(client, accounts, endpoint)

    # A stalled client (half a request, then silence) does not stall the others.
    host, port = endpoint[len("http://"):].split(":")
    stalled = [socket.create_connection((host, int(port))) for _ in range(8)]
    for sock in stalled:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Len")
    a = accounts["alice"]
    impatient = boto3.client("ec2", endpoint_url=endpoint, region_name="local-1",
                             aws_access_key_id=a["AccessKeyId"], aws_secret_access_key=a["SecretAccessKey"],
                             config=botocore.config.Config(read_timeout=20, connect_timeout=20,
                                                           retries={"max_attempts": 1}))
    try:
        impatient.describe_volumes()
        check(True, "")
    except botocore.exceptions.BotoCoreError as e:
        check(False, f"a request while 8 connections stall: {e}")
    for sock in stalled:
        sock.close()

    # Regions: each its own resources, all listed by DescribeRegions.
    regions = alice.describe_regions()["Regions"]
    check(sorted(r["RegionName"] for r in regions) == ["local-1", "local-2"] and
          all(r["Endpoint"] == endpoint and r["OptInStatus"] == "opt-in-not-required" for r in regions),
          f"DescribeRegions lists the regions of --region: {regions}")
    check([r["RegionName"] for r in alice.describe_regions(RegionNames=["local-2"])["Regions"]] == ["local-2"],
          "DescribeRegions by name")
    expect_error("InvalidParameterValue", alice.describe_regions, RegionNames=["mars-1"])
    west = client("alice", region="local-2")
    far = west.create_volume(Size=1, AvailabilityZone="local-2a")["VolumeId"]
    check(far not in [v["VolumeId"] for v in alice.describe_volumes()["Volumes"]] and
          [v["VolumeId"] for v in west.describe_volumes()["Volumes"]] == [far],
          "a volume belongs to its region")
    west.delete_volume(VolumeId=far)

    # Auth: unknown region, unsigned, badly signed, stale, unknown key: refused, nothing changes.
    expect_error("InvalidRegion", client("alice", region="mars-1").describe_volumes)
    before = len(alice.describe_volumes()["Volumes"])
    body = "Action=CreateVolume&Version=2016-11-15&Size=1&AvailabilityZone=local-1a"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}

    def raw(hdrs):
        req = urllib.request.Request(endpoint + "/", data=body.encode(), headers=hdrs, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    status, text = raw(headers)
    check(status == 401 and "<Code>AuthFailure</Code>" in text, f"unsigned: {status} {text}")

    def signed(secret, access=None, when=None):
        if when is None:  # botocore's own signer.
            creds = Credentials(access or accounts["alice"]["AccessKeyId"], secret)
            req = AWSRequest(method="POST", url=endpoint + "/", data=body, headers=dict(headers))
            SigV4Auth(creds, "ec2", "local-1").add_auth(req)
            return dict(req.headers.items())
        # An independent SigV4 signer, to sign with a chosen (stale) time.
        amz = when.strftime("%Y%m%dT%H%M%SZ")
        host = endpoint[len("http://"):]
        canonical = "\n".join(["POST", "/", "", f"content-type:{headers['Content-Type']}", f"host:{host}",
                               f"x-amz-date:{amz}", "", "content-type;host;x-amz-date",
                               hashlib.sha256(body.encode()).hexdigest()])
        scope = f"{amz[:8]}/local-1/ec2/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + secret).encode()
        for part in (amz[:8], "local-1", "ec2", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        access = access or accounts["alice"]["AccessKeyId"]
        return dict(headers, **{"X-Amz-Date": amz, "Authorization":
                    f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                    f"SignedHeaders=content-type;host;x-amz-date, Signature={sig}"})

    good = signed(accounts["alice"]["SecretAccessKey"])
    status, text = raw(good)
    check(status == 200 and "<volumeId>" in text, f"hand-signed request works: {status} {text[:200]}")
    # The same signed request sent again (captured and replayed) is refused and creates nothing.
    status, text = raw(good)
    check(status == 401 and "AuthFailure" in text and "replay" in text,
          f"a replayed request is refused: {status} {text[:300]}")
    status, text = raw(signed("wrong-secret"))
    check(status == 403 and "SignatureDoesNotMatch" in text, f"bad signature: {status}")
    # A second later than botocore's signature, which would otherwise be the same one (a replay).
    now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
    status, text = raw(signed(accounts["alice"]["SecretAccessKey"], when=now))
    check(status == 200, f"independent signer agrees with the server: {status} {text[:200]}")
    late = now - datetime.timedelta(minutes=20)
    status, text = raw(signed(accounts["alice"]["SecretAccessKey"], when=late))
    check(status == 401 and "AuthFailure" in text, f"replayed late: {status} {text[:200]}")
    status, text = raw(signed("x", access="AKIAUNKNOWNUNKNOWN00"))
    check(status == 403 and "InvalidClientTokenId" in text, f"unknown key: {status}")
    check(len(alice.describe_volumes()["Volumes"]) == before + 2, "only the good requests created volumes")

    # The aws CLI, unchanged, against the same endpoint.
    cli_env = dict(os.environ, AWS_ACCESS_KEY_ID=accounts["alice"]["AccessKeyId"],
                   AWS_SECRET_ACCESS_KEY=accounts["alice"]["SecretAccessKey"],
                   AWS_DEFAULT_REGION="local-1")
    out = subprocess.run(["aws", "--endpoint-url", endpoint, "ec2", "describe-volumes",
                          "--filters", "Name=tag:Name,Values=web-1", "--query", "Volumes[].VolumeId",
                          "--output", "text"], env=cli_env, capture_output=True, text=True)
    check(out.returncode == 0 and out.stdout.strip() == vid, f"aws cli describe-volumes: {out}")
    out = subprocess.run(["aws", "--endpoint-url", endpoint, "ec2", "delete-volume", "--volume-id",
                          "vol-0123456789abcdef0"], env=cli_env, capture_output=True, text=True)
    check(out.returncode != 0 and "InvalidVolume.NotFound" in out.stderr, f"aws cli error: {out.stderr}")



def run_ebs_direct(client, accounts, endpoint):
    a = accounts["alice"]
    ebs = boto3.client("ebs", endpoint_url=endpoint, region_name="local-1",
                       aws_access_key_id=a["AccessKeyId"], aws_secret_access_key=a["SecretAccessKey"])
    ec2 = client("alice")
    block = 512 * 1024
    image = bytearray(os.urandom(4 * 1024 * 1024))
    image[2 * block:3 * block] = bytes(block)  # One all-zero block: not listed.

    def put(snapshot_id, index, data):
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        ebs.put_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockData=data, DataLength=len(data),
                               Checksum=digest, ChecksumAlgorithm="SHA256")
        return hashlib.sha256(data).digest()

    start = ebs.start_snapshot(VolumeSize=1, Description="uploaded", Timeout=60,
                               Tags=[{"Key": "src", "Value": "image"}])
    sid = start["SnapshotId"]
    check(start["Status"] == "pending" and start["BlockSize"] == block, f"start_snapshot {start}")
    digests = {}
    for i in range(8):
        if i == 2:
            continue
        digests[i] = put(sid, i, bytes(image[i * block:(i + 1) * block]))
    e = expect_error("ValidationException", ebs.put_snapshot_block, SnapshotId=sid, BlockIndex=9,
                     BlockData=bytes(block), DataLength=block,
                     Checksum=base64.b64encode(b"x" * 32).decode(), ChecksumAlgorithm="SHA256")
    linear = base64.b64encode(hashlib.sha256(b"".join(digests[i] for i in sorted(digests))).digest()).decode()
    expect_error("ValidationException", ebs.complete_snapshot, SnapshotId=sid, ChangedBlocksCount=7,
                 Checksum=base64.b64encode(b"y" * 32).decode(), ChecksumAlgorithm="SHA256",
                 ChecksumAggregationMethod="LINEAR")
    expect_error("ValidationException", ebs.complete_snapshot, SnapshotId=sid, ChangedBlocksCount=6)
    done = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=7, Checksum=linear,
                                 ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    check(done["Status"] == "pending", f"complete_snapshot {done}")
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig={"Delay": 1})
    described = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
    check(described["VolumeId"] == "vol-ffffffff" and described["Description"] == "uploaded", f"{described}")
    listed = ebs.list_snapshot_blocks(SnapshotId=sid)
    indexes = [b["BlockIndex"] for b in listed["Blocks"]]
    check(indexes == [0, 1, 3, 4, 5, 6, 7], f"list_snapshot_blocks {indexes}")
    check(listed["VolumeSize"] == 1 and listed["BlockSize"] == block, "listing sizes")
    whole = bytearray(4 * 1024 * 1024)
    for b in listed["Blocks"]:
        got = ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])
        data = got["BlockData"].read()
        check(base64.b64encode(hashlib.sha256(data).digest()).decode() == got["Checksum"], "block checksum")
        whole[b["BlockIndex"] * block:(b["BlockIndex"] + 1) * block] = data
    check(whole == image, "the uploaded image reads back block for block")
    expect_error("ValidationException", ebs.get_snapshot_block, SnapshotId=sid, BlockIndex=0, BlockToken="bogus")
    page = ebs.list_snapshot_blocks(SnapshotId=sid, MaxResults=100, StartingBlockIndex=4)
    check([b["BlockIndex"] for b in page["Blocks"]] == [4, 5, 6, 7], "StartingBlockIndex")

    # A child of it with two blocks changed: ListChangedBlocks returns exactly those.
    child = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=sid)["SnapshotId"]
    d1 = put(child, 1, os.urandom(block))
    d5 = put(child, 5, os.urandom(block))
    ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=2)
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[child], WaiterConfig={"Delay": 1})
    changed = ebs.list_changed_blocks(FirstSnapshotId=sid, SecondSnapshotId=child)["ChangedBlocks"]
    check([b["BlockIndex"] for b in changed] == [1, 5], f"list_changed_blocks {changed}")
    check(all("FirstBlockToken" in b and "SecondBlockToken" in b for b in changed), "both tokens")
    vol = ec2.create_volume(SnapshotId=child, AvailabilityZone="local-1a")
    check(vol["SnapshotId"] == child and vol["Size"] == 1, "a volume from a direct snapshot")

    # Another account cannot read or write it; unknown snapshots are not found.
    c = accounts["carol"]
    carol = boto3.client("ebs", endpoint_url=endpoint, region_name="local-1",
                         aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"])
    expect_error("ResourceNotFoundException", carol.list_snapshot_blocks, SnapshotId=sid)
    expect_error("ResourceNotFoundException", ebs.list_snapshot_blocks, SnapshotId="snap-0123456789abcdef0")
    expect_error("ValidationException", ebs.start_snapshot, VolumeSize=70000)
    bad = boto3.client("ebs", endpoint_url=endpoint, region_name="local-1",
                       aws_access_key_id=a["AccessKeyId"], aws_secret_access_key="wrong")
    expect_error("InvalidSignatureException", bad.list_snapshot_blocks, SnapshotId=sid)


if __name__ == "__main__":
    sys.exit(main())
