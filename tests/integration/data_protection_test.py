#!/usr/bin/env python3
"""Data protection through the real clients (boto3 and the aws CLI): snapshot locks in
governance and compliance mode, Recycle Bin rules (rbin) for snapshots and images, restores from
the bin, a locked rule, expiry of bin entries, fast snapshot restore, the archive tier
(archival, temporary and permanent restores, and its refusals, among them a snapshot that a
pending cross-region copy reads), and what survives a restart of stratad.

stratad runs with --seconds-per-day 2, so a day of retention lasts 2 s and an hour 1/12 s, and
with an archive timing model of 1 s plus 1 GiB/s. Its second region, west-1, is behind a slow
link, so that a copy into it stays pending for a few seconds.

Usage: data_protection_test.py BIN_DIR. Prints "N passed, M failed".
"""
import datetime
import json
import os
import sys
import time

from strata_testlib import Checks, Daemon, error_code, scratch_dir, sh, wait_until

BIN = sys.argv[1]
DAY = 2.0  # --seconds-per-day
GROUP = "i-0abcdef0123456789"  # An instance id without a VM: the attachment group.
check = Checks()


def aws(daemon, *args):
    return daemon.aws(*args)


def raw_rbin(daemon, method, path, body):
    """A SigV4-signed rbin request with `body` sent as it is (boto3 validates values first)."""
    import urllib.request
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    url = f"http://127.0.0.1:{daemon.api}{path}"
    request = AWSRequest(method=method, url=url, data=body.encode(),
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(*daemon.admin_keys()), "rbin", "local-1").add_auth(request)
    req = urllib.request.Request(url, data=body.encode(), headers=dict(request.headers),
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, {"type": e.headers.get("x-amzn-ErrorType"), **json.loads(e.read() or b"{}")}


def snapshot_of(ec2, daemon, pattern, tags=None):
    """A completed snapshot of a fresh 1 GiB volume holding `pattern` in its first MiB."""
    vol = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
    ec2.attach_volume(VolumeId=vol, InstanceId=GROUP, Device=f"/dev/sd{chr(ord('f') + pattern)}")
    out = sh("qemu-io", "-f", "raw", "-c", f"write -P {pattern} 0 1M", daemon.uri(vol))
    check(out.returncode == 0 and "wrote 1048576/1048576" in out.stdout,
          f"qemu-io writes pattern {pattern}", out)
    spec = [{"ResourceType": "snapshot",
             "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()]}] if tags else []
    snap = ec2.create_snapshot(VolumeId=vol, TagSpecifications=spec)["SnapshotId"]
    wait_until(lambda: ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"]
             == "completed")
    ec2.detach_volume(VolumeId=vol)
    return vol, snap


def reads_back(daemon, snap, pattern):
    """The snapshot's export (read-only, by its id) holds `pattern` in its first MiB."""
    out = sh("qemu-io", "-r", "-f", "raw", "-c", f"read -P {pattern} 0 1M", daemon.uri(snap))
    return out.returncode == 0 and "read 1048576/1048576" in out.stdout


def visible(ec2, snap):
    return any(s["SnapshotId"] == snap for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"])


def in_bin(ec2, snap):
    return any(s["SnapshotId"] == snap for s in ec2.list_snapshots_in_recycle_bin()["Snapshots"])


def snapshot_locks(ec2, daemon):
    _, snap = snapshot_of(ec2, daemon, 1)
    # Bad requests change nothing.
    check(error_code(ec2.lock_snapshot, SnapshotId=snap, LockMode="governance", CoolOffPeriod=1,
                     LockDuration=30) == "InvalidParameterCombination",
          "a cooling-off period in governance mode is refused")
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    check(error_code(ec2.lock_snapshot, SnapshotId=snap, LockMode="governance", LockDuration=3,
                     ExpirationDate=future) == "InvalidParameterCombination",
          "a duration and an expiration date together are refused")
    check(error_code(ec2.lock_snapshot, SnapshotId=snap, LockMode="governance")
          == "InvalidParameterCombination", "a lock without duration or date is refused")
    check(error_code(ec2.lock_snapshot, SnapshotId="snap-0123456789abcdef0", LockMode="governance",
                     LockDuration=3) == "InvalidSnapshot.NotFound", "an unknown snapshot: NotFound")
    check(ec2.describe_locked_snapshots(SnapshotIds=[snap])["Snapshots"] == [],
          "after refusals the snapshot is not locked")

    # Governance: no deletion, by anyone; unlock, then delete.
    r = ec2.lock_snapshot(SnapshotId=snap, LockMode="governance", LockDuration=30)
    check(r["LockState"] == "governance" and r["LockDuration"] == 30, "governance lock", r)
    check(error_code(ec2.delete_snapshot, SnapshotId=snap) == "SnapshotLocked",
          "a locked snapshot cannot be deleted (boto3)")
    out = aws(daemon, "ec2", "delete-snapshot", "--snapshot-id", snap)
    check(out.returncode != 0 and "SnapshotLocked" in out.stderr,
          "a locked snapshot cannot be deleted (aws CLI)", out.stderr)
    listed = ec2.describe_locked_snapshots(
        Filters=[{"Name": "lock-state", "Values": ["governance"]}])["Snapshots"]
    check([s["SnapshotId"] for s in listed] == [snap], "DescribeLockedSnapshots by lock-state",
          listed)
    r = ec2.lock_snapshot(SnapshotId=snap, LockMode="governance", LockDuration=2)
    check(r["LockDuration"] == 2, "a governance lock can be shortened")
    ec2.unlock_snapshot(SnapshotId=snap)
    check(error_code(ec2.unlock_snapshot, SnapshotId=snap) == "SnapshotNotLocked",
          "unlocking an unlocked snapshot is refused")
    ec2.delete_snapshot(SnapshotId=snap)
    check(not visible(ec2, snap) and not in_bin(ec2, snap),
          "unlocked and with no rule, the snapshot is deleted")

    # Compliance: changeable in its cooling-off period, then only extended.
    _, snap = snapshot_of(ec2, daemon, 2)
    out = aws(daemon, "ec2", "lock-snapshot", "--snapshot-id", snap, "--lock-mode", "compliance",
              "--cool-off-period", "36", "--lock-duration", "40")
    r = json.loads(out.stdout or "{}")
    check(out.returncode == 0 and r.get("LockState") == "compliance-cooloff"
          and r.get("CoolOffPeriod") == 36, "aws ec2 lock-snapshot: compliance-cooloff", out)
    r = ec2.lock_snapshot(SnapshotId=snap, LockMode="compliance", CoolOffPeriod=36,
                          LockDuration=30)
    check(r["LockState"] == "compliance-cooloff" and r["LockDuration"] == 30,
          "in its cooling-off period a compliance lock can be shortened")
    time.sleep(36 / 24 * DAY + 0.3)
    locked = ec2.describe_locked_snapshots(SnapshotIds=[snap])["Snapshots"]
    check(locked and locked[0]["LockState"] == "compliance", "past cooling-off: compliance", locked)
    check(error_code(ec2.unlock_snapshot, SnapshotId=snap) == "SnapshotLocked",
          "a compliance lock past cooling-off cannot be unlocked")
    check(error_code(ec2.lock_snapshot, SnapshotId=snap, LockMode="compliance", LockDuration=10)
          == "SnapshotLocked", "... nor shortened")
    check(error_code(ec2.lock_snapshot, SnapshotId=snap, LockMode="governance", LockDuration=60)
          == "SnapshotLocked", "... nor changed to governance")
    r = ec2.lock_snapshot(SnapshotId=snap, LockMode="compliance", LockDuration=60)
    check(r["LockState"] == "compliance" and r["LockDuration"] == 60, "... but extended", r)
    check(error_code(ec2.delete_snapshot, SnapshotId=snap) == "SnapshotLocked",
          "a compliance-locked snapshot cannot be deleted")

    # Expiry by date: then deletable.
    _, snap2 = snapshot_of(ec2, daemon, 3)
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    ec2.lock_snapshot(SnapshotId=snap2, LockMode="governance", ExpirationDate=at)
    check(error_code(ec2.delete_snapshot, SnapshotId=snap2) == "SnapshotLocked",
          "locked until a date: not deletable before it")
    time.sleep(2.5)
    locked = ec2.describe_locked_snapshots(SnapshotIds=[snap2])["Snapshots"]
    check(locked and locked[0]["LockState"] == "expired", "the lock expired", locked)
    check(error_code(ec2.delete_snapshot, SnapshotId=snap2) is None, "an expired lock: deletable")
    return snap  # Locked in compliance mode for 60 days: checked after a restart.


def recycle_bin(ec2, rbin, daemon):
    # Bad rules change nothing.
    check(error_code(rbin.create_rule, ResourceType="EBS_VOLUME_X",
                     RetentionPeriod={"RetentionPeriodValue": 1, "RetentionPeriodUnit": "DAYS"})
          == "ValidationException", "a bad resource type is refused")
    for body, what in [
            ('{"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": {"RetentionPeriodValue": 0, '
             '"RetentionPeriodUnit": "DAYS"}}', "a retention of 0 days"),
            ('{"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": {"RetentionPeriodValue": "ten", '
             '"RetentionPeriodUnit": "DAYS"}}', "a retention that is not a number"),
            ('{"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": {"RetentionPeriodValue": 1, '
             '"RetentionPeriodUnit": "WEEKS"}}', "a retention in weeks"),
            ('{"ResourceType": "EBS_SNAPSHOT", "RetentionPeriod": {"RetentionPeriodValue": 1, '
             '"RetentionPeriodUnit": "DAYS"}, "ResourceTags": [{"ResourceTagKey": "a"}], '
             '"ExcludeResourceTags": [{"ResourceTagKey": "b"}]}', "tags and excluded tags together"),
            ('{"ResourceType": ', "a body that is not JSON")]:
        status, reply = raw_rbin(daemon, "POST", "/rules", body)
        check(status == 400 and "ValidationException" in json.dumps(reply),
              f"{what} is refused (ValidationException)", (status, reply))
    check(error_code(rbin.get_rule, Identifier="abcdefghijk") == "ResourceNotFoundException",
          "an unknown rule: ResourceNotFoundException")
    check(rbin.list_rules(ResourceType="EBS_SNAPSHOT")["Rules"] == [], "no rules yet")

    rule = rbin.create_rule(
        ResourceType="EBS_SNAPSHOT", Description="keep tagged snapshots",
        RetentionPeriod={"RetentionPeriodValue": 3, "RetentionPeriodUnit": "DAYS"},
        ResourceTags=[{"ResourceTagKey": "keep", "ResourceTagValue": "yes"}],
        Tags=[{"Key": "team", "Value": "storage"}])
    check(rule["Status"] == "available" and len(rule["Identifier"]) == 11, "CreateRule", rule)
    got = rbin.get_rule(Identifier=rule["Identifier"])
    check(got["ResourceTags"] == [{"ResourceTagKey": "keep", "ResourceTagValue": "yes"}]
          and got["RetentionPeriod"]["RetentionPeriodValue"] == 3, "GetRule", got)
    status, reply = raw_rbin(daemon, "PATCH", f"/rules/{rule['Identifier']}",
                             '{"Description": 5, "RetentionPeriod": {"RetentionPeriodValue": 9, '
                             '"RetentionPeriodUnit": "DAYS"}}')
    after = rbin.get_rule(Identifier=rule["Identifier"])
    check(status == 400 and after["RetentionPeriod"]["RetentionPeriodValue"] == 3
          and after["Description"] == "keep tagged snapshots",
          "an UpdateRule with a malformed field is refused and changes nothing", (status, reply))
    arn = got["RuleArn"]
    rbin.tag_resource(ResourceArn=arn, Tags=[{"Key": "env", "Value": "test"}])
    rbin.untag_resource(ResourceArn=arn, TagKeys=["team"])
    check(rbin.list_tags_for_resource(ResourceArn=arn)["Tags"] == [{"Key": "env", "Value": "test"}],
          "the rule's tags: TagResource, UntagResource, ListTagsForResource")
    out = aws(daemon, "rbin", "list-rules", "--resource-type", "EBS_SNAPSHOT")
    listed = json.loads(out.stdout or "{}").get("Rules", [])
    check(out.returncode == 0 and [r["Identifier"] for r in listed] == [rule["Identifier"]],
          "aws rbin list-rules", out)

    # A tagged snapshot goes to the bin; an untagged one is deleted.
    _, kept = snapshot_of(ec2, daemon, 7, {"keep": "yes"})
    _, gone = snapshot_of(ec2, daemon, 8)
    ec2.delete_snapshot(SnapshotId=kept)
    ec2.delete_snapshot(SnapshotId=gone)
    check(not visible(ec2, kept) and in_bin(ec2, kept), "a covered snapshot is in the bin, hidden")
    check(not in_bin(ec2, gone), "an uncovered snapshot is not in the bin")
    entry = [s for s in ec2.list_snapshots_in_recycle_bin(SnapshotIds=[kept])["Snapshots"]][0]
    stay = (entry["RecycleBinExitTime"] - entry["RecycleBinEnterTime"]).total_seconds()
    check(abs(stay - 3 * DAY) < 0.01, "the bin keeps it for the rule's retention", entry)
    check(error_code(ec2.create_volume, SnapshotId=kept, AvailabilityZone="local-1a")
          == "InvalidSnapshot.NotFound", "a snapshot in the bin cannot be used")
    check(not reads_back(daemon, kept, 7), "... nor read over NBD")
    check(error_code(ec2.restore_snapshot_from_recycle_bin, SnapshotId=gone)
          == "InvalidSnapshot.NotFound", "a deleted snapshot cannot be restored")
    out = aws(daemon, "ec2", "restore-snapshot-from-recycle-bin", "--snapshot-id", kept)
    check(out.returncode == 0 and json.loads(out.stdout).get("State") == "completed",
          "aws ec2 restore-snapshot-from-recycle-bin", out)
    check(visible(ec2, kept) and not in_bin(ec2, kept), "restored, the snapshot is back")
    check(reads_back(daemon, kept, 7), "... with its data")

    # Retention ends: deleted for good.
    ec2.delete_snapshot(SnapshotId=kept)
    check(in_bin(ec2, kept), "deleted again: in the bin")
    check(wait_until(lambda: not in_bin(ec2, kept), timeout=3 * DAY + 90),
          "its retention over, it leaves the bin")
    check(error_code(ec2.restore_snapshot_from_recycle_bin, SnapshotId=kept)
          == "InvalidSnapshot.NotFound" and not visible(ec2, kept),
          "an expired bin entry cannot be restored")

    # Images: a region-level rule, locked.
    image_rule = rbin.create_rule(
        ResourceType="EC2_IMAGE",
        RetentionPeriod={"RetentionPeriodValue": 30, "RetentionPeriodUnit": "DAYS"},
        ExcludeResourceTags=[{"ResourceTagKey": "scratch", "ResourceTagValue": "true"}],
        LockConfiguration={"UnlockDelay": {"UnlockDelayValue": 7, "UnlockDelayUnit": "DAYS"}})
    rid = image_rule["Identifier"]
    check(image_rule["LockState"] == "locked", "a rule created locked", image_rule)
    listed = rbin.list_rules(ResourceType="EC2_IMAGE", LockState="locked")["Rules"]
    check([r["Identifier"] for r in listed] == [rid], "ListRules by LockState", listed)
    check(rbin.list_rules(ResourceType="EC2_IMAGE", LockState="unlocked")["Rules"] == [],
          "... and no unlocked image rule")
    check(error_code(rbin.delete_rule, Identifier=rid) == "ConflictException",
          "a locked rule cannot be deleted")
    check(error_code(rbin.update_rule, Identifier=rid,
                     RetentionPeriod={"RetentionPeriodValue": 1, "RetentionPeriodUnit": "DAYS"})
          == "ConflictException", "a locked rule cannot be shortened")
    check(error_code(rbin.lock_rule, Identifier=rule["Identifier"], LockConfiguration={
        "UnlockDelay": {"UnlockDelayValue": 7, "UnlockDelayUnit": "DAYS"}})
          == "ValidationException", "a tag-level rule cannot be locked")

    _, snap = snapshot_of(ec2, daemon, 9)
    image = ec2.register_image(Name="protected-image", RootDeviceName="/dev/sda1",
                               BlockDeviceMappings=[{"DeviceName": "/dev/sda1",
                                                     "Ebs": {"SnapshotId": snap}}])["ImageId"]
    ec2.deregister_image(ImageId=image)
    check(ec2.describe_images(Owners=["self"], Filters=[
        {"Name": "image-id", "Values": [image]}])["Images"] == [], "a binned image is hidden")
    binned = ec2.list_images_in_recycle_bin()["Images"]
    check([i["ImageId"] for i in binned] == [image] and binned[0]["Name"] == "protected-image",
          "ListImagesInRecycleBin", binned)
    check(error_code(ec2.delete_snapshot, SnapshotId=snap) == "InvalidSnapshot.InUse",
          "the snapshot of a binned image stays in use")
    out = aws(daemon, "ec2", "restore-image-from-recycle-bin", "--image-id", image)
    check(out.returncode == 0 and json.loads(out.stdout).get("Return") is True,
          "aws ec2 restore-image-from-recycle-bin", out)
    imgs = ec2.describe_images(ImageIds=[image])["Images"]
    check(imgs and imgs[0]["State"] == "available", "the image is back, available", imgs)
    check(error_code(ec2.restore_image_from_recycle_bin, ImageId=image) == "InvalidAMIID.NotFound",
          "an image not in the bin cannot be restored")
    scratch = ec2.register_image(Name="scratch-image", RootDeviceName="/dev/sda1",
                                 BlockDeviceMappings=[{"DeviceName": "/dev/sda1",
                                                       "Ebs": {"SnapshotId": snap}}],
                                 TagSpecifications=[{"ResourceType": "image", "Tags": [
                                     {"Key": "scratch", "Value": "true"}]}])["ImageId"]
    ec2.deregister_image(ImageId=scratch)
    check(scratch not in [i["ImageId"] for i in ec2.list_images_in_recycle_bin()["Images"]],
          "an image with an excluded tag is deregistered at once")
    ec2.deregister_image(ImageId=image)
    check(image in [i["ImageId"] for i in ec2.list_images_in_recycle_bin()["Images"]],
          "deregistered again: in the bin")

    # Unlock: pending for the unlock delay, then the rule can go.
    r = rbin.unlock_rule(Identifier=rid)
    check(r["LockState"] == "pending_unlock", "UnlockRule: pending_unlock", r)
    check(error_code(rbin.delete_rule, Identifier=rid) == "ConflictException",
          "a rule pending unlock cannot be deleted")
    check(wait_until(lambda: rbin.get_rule(Identifier=rid)["LockState"] == "unlocked",
                   timeout=7 * DAY + 30), "after the unlock delay: unlocked")
    rbin.update_rule(Identifier=rid,
                     RetentionPeriod={"RetentionPeriodValue": 1, "RetentionPeriodUnit": "DAYS"})
    rbin.delete_rule(Identifier=rid)
    check(error_code(rbin.get_rule, Identifier=rid) == "ResourceNotFoundException",
          "an unlocked rule is updated and deleted")
    return image


def fast_snapshot_restore(ec2, daemon):
    _, snap = snapshot_of(ec2, daemon, 10)
    r = ec2.enable_fast_snapshot_restores(AvailabilityZones=["local-1a", "us-east-1a"],
                                          SourceSnapshotIds=[snap])
    check([i["State"] for i in r["Successful"]] == ["enabling"], "EnableFastSnapshotRestores", r)
    errors = r["Unsuccessful"][0]["FastSnapshotRestoreStateErrors"] if r["Unsuccessful"] else []
    check(len(errors) == 1 and errors[0]["AvailabilityZone"] == "us-east-1a",
          "a zone the region does not have is an unsuccessful item", r["Unsuccessful"])
    r = ec2.enable_fast_snapshot_restores(AvailabilityZones=["local-1a"],
                                          SourceSnapshotIds=["snap-0123456789abcdef0"])
    check(not r["Successful"] and r["Unsuccessful"][0]["FastSnapshotRestoreStateErrors"][0]
          ["Error"]["Code"] == "InvalidSnapshot.NotFound", "an unknown snapshot is unsuccessful")

    def state():
        items = ec2.describe_fast_snapshot_restores(
            Filters=[{"Name": "snapshot-id", "Values": [snap]}])["FastSnapshotRestores"]
        return items[0]["State"] if len(items) == 1 else str(items)

    check(wait_until(lambda: state() == "enabled"), "enabling, then enabled")
    out = aws(daemon, "ec2", "describe-fast-snapshot-restores", "--filters",
              f"Name=snapshot-id,Values={snap}", "Name=state,Values=enabled")
    items = json.loads(out.stdout or "{}").get("FastSnapshotRestores", [])
    times = [items[0].get(k, "") for k in ("EnablingTime", "OptimizingTime", "EnabledTime")] \
        if len(items) == 1 else []
    check(len(times) == 3 and all(times) and times == sorted(times) and times[0] < times[2],
          "aws ec2 describe-fast-snapshot-restores: enabled, past enabling and optimizing", items)
    vol = ec2.create_volume(SnapshotId=snap, AvailabilityZone="local-1a")["VolumeId"]
    described = ec2.describe_volumes(VolumeIds=[vol])["Volumes"][0]
    check(described.get("FastRestored") is True, "a volume from it is fast restored", described)
    ec2.attach_volume(VolumeId=vol, InstanceId=GROUP, Device="/dev/sdz")
    out = sh("qemu-io", "-f", "raw", "-c", "read -P 10 0 1M", daemon.uri(vol))
    check(out.returncode == 0 and "read 1048576/1048576" in out.stdout, "... and reads its data")
    ec2.detach_volume(VolumeId=vol)
    r = ec2.disable_fast_snapshot_restores(AvailabilityZones=["local-1a"],
                                           SourceSnapshotIds=[snap])
    check([i["State"] for i in r["Successful"]] == ["disabling"], "DisableFastSnapshotRestores", r)
    check(wait_until(lambda: state() == "disabled"), "then disabled")
    plain = ec2.create_volume(SnapshotId=snap, AvailabilityZone="local-1a")["VolumeId"]
    check(ec2.describe_volumes(VolumeIds=[plain])["Volumes"][0].get("FastRestored") is False,
          "after a disable, volumes restore lazily")


def every_call_through_the_aws_cli(ec2, daemon, binned_image):
    """The calls the sections above make with boto3, once more with the aws CLI."""
    def cli(*args):
        out = aws(daemon, *args)
        ok = out.returncode == 0
        check(ok, "aws " + " ".join(args[:2]), out.stderr)
        return json.loads(out.stdout or "{}") if ok else {}

    _, snap = snapshot_of(ec2, daemon, 11, {"cli": "yes"})
    cli("ec2", "lock-snapshot", "--snapshot-id", snap, "--lock-mode", "governance",
        "--lock-duration", "3")
    listed = cli("ec2", "describe-locked-snapshots", "--snapshot-ids", snap)
    check([s["LockState"] for s in listed.get("Snapshots", [])] == ["governance"],
          "aws ec2 describe-locked-snapshots", listed)
    cli("ec2", "unlock-snapshot", "--snapshot-id", snap)

    rule = cli("rbin", "create-rule", "--resource-type", "EBS_SNAPSHOT", "--retention-period",
               "RetentionPeriodValue=2,RetentionPeriodUnit=DAYS", "--resource-tags",
               "ResourceTagKey=cli,ResourceTagValue=yes", "--description", "cli rule")
    rid = rule.get("Identifier", "")
    got = cli("rbin", "get-rule", "--identifier", rid)
    check(got.get("Description") == "cli rule", "aws rbin get-rule", got)
    cli("rbin", "update-rule", "--identifier", rid, "--retention-period",
        "RetentionPeriodValue=4,RetentionPeriodUnit=DAYS")
    cli("rbin", "tag-resource", "--resource-arn", got.get("RuleArn", ""), "--tags",
        "Key=owner,Value=cli")
    tags = cli("rbin", "list-tags-for-resource", "--resource-arn", got.get("RuleArn", ""))
    check(tags.get("Tags") == [{"Key": "owner", "Value": "cli"}], "aws rbin list-tags-for-resource",
          tags)
    cli("rbin", "untag-resource", "--resource-arn", got.get("RuleArn", ""), "--tag-keys", "owner")
    cli("ec2", "delete-snapshot", "--snapshot-id", snap)
    binned = cli("ec2", "list-snapshots-in-recycle-bin", "--snapshot-ids", snap)
    entry = binned.get("Snapshots", [{}])[0]
    check(entry.get("SnapshotId") == snap, "aws ec2 list-snapshots-in-recycle-bin", binned)
    cli("ec2", "restore-snapshot-from-recycle-bin", "--snapshot-id", snap)
    check(visible(ec2, snap), "restored through the aws CLI")
    images = cli("ec2", "list-images-in-recycle-bin")
    check(binned_image in [i["ImageId"] for i in images.get("Images", [])],
          "aws ec2 list-images-in-recycle-bin", images)

    region_rule = cli("rbin", "create-rule", "--resource-type", "EC2_IMAGE", "--retention-period",
                      "RetentionPeriodValue=1,RetentionPeriodUnit=DAYS")
    gid = region_rule.get("Identifier", "")
    locked = cli("rbin", "lock-rule", "--identifier", gid, "--lock-configuration",
                 "UnlockDelay={UnlockDelayValue=7,UnlockDelayUnit=DAYS}")
    check(locked.get("LockState") == "locked", "aws rbin lock-rule", locked)
    out = aws(daemon, "rbin", "delete-rule", "--identifier", gid)
    check(out.returncode != 0 and "ConflictException" in out.stderr,
          "aws rbin delete-rule of a locked rule: ConflictException", out.stderr)
    unlocked = cli("rbin", "unlock-rule", "--identifier", gid)
    check(unlocked.get("LockState") == "pending_unlock", "aws rbin unlock-rule", unlocked)
    cli("rbin", "delete-rule", "--identifier", rid)

    cli("ec2", "modify-snapshot-tier", "--snapshot-id", snap, "--storage-tier", "archive")
    tiers = cli("ec2", "describe-snapshot-tier-status", "--filters", f"Name=snapshot-id,Values={snap}")
    check([t["LastTieringOperationStatus"] for t in tiers.get("SnapshotTierStatuses", [])] ==
          ["archival-in-progress"], "aws ec2 describe-snapshot-tier-status", tiers)
    check(wait_until(lambda: tier_of(ec2, snap).get("StorageTier") == "archive", timeout=20),
          "archived through the aws CLI")
    restored = cli("ec2", "restore-snapshot-tier", "--snapshot-id", snap, "--permanent-restore")
    check(restored.get("IsPermanentRestore") is True, "aws ec2 restore-snapshot-tier", restored)
    check(wait_until(lambda: tier_of(ec2, snap).get("StorageTier") == "standard", timeout=20),
          "restored through the aws CLI")
    out = aws(daemon, "ec2", "restore-snapshot-tier", "--snapshot-id", snap,
              "--temporary-restore-days", "2", "--permanent-restore")
    check(out.returncode != 0 and "InvalidParameterCombination" in out.stderr,
          "aws ec2 restore-snapshot-tier with both: InvalidParameterCombination", out.stderr)

    enabled = cli("ec2", "enable-fast-snapshot-restores", "--availability-zones", "local-1a",
                  "--source-snapshot-ids", snap)
    check([i["State"] for i in enabled.get("Successful", [])] == ["enabling"],
          "aws ec2 enable-fast-snapshot-restores", enabled)
    disabled = cli("ec2", "disable-fast-snapshot-restores", "--availability-zones", "local-1a",
                   "--source-snapshot-ids", snap)
    check([i["State"] for i in disabled.get("Successful", [])] == ["disabling"],
          "aws ec2 disable-fast-snapshot-restores", disabled)


def tier_of(ec2, snap):
    return ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]


def tier_status(ec2, snap):
    statuses = ec2.describe_snapshot_tier_status(
        Filters=[{"Name": "snapshot-id", "Values": [snap]}])["SnapshotTierStatuses"]
    return statuses[0] if statuses else {}


def archive_tier(ec2, daemon):
    vol, snap = snapshot_of(ec2, daemon, 12, {"tier": "yes"})
    started = ec2.modify_snapshot_tier(SnapshotId=snap, StorageTier="archive")
    check(started["SnapshotId"] == snap and "TieringStartTime" in started,
          "ModifySnapshotTier starts an archival", started)
    status = tier_status(ec2, snap)
    check(status.get("LastTieringOperationStatus") == "archival-in-progress" and
          status.get("StorageTier") == "standard" and status.get("Status") == "completed",
          "DescribeSnapshotTierStatus: archival-in-progress, still standard", status)
    check(error_code(ec2.delete_snapshot, SnapshotId=snap) == "IncorrectState",
          "a snapshot being archived cannot be deleted")
    check(wait_until(lambda: tier_of(ec2, snap).get("StorageTier") == "archive", timeout=20),
          "the archival completes: StorageTier archive")
    status = tier_status(ec2, snap)
    check(status.get("LastTieringOperationStatus") == "archival-completed" and
          status.get("LastTieringProgress") == 100 and "ArchivalCompleteTime" in status and
          status.get("Tags") == [{"Key": "tier", "Value": "yes"}],
          "DescribeSnapshotTierStatus: archival-completed, with its time and tags", status)
    archived = ec2.describe_snapshots(Filters=[{"Name": "storage-tier", "Values": ["archive"]}])
    check([s["SnapshotId"] for s in archived["Snapshots"]] == [snap],
          "DescribeSnapshots filters by storage-tier", archived)
    check(error_code(ec2.create_volume, SnapshotId=snap, AvailabilityZone="local-1a") ==
          "IncorrectState", "CreateVolume from an archived snapshot: IncorrectState")
    check(not reads_back(daemon, snap, 12), "an archived snapshot's export is gone")
    check(error_code(ec2.modify_snapshot_tier, SnapshotId=snap, StorageTier="archive") ==
          "IncorrectState", "archiving an archived snapshot: IncorrectState")
    # Bad restores change nothing.
    for kwargs, code in (({"TemporaryRestoreDays": 1, "PermanentRestore": True},
                          "InvalidParameterCombination"),
                         ({}, "InvalidParameterCombination"),
                         ({"TemporaryRestoreDays": 181}, "InvalidParameterValue"),
                         ({"TemporaryRestoreDays": 0}, "InvalidParameterValue")):
        check(error_code(ec2.restore_snapshot_tier, SnapshotId=snap, **kwargs) == code,
              f"RestoreSnapshotTier {kwargs}: {code}")
    check(tier_of(ec2, snap).get("StorageTier") == "archive", "still archived")

    # A temporary restore of a day (2 s here); then back to the archive by itself.
    restored = ec2.restore_snapshot_tier(SnapshotId=snap, TemporaryRestoreDays=1)
    check(restored.get("RestoreDuration") == 1 and restored.get("IsPermanentRestore") is False,
          "RestoreSnapshotTier: a temporary restore of 1 day", restored)
    check(tier_status(ec2, snap).get("LastTieringOperationStatus") ==
          "temporary-restore-in-progress", "temporary-restore-in-progress")
    check(wait_until(lambda: tier_of(ec2, snap).get("StorageTier") == "standard", timeout=20),
          "the restore completes: StorageTier standard")
    check("RestoreExpiryTime" in tier_of(ec2, snap), "DescribeSnapshots: RestoreExpiryTime")
    check(reads_back(daemon, snap, 12), "the restored snapshot reads its data")
    check(wait_until(lambda: tier_of(ec2, snap).get("StorageTier") == "archive", timeout=20),
          "its restore period over, it is archived again")
    # For good: standard, and the archive goes.
    restored = ec2.restore_snapshot_tier(SnapshotId=snap, PermanentRestore=True)
    check(restored.get("IsPermanentRestore") is True, "RestoreSnapshotTier: permanent", restored)
    check(wait_until(lambda: tier_status(ec2, snap).get("LastTieringOperationStatus") ==
                     "permanent-restore-completed", timeout=20), "permanent-restore-completed")
    check(tier_of(ec2, snap).get("StorageTier") == "standard" and reads_back(daemon, snap, 12),
          "permanently restored, it reads its data")
    check(error_code(ec2.restore_snapshot_tier, SnapshotId=snap, PermanentRestore=True) ==
          "IncorrectState", "restoring a standard snapshot: IncorrectState")

    # A snapshot that a pending cross-region copy reads is not archived.
    west = boto3_west(daemon)
    copy = west.copy_snapshot(SourceRegion="local-1", SourceSnapshotId=snap)["SnapshotId"]
    pending = west.describe_snapshots(SnapshotIds=[copy])["Snapshots"][0]["State"] == "pending"
    check(pending, "the copy into west-1 is pending")
    check(error_code(ec2.modify_snapshot_tier, SnapshotId=snap, StorageTier="archive") ==
          "IncorrectState", "archiving the source of a pending copy: IncorrectState")
    check(wait_until(lambda: west.describe_snapshots(SnapshotIds=[copy])["Snapshots"][0]["State"]
                     == "completed", timeout=60), "the copy completes")
    check(tier_status(ec2, snap).get("StorageTier") == "standard", "the refusal changed nothing")
    # Archived and locked, it stays; archived, it can be deleted.
    ec2.lock_snapshot(SnapshotId=snap, LockMode="governance", LockDuration=30)
    ec2.modify_snapshot_tier(SnapshotId=snap, StorageTier="archive")
    check(wait_until(lambda: tier_of(ec2, snap).get("StorageTier") == "archive", timeout=20),
          "a locked snapshot is archived")
    check(error_code(ec2.delete_snapshot, SnapshotId=snap) == "SnapshotLocked",
          "an archived locked snapshot cannot be deleted")
    ec2.unlock_snapshot(SnapshotId=snap)
    ec2.delete_snapshot(SnapshotId=snap)
    check(not visible(ec2, snap), "an archived snapshot is deleted")
    ec2.delete_volume(VolumeId=vol)
    return copy


def boto3_west(daemon):
    import boto3
    key, secret = daemon.admin_keys()
    return boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{daemon.api}",
                        region_name="west-1", aws_access_key_id=key,
                        aws_secret_access_key=secret)


def main():
    work = scratch_dir("strata-protect-")
    data_dir = os.path.join(work, "data")
    daemon = Daemon(BIN, data_dir, extra=["--seconds-per-day", str(int(DAY)), "--archive-seconds",
                                          "1", "--region", "local-1,west-1", "--link",
                                          "bandwidth=256KB,rtt=5ms,streams=1"])
    check(daemon.start(), "stratad starts")
    try:
        ec2, rbin = daemon.client("ec2"), daemon.client("rbin")
        locked = snapshot_locks(ec2, daemon)
        binned_image = recycle_bin(ec2, rbin, daemon)
        fast_snapshot_restore(ec2, daemon)
        archive_tier(ec2, daemon)
        every_call_through_the_aws_cli(ec2, daemon, binned_image)
        check(daemon.stop() == 0, "stratad stops cleanly")
        check(daemon.start(), "stratad restarts")
        ec2 = daemon.client("ec2")
        check(error_code(ec2.delete_snapshot, SnapshotId=locked) == "SnapshotLocked",
              "after a restart the compliance lock holds")
        check(binned_image in [i["ImageId"] for i in ec2.list_images_in_recycle_bin()["Images"]],
              "after a restart the image is still in the bin")
    finally:
        if daemon.proc.poll() is None:
            check(daemon.stop() == 0, "stratad stops cleanly")
    return check.summary()


if __name__ == "__main__":
    sys.exit(main())
