#!/usr/bin/env python3
"""AMIs through boto3, without VMs (stratad --vm off): RegisterImage's validation, DescribeImages
with owners, executable users and filters, snapshots in use, launch permissions across three
accounts, image block public access, allowed images (enabled and audit mode), deregistration
protection with and without the cooldown, deprecation, disable/enable, DeregisterImage with and
without its snapshots, RunInstances / CreateImage / TerminateInstances without a hypervisor,
tags, and the store/restore bundle round trip with tampered, truncated, reordered and re-signed
bundles. Every refused call is checked to have changed nothing.

Usage: image_test.py BIN_DIR. Prints "N passed, M failed"."""
import hashlib
import json
import os
import shutil
import sys
import time

from strata_testlib import MiB, Checks, Daemon, error_code, sh, scratch_dir

BIN = sys.argv[1]
check = Checks()


def wait(fn, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(0.2)
    check(False, f"timed out waiting for {what}")
    return False


def image_ids(ec2, **kwargs):
    return sorted(i["ImageId"] for i in ec2.describe_images(**kwargs)["Images"])


def make_snapshot(daemon, ec2, data_path=None, size_gib=1):
    """A completed snapshot of a volume holding `data_path` (written over NBD), or empty."""
    vol = ec2.create_volume(Size=size_gib, AvailabilityZone="local-1a")["VolumeId"]
    if data_path:
        group = "i-" + vol[4:]
        ec2.attach_volume(VolumeId=vol, InstanceId=group, Device="/dev/sdf")
        out = sh("nbdcopy", data_path, daemon.uri(vol))
        check(out.returncode == 0, f"data written to {vol}: {out.stderr}")
        ec2.detach_volume(VolumeId=vol)
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig={"Delay": 1})
    ec2.delete_volume(VolumeId=vol)
    return snap


def register(ec2, name, snap, **extra):
    extra.setdefault("BlockDeviceMappings", [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap}}])
    return ec2.register_image(Name=name, RootDeviceName="/dev/sda1", **extra)["ImageId"]


def main():
    work = scratch_dir("strata-image-")
    data_dir = os.path.join(work, "data")
    daemon = Daemon(BIN, data_dir, extra=["--vm", "off", "--bucket-dir", os.path.join(work, "buckets")])
    check(daemon.start(), "stratad starts")
    try:
        run(work, data_dir, daemon)
    finally:
        check(daemon.stop() == 0, "stratad stops cleanly")
    return check.summary()


def run(work, data_dir, daemon):
    ec2 = daemon.client()
    cli = [f"{BIN}/strata", "--data-dir", data_dir, "--endpoint", f"http://127.0.0.1:{daemon.api}"]
    accounts = {}
    for name in ("bob", "carol"):
        out = sh(*cli, "account", "create", name)
        accounts[name] = json.loads(out.stdout) if out.returncode == 0 else {}
    bob = daemon.client("ec2", (accounts["bob"]["AccessKeyId"], accounts["bob"]["SecretAccessKey"]))
    carol = daemon.client("ec2", (accounts["carol"]["AccessKeyId"],
                                  accounts["carol"]["SecretAccessKey"]))
    bob_id, carol_id = accounts["bob"]["AccountId"], accounts["carol"]["AccountId"]
    snap = make_snapshot(daemon, ec2)
    admin_id = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["OwnerId"]

    # --- RegisterImage's validation: each refusal registers nothing ---
    bad = [
        ("bad name!", dict(Name="bad name!", RootDeviceName="/dev/sda1",
                           BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap}}]),
         "InvalidAMIName.Malformed"),
        ("root not mapped", dict(Name="no-root", RootDeviceName="/dev/sda1",
                                 BlockDeviceMappings=[{"DeviceName": "/dev/sdb", "Ebs": {"SnapshotId": snap}}]),
         "InvalidBlockDeviceMapping"),
        ("volume smaller than the snapshot",
         dict(Name="small", RootDeviceName="/dev/sda1",
              BlockDeviceMappings=[{"DeviceName": "/dev/sda1",
                                    "Ebs": {"SnapshotId": make_snapshot(daemon, ec2, size_gib=2),
                                            "VolumeSize": 1}}]),
         "InvalidBlockDeviceMapping"),
        ("a device mapped twice",
         dict(Name="twice", RootDeviceName="/dev/sda1",
              BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap}},
                                   {"DeviceName": "/dev/sda1", "VirtualName": "ephemeral0"}]),
         "InvalidBlockDeviceMapping"),
        ("an unknown snapshot",
         dict(Name="nosnap", RootDeviceName="/dev/sda1",
              BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}]),
         "InvalidSnapshot.NotFound"),
        ("a kernel on an hvm image",
         dict(Name="pv-kernel", RootDeviceName="/dev/sda1", KernelId="aki-12345678",
              BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap}}]),
         "InvalidParameterValue"),
        ("a bad virtual name",
         dict(Name="eph", RootDeviceName="/dev/sda1",
              BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap}},
                                   {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral99"}]),
         "InvalidBlockDeviceMapping"),
    ]
    for what, kwargs, code in bad:
        got = error_code(ec2.register_image, **kwargs)
        check(got == code, f"RegisterImage refuses {what} with {code}: {got}")
    check(image_ids(ec2, Owners=["self"]) == [], "no refused registration left an image")
    check(error_code(bob.register_image, Name="bobs", RootDeviceName="/dev/sda1",
                     BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap}}])
          == "InvalidSnapshot.NotFound", "another account's unshared snapshot cannot be registered")

    base = register(ec2, "base-1.0", snap, Description="the base", Architecture="x86_64",
                    TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "os", "Value": "busybox"}]}],
                    BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap, "VolumeSize": 2}},
                                         {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}])
    image = ec2.describe_images(ImageIds=[base])["Images"][0]
    check(image["State"] == "available" and image["OwnerId"] == admin_id and not image["Public"],
          f"the image is available, owned, private: {image['State']} {image['Public']}")
    check(image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 2 and
          image["BlockDeviceMappings"][1]["VirtualName"] == "ephemeral0",
          f"the mapping is kept: {image['BlockDeviceMappings']}")
    check(image["Tags"] == [{"Key": "os", "Value": "busybox"}], f"tags from TagSpecifications: {image['Tags']}")
    check(error_code(ec2.register_image, Name="base-1.0", RootDeviceName="/dev/sda1",
                     BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap}}])
          == "InvalidAMIName.Duplicate", "a name is unique per owner")

    # --- DescribeImages ---
    check(image_ids(ec2, Filters=[{"Name": "name", "Values": ["base-*"]}]) == [base], "name wildcard")
    check(image_ids(ec2, Filters=[{"Name": "name", "Values": ["other-*"]}]) == [], "name mismatch")
    check(image_ids(ec2, Filters=[{"Name": "block-device-mapping.snapshot-id", "Values": [snap]}]) == [base],
          "block-device-mapping.snapshot-id")
    check(image_ids(ec2, Filters=[{"Name": "tag:os", "Values": ["busybox"]},
                                  {"Name": "architecture", "Values": ["x86_64"]},
                                  {"Name": "state", "Values": ["available"]},
                                  {"Name": "is-public", "Values": ["false"]},
                                  {"Name": "root-device-type", "Values": ["ebs"]}]) == [base],
          "tag, architecture, state, is-public and root-device-type filters")
    check(error_code(ec2.describe_images, Filters=[{"Name": "no-such-filter", "Values": ["x"]}])
          == "InvalidParameterValue", "an unknown filter is refused")
    check(error_code(ec2.describe_images, ImageIds=["snap-123"]) == "InvalidAMIID.Malformed", "malformed id")
    check(error_code(ec2.describe_images, ImageIds=["ami-0123456789abcdef0"]) == "InvalidAMIID.NotFound",
          "unknown id")
    check(image_ids(bob) == [] and error_code(bob.describe_images, ImageIds=[base]) == "InvalidAMIID.NotFound",
          "another account cannot see a private image")
    check(image_ids(ec2, Owners=["amazon"]) == [], "Owners=amazon: no images from AWS here")

    # --- Snapshots in use ---
    check(error_code(ec2.delete_snapshot, SnapshotId=snap) == "InvalidSnapshot.InUse",
          "a snapshot an image references cannot be deleted")
    try:
        ec2.delete_snapshot(SnapshotId=snap)
    except Exception as e:  # noqa: BLE001
        check(base in str(e), f"the error names the image: {e}")

    # --- Launch permissions and block public access ---
    ec2.modify_image_attribute(ImageId=base, LaunchPermission={"Add": [{"UserId": bob_id}]})
    check(image_ids(bob) == [base] and image_ids(carol) == [], "a launch permission shares with one account")
    check(image_ids(bob, ExecutableUsers=["self"]) == [base] and image_ids(bob, Owners=["self"]) == [],
          "ExecutableUsers=self and Owners=self for the grantee")
    perms = ec2.describe_image_attribute(ImageId=base, Attribute="launchPermission")["LaunchPermissions"]
    check(perms == [{"UserId": bob_id}], f"DescribeImageAttribute launchPermission: {perms}")
    check(error_code(bob.modify_image_attribute, ImageId=base,
                     LaunchPermission={"Add": [{"UserId": carol_id}]}) == "AuthFailure",
          "only the owner changes launch permissions")
    check(ec2.get_image_block_public_access_state()["ImageBlockPublicAccessState"] == "block-new-sharing",
          "image block public access is on by default")
    check(error_code(ec2.modify_image_attribute, ImageId=base,
                     LaunchPermission={"Add": [{"Group": "all"}]}) == "OperationNotPermitted",
          "making an image public is refused while block public access is on")
    check(image_ids(carol) == [] and not ec2.describe_images(ImageIds=[base])["Images"][0]["Public"],
          "the refusal changed nothing")
    ec2.disable_image_block_public_access()
    check(ec2.get_image_block_public_access_state()["ImageBlockPublicAccessState"] == "unblocked", "unblocked")
    ec2.modify_image_attribute(ImageId=base, Attribute="launchPermission", OperationType="add",
                               UserGroups=["all"])
    check(image_ids(carol) == [base] and image_ids(ec2, Filters=[{"Name": "is-public", "Values": ["true"]}]) == [base],
          "a public image is seen by every account")
    check(image_ids(carol, ExecutableUsers=["all"]) == [base], "ExecutableUsers=all")
    ec2.enable_image_block_public_access(ImageBlockPublicAccessState="block-new-sharing")
    check(image_ids(carol) == [base], "blocking new sharing keeps an image that is already public")
    ec2.modify_image_attribute(ImageId=base, LaunchPermission={"Remove": [{"Group": "all"}]})
    check(image_ids(carol) == [], "removing the group all makes it private again")
    ec2.modify_image_attribute(ImageId=base, Description={"Value": "the base image"})
    check(ec2.describe_image_attribute(ImageId=base, Attribute="description")["Description"]["Value"]
          == "the base image", "ModifyImageAttribute description")

    # --- Allowed images ---
    check(bob.get_allowed_images_settings()["State"] == "disabled", "allowed images are off by default")
    bob.replace_image_criteria_in_allowed_images_settings(ImageCriteria=[{"ImageProviders": [carol_id]}])
    bob.enable_allowed_images_settings(AllowedImagesSettingsState="audit-mode")
    audited = bob.describe_images(ImageIds=[base])["Images"][0]
    check(audited.get("ImageAllowed") is False, f"audit mode shows ImageAllowed false: {audited.get('ImageAllowed')}")
    bob.enable_allowed_images_settings(AllowedImagesSettingsState="enabled")
    check(image_ids(bob) == [], "enabled: an image from a provider not allowed is hidden")
    check(error_code(bob.run_instances, ImageId=base, MinCount=1, MaxCount=1) == "InvalidAMIID.NotFound",
          "enabled: it cannot be launched")
    settings = bob.get_allowed_images_settings()
    check(settings["ImageCriteria"] == [{"ImageProviders": [carol_id]}], f"criteria kept: {settings}")
    check(error_code(bob.replace_image_criteria_in_allowed_images_settings,
                     ImageCriteria=[{"ImageProviders": ["none", carol_id]}]) == "InvalidParameterValue",
          "none cannot be combined with other providers")
    bob.replace_image_criteria_in_allowed_images_settings(ImageCriteria=[{"ImageProviders": [admin_id]}])
    check(image_ids(bob) == [base], "allowing the provider shows the image")
    bob.disable_allowed_images_settings()

    # --- Instances without a hypervisor ---
    check(error_code(carol.run_instances, ImageId=base, MinCount=1, MaxCount=1) == "AuthFailure",
          "an account without launch permission is refused")
    other = make_snapshot(daemon, ec2)  # The admin's, not shared.
    check(error_code(bob.run_instances, ImageId=base, MinCount=1, MaxCount=1, InstanceType="t9.huge")
          == "InvalidParameterValue", "an unknown instance type is refused")
    volumes_before = len(bob.describe_volumes()["Volumes"])
    check(error_code(bob.run_instances, ImageId=base, MinCount=1, MaxCount=1,
                     BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 1}}])
          == "InvalidBlockDeviceMapping", "an override smaller than the snapshot is refused")
    check(len(bob.describe_volumes()["Volumes"]) == volumes_before, "a refused launch leaves no volume")
    check(error_code(bob.run_instances, ImageId=base, MinCount=1, MaxCount=1,
                     BlockDeviceMappings=[{"DeviceName": "/dev/sdd", "Ebs": {"SnapshotId": other}}])
          == "InvalidSnapshot.NotFound", "a launch cannot add a snapshot the account may not use")
    bob_snap = make_snapshot(daemon, bob)
    extra = bob.run_instances(ImageId=base, MinCount=1, MaxCount=1,
                              BlockDeviceMappings=[{"DeviceName": "/dev/sdd", "Ebs": {"SnapshotId": bob_snap}}])
    added = extra["Instances"][0]["BlockDeviceMappings"][-1]
    added_vol = bob.describe_volumes(VolumeIds=[added["Ebs"]["VolumeId"]])["Volumes"][0]
    check(added["DeviceName"] == "/dev/sdd" and added_vol["SnapshotId"] == bob_snap,
          f"a launch adds a volume from the account's own snapshot: {added}")
    bob.terminate_instances(InstanceIds=[extra["Instances"][0]["InstanceId"]])
    run = bob.run_instances(ImageId=base, MinCount=2, MaxCount=2, InstanceType="t3.nano",
                            BlockDeviceMappings=[{"DeviceName": "/dev/sdc",
                                                  "Ebs": {"VolumeSize": 1, "DeleteOnTermination": False}}],
                            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "role", "Value": "ci"}]}])
    ids = [i["InstanceId"] for i in run["Instances"]]
    check(len(ids) == 2 and all(i["State"]["Name"] == "running" for i in run["Instances"]),
          f"MaxCount=2 launches two running instances: {[i['State'] for i in run['Instances']]}")
    first = run["Instances"][0]
    devices = [(m["DeviceName"], m["Ebs"]["DeleteOnTermination"]) for m in first["BlockDeviceMappings"]]
    check(devices == [("/dev/sda1", True), ("/dev/sdc", False)], f"the mapping with the override: {devices}")
    root_volume = first["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    data_volume = first["BlockDeviceMappings"][1]["Ebs"]["VolumeId"]
    v = bob.describe_volumes(VolumeIds=[root_volume])["Volumes"][0]
    check(v["State"] == "in-use" and v["Attachments"][0]["InstanceId"] == ids[0] and v["SnapshotId"] == snap
          and v["Size"] == 2, f"the root volume is made from the image's snapshot and attached: {v}")
    check(ec2.describe_images(ImageIds=[base])["Images"][0].get("LastLaunchedTime"), "LastLaunchedTime is set")
    described = bob.describe_instances(Filters=[{"Name": "tag:role", "Values": ["ci"]},
                                                {"Name": "instance-state-name", "Values": ["running"]}])
    check(sorted(i["InstanceId"] for r in described["Reservations"] for i in r["Instances"]) == sorted(ids),
          "DescribeInstances with tag and state filters")
    check(bob.describe_instances(Filters=[{"Name": "block-device-mapping.volume-id", "Values": [root_volume]}])
          ["Reservations"][0]["Instances"][0]["InstanceId"] == ids[0], "filter by volume id")
    check(ec2.describe_instances()["Reservations"] == [], "another account sees no instances")
    check(error_code(ec2.terminate_instances, InstanceIds=[ids[0]]) == "InvalidInstanceID.NotFound",
          "another account cannot terminate them")

    # CreateImage from an instance: crash-consistent snapshots of all its volumes.
    made = bob.create_image(InstanceId=ids[0], Name="from-instance", NoReboot=True,
                            TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "k", "Value": "v"}]}])["ImageId"]
    wait(lambda: bob.describe_images(ImageIds=[made])["Images"][0]["State"] == "available", "the new image")
    new_image = bob.describe_images(ImageIds=[made])["Images"][0]
    new_snaps = [m["Ebs"]["SnapshotId"] for m in new_image["BlockDeviceMappings"]]
    check(len(new_snaps) == 2 and snap not in new_snaps and new_image["SourceInstanceId"] == ids[0],
          f"CreateImage snapshots every volume: {new_image['BlockDeviceMappings']}")
    check(new_image["Tags"] == [{"Key": "k", "Value": "v"}], "CreateImage tags")

    statuses = bob.describe_instance_status(InstanceIds=ids)["InstanceStatuses"]
    check(len(statuses) == 2 and all(st["InstanceStatus"]["Status"] == "ok" for st in statuses),
          f"DescribeInstanceStatus: {statuses}")

    # CopyImage within the region: new snapshots, lineage, no launch permissions, tags on request.
    copied = bob.copy_image(SourceImageId=made, SourceRegion="local-1", Name="copied", CopyImageTags=True)["ImageId"]
    wait(lambda: bob.describe_images(ImageIds=[copied])["Images"][0]["State"] == "available", "the copy")
    c = bob.describe_images(ImageIds=[copied])["Images"][0]
    copy_snaps = [m["Ebs"]["SnapshotId"] for m in c["BlockDeviceMappings"]]
    check(c["SourceImageId"] == made and c["SourceImageRegion"] == "local-1" and c["Tags"] == new_image["Tags"]
          and len(copy_snaps) == 2 and not set(copy_snaps) & set(new_snaps),
          f"CopyImage copies the snapshots, with lineage and tags: {c}")
    check(error_code(carol.copy_image, SourceImageId=made, SourceRegion="local-1", Name="stolen")
          == "InvalidAMIID.NotFound", "an image one cannot launch cannot be copied")
    check(error_code(bob.copy_image, SourceImageId=made, SourceRegion="far-away-1", Name="far")
          == "InvalidParameterValue", "a copy from a region neither served nor a peer: InvalidParameterValue")

    stopped = bob.stop_instances(InstanceIds=[ids[1]])["StoppingInstances"][0]
    check(stopped["CurrentState"]["Name"] == "stopped" and stopped["PreviousState"]["Name"] == "running",
          f"StopInstances: {stopped}")
    started = bob.start_instances(InstanceIds=[ids[1]])["StartingInstances"][0]
    check(started["CurrentState"]["Name"] == "running", f"StartInstances: {started}")
    bob.reboot_instances(InstanceIds=[ids[1]])
    check(bob.describe_instances(InstanceIds=[ids[1]])["Reservations"][0]["Instances"][0]["State"]["Name"]
          == "running", "RebootInstances")
    terminated = bob.terminate_instances(InstanceIds=ids)["TerminatingInstances"]
    check(all(t["CurrentState"]["Name"] == "terminated" for t in terminated), "TerminateInstances")
    check(error_code(bob.describe_volumes, VolumeIds=[root_volume]) == "InvalidVolume.NotFound",
          "the DeleteOnTermination root volume is gone")
    kept = bob.describe_volumes(VolumeIds=[data_volume])["Volumes"][0]
    check(kept["State"] == "available", f"the other volume is kept, detached: {kept['State']}")
    check(error_code(bob.start_instances, InstanceIds=[ids[0]]) == "IncorrectInstanceState",
          "a terminated instance cannot start")

    # --- Deregistration protection, deprecation, disable ---
    ec2.enable_image_deregistration_protection(ImageId=base)
    check(error_code(ec2.deregister_image, ImageId=base) == "OperationNotPermitted", "protection refuses deregistering")
    ec2.disable_image_deregistration_protection(ImageId=base)
    ec2.enable_image_deregistration_protection(ImageId=base, WithCooldown=True)
    check(ec2.describe_images(ImageIds=[base])["Images"][0]["DeregistrationProtection"] == "enabled-with-cooldown",
          "protection with cooldown")
    ec2.disable_image_deregistration_protection(ImageId=base)
    state = ec2.describe_images(ImageIds=[base])["Images"][0]["DeregistrationProtection"]
    check(state.startswith("disabled-until-"), f"disabled with cooldown: {state}")
    check(error_code(ec2.deregister_image, ImageId=base) == "OperationNotPermitted",
          "the 24-hour cooldown still refuses deregistering")

    ec2.modify_image_attribute(ImageId=base, LaunchPermission={"Add": [{"UserId": carol_id}]})
    ec2.enable_image_deprecation(ImageId=base, DeprecateAt="2020-01-01T00:00:00Z")
    check(image_ids(carol) == [], "a deprecated image is hidden from other accounts")
    check(image_ids(carol, IncludeDeprecated=True) == [base] and image_ids(carol, ImageIds=[base]) == [base],
          "IncludeDeprecated or naming it shows it")
    check(ec2.describe_images(ImageIds=[base])["Images"][0]["DeprecationTime"].startswith("2020-01-01T00:00"),
          "DeprecationTime")
    ec2.disable_image_deprecation(ImageId=base)
    check(image_ids(carol) == [base], "DisableImageDeprecation")

    ec2.disable_image(ImageId=base)
    check(image_ids(ec2, Owners=["self"]) == [] and image_ids(ec2, IncludeDisabled=True, Owners=["self"]) == [base],
          "a disabled image shows only with IncludeDisabled")
    check(image_ids(carol, IncludeDisabled=True) == [], "disabling makes it private")
    check(error_code(ec2.run_instances, ImageId=base, MinCount=1, MaxCount=1) == "InvalidAMIID.Unavailable",
          "a disabled image cannot be launched")
    ec2.enable_image(ImageId=base)
    check(ec2.describe_images(ImageIds=[base])["Images"][0]["State"] == "available", "EnableImage")

    # --- Tags on images ---
    ec2.create_tags(Resources=[base], Tags=[{"Key": "stage", "Value": "prod"}])
    tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [base]}])["Tags"]
    check(sorted(t["Key"] for t in tags) == ["os", "stage"] and tags[0]["ResourceType"] == "image",
          f"CreateTags and DescribeTags on an image: {tags}")
    ec2.delete_tags(Resources=[base], Tags=[{"Key": "stage"}])

    # --- Encrypted images: launching needs the KMS key too ---
    enc_vol = ec2.create_volume(Size=1, AvailabilityZone="local-1a", Encrypted=True)["VolumeId"]
    enc_snap = ec2.create_snapshot(VolumeId=enc_vol)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[enc_snap], WaiterConfig={"Delay": 1})
    ec2.delete_volume(VolumeId=enc_vol)
    enc_image = register(ec2, "encrypted-image", enc_snap)
    mapping = ec2.describe_images(ImageIds=[enc_image])["Images"][0]["BlockDeviceMappings"][0]["Ebs"]
    check(mapping["Encrypted"] and mapping.get("KmsKeyId", "").startswith("arn:"),
          f"an encrypted snapshot makes an encrypted mapping: {mapping}")
    launched = ec2.run_instances(ImageId=enc_image, MinCount=1, MaxCount=1)["Instances"][0]
    vol = ec2.describe_volumes(VolumeIds=[launched["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]])["Volumes"][0]
    check(vol["Encrypted"], "the owner's instance gets an encrypted volume")
    ec2.terminate_instances(InstanceIds=[launched["InstanceId"]])
    ec2.modify_image_attribute(ImageId=enc_image, LaunchPermission={"Add": [{"UserId": bob_id}]})
    volumes_before = len(bob.describe_volumes()["Volumes"])
    code = error_code(bob.run_instances, ImageId=enc_image, MinCount=1, MaxCount=1)
    check(code is not None and code.startswith("KMS"),
          f"launch permission without access to the KMS key is refused: {code}")
    check(len(bob.describe_volumes()["Volumes"]) == volumes_before, "and leaves no volume")
    # Nor may he register an image of his own over the snapshot shared with him: an image's
    # volumes are made from its data, which needs kms:Decrypt on its key.
    ec2.modify_snapshot_attribute(SnapshotId=enc_snap, Attribute="createVolumePermission",
                                  OperationType="add", UserIds=[bob_id])
    images_before = len(bob.describe_images(Owners=["self"])["Images"])
    code = error_code(register, bob, "bob-over-alice", enc_snap)
    check(code is not None and code.startswith("KMS"),
          f"RegisterImage over a shared encrypted snapshot without its key is refused: {code}")
    check(len(bob.describe_images(Owners=["self"])["Images"]) == images_before,
          "and registers nothing")

    # --- Store and restore ---
    bundle_test(work, daemon, ec2, base)

    # --- DeregisterImage ---
    other_snap = make_snapshot(daemon, ec2)
    kept_image = register(ec2, "keep-snapshot", other_snap)
    ec2.deregister_image(ImageId=kept_image)
    check(ec2.describe_snapshots(SnapshotIds=[other_snap])["Snapshots"][0]["State"] == "completed",
          "DeregisterImage keeps the snapshot by default")
    ec2.delete_snapshot(SnapshotId=other_snap)
    doomed_snap = make_snapshot(daemon, ec2)
    doomed = register(ec2, "drop-snapshot", doomed_snap)
    result = ec2.deregister_image(ImageId=doomed, DeleteAssociatedSnapshots=True)
    check([r["SnapshotId"] for r in result.get("DeleteSnapshotResults", [])] == [doomed_snap],
          f"DeleteAssociatedSnapshots reports the snapshot: {result.get('DeleteSnapshotResults')}")
    check(error_code(ec2.describe_snapshots, SnapshotIds=[doomed_snap]) == "InvalidSnapshot.NotFound",
          "and deletes it")
    check(error_code(ec2.describe_images, ImageIds=[doomed]) == "InvalidAMIID.NotFound", "the image is gone")


def bundle_test(work, daemon, ec2, base):
    # An image with 24 MiB of incompressible data: three 10 MiB parts.
    payload = os.path.join(work, "payload.raw")
    with open(payload, "wb") as f:
        f.write(os.urandom(24 * MiB))
    snap = make_snapshot(daemon, ec2, payload)
    image = register(ec2, "bundled", snap, Description="to the bucket")
    key = ec2.create_store_image_task(ImageId=image, Bucket="backups")["ObjectKey"]
    check(key == f"{image}.bin", f"CreateStoreImageTask's object key: {key}")
    done = wait(lambda: ec2.describe_store_image_tasks(ImageIds=[image])["StoreImageTaskResults"][0]
                ["StoreTaskState"] != "InProgress", "the store task")
    task = ec2.describe_store_image_tasks(ImageIds=[image])["StoreImageTaskResults"][0]
    check(done and task["StoreTaskState"] == "Completed" and task["ProgressPercentage"] == 100,
          f"the store task completes: {task}")
    bucket = os.path.join(work, "buckets", "backups")
    parts = sorted(p for p in os.listdir(bucket) if ".part." in p)
    check(len(parts) == 3, f"the bundle has three 10 MiB parts: {parts}")
    manifest = open(os.path.join(bucket, key)).read()
    check("<wrappedKey>" in manifest and "<sha256>" in manifest and "<signature>" in manifest
          and "<name>bundled</name>" in manifest, "the manifest holds the key, digests, signature, name")
    with open(payload, "rb") as f:
        sample = f.read(4096)
    for part in parts:
        with open(os.path.join(bucket, part), "rb") as f:
            check(sample not in f.read(), f"{part} is encrypted (the data is not in it)")

    def images_and_snapshots():
        return (len(ec2.describe_images(Owners=["self"])["Images"]),
                len(ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]))

    before = images_and_snapshots()
    pristine = os.path.join(work, "pristine")
    shutil.copytree(bucket, pristine)

    def restore_refused(what, damage, expect):
        shutil.rmtree(bucket)
        shutil.copytree(pristine, bucket)
        damage()
        try:
            ec2.create_restore_image_task(Bucket="backups", ObjectKey=key, Name="restored-bad")
            check(False, f"a {what} bundle is refused")
        except Exception as e:  # noqa: BLE001
            check(expect in str(e), f"a {what} bundle is refused naming {expect}: {e}")
        check(images_and_snapshots() == before, f"the {what} bundle registered nothing")

    def flip(path, at):
        with open(path, "r+b") as f:
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 1]))

    restore_refused("tampered", lambda: flip(os.path.join(bucket, parts[1]), 5000), parts[1])
    restore_refused("truncated", lambda: os.truncate(os.path.join(bucket, parts[2]), 1000), parts[2])

    def reorder():
        a, b = os.path.join(bucket, parts[0]), os.path.join(bucket, parts[1])
        os.rename(a, a + ".x")
        os.rename(b, a)
        os.rename(a + ".x", b)
    restore_refused("reordered", reorder, parts[0])
    restore_refused("missing-part", lambda: os.remove(os.path.join(bucket, parts[2])), parts[2])

    def edit_manifest():
        path = os.path.join(bucket, key)
        text = open(path).read().replace("<name>bundled</name>", "<name>evil</name>")
        open(path, "w").write(text)
    restore_refused("re-signed", edit_manifest, "signature")

    shutil.rmtree(bucket)
    shutil.copytree(pristine, bucket)
    restored = ec2.create_restore_image_task(Bucket="backups", ObjectKey=key, Name="restored")["ImageId"]
    r = ec2.describe_images(ImageIds=[restored])["Images"][0]
    check(r["State"] == "available" and r["Name"] == "restored" and r["SourceImageId"] == image
          and r["Description"] == "to the bucket",
          f"the restored image is registered with its lineage: {r['State']} {r.get('SourceImageId')}")
    restored_snap = r["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    check(restored_snap != snap, "the restore made a new snapshot")
    copy = os.path.join(work, "restored.raw")
    out = sh("nbdcopy", daemon.uri(restored_snap), copy)
    check(out.returncode == 0, f"the restored snapshot reads over NBD: {out.stderr}")
    with open(copy, "rb") as f:
        same = hashlib.sha256(f.read(24 * MiB)).digest() == hashlib.sha256(open(payload, "rb").read()).digest()
        rest_zero = f.read(MiB) == bytes(MiB)
    check(same and rest_zero, "the restored image holds the original data, byte for byte")
    check(error_code(ec2.create_restore_image_task, Bucket="Bad_Bucket", ObjectKey=key, Name="xyz")
          == "InvalidParameterValue", "a bad bucket name is refused")
    check(error_code(ec2.create_restore_image_task, Bucket="backups", ObjectKey="../escape", Name="xyz")
          == "InvalidParameterValue", "an object key cannot leave the bucket")


if __name__ == "__main__":
    sys.exit(main())
