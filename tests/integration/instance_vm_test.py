#!/usr/bin/env python3
"""The path a user takes, with real VMs: a bootable disk built from Debian packages
(scripts/guest_image.py: cloud kernel, busybox, SYSLINUX) becomes an AMI with `strata
import-image`; RunInstances boots it in qemu-system-x86_64 (TCG; KVM with hardware
virtualization) from its root volume over NBD; the guest runs its UserData, writes a file and
powers off, and the instance is then stopped. CreateImage makes a new AMI from the instance;
a second account given launch permission runs it, and its guest finds the first guest's file.
A third account without permission is refused. The image is copied to a second region
(CopyImage with SourceRegion) and launched there; its guest finds the file too. Then StartInstances boots again,
TerminateInstances ends a running VM and deletes its volume, and `strata console` prints the
console.

Usage: instance_vm_test.py BIN_DIR [CACHE_DIR]. Prints "N passed, M failed"."""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import boto3  # noqa: E402
import guest_image  # noqa: E402

from strata_testlib import Checks, Daemon, error_code, sh, scratch_dir  # noqa: E402

BIN = sys.argv[1]
check = Checks()


def state(ec2, instance):
    return ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]


def wait_state(ec2, instance, name, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = state(ec2, instance)
        if s["State"]["Name"] == name:
            return s
        time.sleep(0.5)
    check(False, f"{instance} did not reach {name}: {state(ec2, instance)['State']}")
    return state(ec2, instance)


def console(ec2, instance):
    return ec2.get_console_output(InstanceId=instance).get("Output", "")  # boto3 decodes base64.


def launch_and_find(client, image, token, what):
    """Runs `image` until its guest powers off; checks the guest found the first guest's file."""
    instance = client.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    wait_state(client, instance, "stopped")
    text = console(client, instance)
    check(token is not None and f"STRATA-GUEST-FOUND {token.group(1)}" in text, f"{what}: {text[-1500:]}")


def wait_image(client, image, timeout=120):
    deadline = time.time() + timeout
    while client.describe_images(ImageIds=[image])["Images"][0]["State"] == "pending" and time.time() < deadline:
        time.sleep(0.5)
    return client.describe_images(ImageIds=[image])["Images"][0]


def main():
    cache = sys.argv[2] if len(sys.argv) > 2 else os.path.join(BIN, "..", "vm-cache")
    disk = guest_image.build_disk(cache)
    work = scratch_dir("strata-instances-")
    data_dir = os.path.join(work, "data")
    socket = os.path.join(data_dir, "nbd.sock")
    daemon = Daemon(BIN, data_dir, unix_socket=socket,
                    extra=["--region", "local-1,dr-1", "--link", "bandwidth=500MB,rtt=2ms"])
    check(daemon.start(), "stratad starts")
    check("instances boot as VMs: qemu-system-x86_64" in daemon.log_text(), "stratad found QEMU")
    try:
        run(data_dir, daemon, disk, socket)
    finally:
        check(daemon.stop() == 0, "stratad stops cleanly")
    return check.summary()


def run(data_dir, daemon, disk, socket):
    ec2 = daemon.client()
    cli = [f"{BIN}/strata", "--data-dir", data_dir, "--endpoint", f"http://127.0.0.1:{daemon.api}"]
    out = sh(*cli, "import-image", disk, "--name", "busybox-guest", "--nbd-socket", socket)
    check(out.returncode == 0, f"strata import-image: {out.stdout} {out.stderr}")
    image = json.loads(out.stdout)["ImageId"] if out.returncode == 0 else "ami-0"
    check(ec2.describe_images(ImageIds=[image])["Images"][0]["State"] == "available", "the AMI is available")
    check(len(ec2.describe_volumes()["Volumes"]) == 0, "import-image leaves no volume behind")

    accounts = {}
    for name in ("bob", "carol"):
        o = sh(*cli, "account", "create", name)
        accounts[name] = json.loads(o.stdout)
    bob = daemon.client("ec2", (accounts["bob"]["AccessKeyId"], accounts["bob"]["SecretAccessKey"]))
    carol = daemon.client("ec2", (accounts["carol"]["AccessKeyId"], accounts["carol"]["SecretAccessKey"]))

    # The first guest: boots from its NBD root volume, runs UserData, writes /hello.txt, powers off.
    start = time.time()
    first = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.nano",
                              UserData="echo user-data-says-hello\n")  # boto3 encodes it.
    instance = first["Instances"][0]["InstanceId"]
    root_volume = first["Instances"][0]["BlockDeviceMappings"][0]["Ebs"].get("VolumeId")
    check(root_volume is not None, "the instance's root volume is in its mapping")
    stopped = wait_state(ec2, instance, "stopped")
    print(f"first guest ran {time.time() - start:.1f} s", flush=True)
    text = console(ec2, instance)
    token = re.search(r"STRATA-GUEST-OK (\w+)", text)
    check(token is not None, f"the guest booted from its volume and wrote its file: {text[-1500:]}")
    check("user-data-says-hello" in text, "the guest ran the instance's UserData")
    check("InstanceInitiatedShutdown" in stopped["StateReason"]["Code"],
          f"a guest power-off stops the instance: {stopped.get('StateReason')}")
    out = sh(*cli, "console", instance)
    check(out.returncode == 0 and "STRATA-GUEST-OK" in out.stdout, "strata console prints the console")
    out = sh(*cli, "instances")
    listed = {i["InstanceId"]: i for i in json.loads(out.stdout)} if out.returncode == 0 else {}
    volumes = listed.get(instance, {}).get("Volumes", [])
    check(len(volumes) == 1 and volumes[0]["VolumeId"] == root_volume and
          volumes[0]["NbdUri"] == f"nbds://{daemon.admin_keys()[0]}@127.0.0.1:{daemon.nbd}/{root_volume}",
          f"strata instances shows where each volume is exported (strataNbdUri): {out.stdout}")
    # Over TCP as the account, with its TLS key (stratad --nbd-auth account, the default).
    psk = os.path.join(os.path.dirname(data_dir), "admin.psk")
    sh(*cli, "nbd-key", "--psk-file", psk)
    nbdinfo = sh("nbdinfo", "--size", volumes[0]["NbdUri"] + f"?tls-psk-file={psk}") if volumes else None
    check(nbdinfo is not None and nbdinfo.returncode == 0 and int(nbdinfo.stdout) == 1 << 30,
          f"the instance's volume is served at that URI: {nbdinfo and nbdinfo.stderr}")

    # CreateImage from the stopped instance; a second account with launch permission runs it.
    made = ec2.create_image(InstanceId=instance, Name="after-first-boot")["ImageId"]
    check(wait_image(ec2, made)["State"] == "available", "CreateImage completes")
    ec2.modify_image_attribute(ImageId=made, LaunchPermission={"Add": [{"UserId": accounts["bob"]["AccountId"]}]})
    check(error_code(carol.run_instances, ImageId=made, MinCount=1, MaxCount=1) == "AuthFailure",
          "an account without launch permission is refused")
    launch_and_find(bob, made, token, "the second account's guest finds the first guest's file")

    # Disaster recovery: the image copied to another region launches there and finds the file.
    key, secret = daemon.admin_keys()
    dr = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{daemon.api}", region_name="dr-1",
                      aws_access_key_id=key, aws_secret_access_key=secret)
    ec2.create_tags(Resources=[made], Tags=[{"Key": "tier", "Value": "gold"}])
    copied = dr.copy_image(SourceRegion="local-1", SourceImageId=made, Name="dr-copy",
                           CopyImageTags=True)["ImageId"]
    info = wait_image(dr, copied)
    check(info["State"] == "available", f"the cross-region image copy completes: {info['State']}")
    check(info.get("SourceImageId") == made and info.get("SourceImageRegion") == "local-1",
          f"the copy's lineage: {info.get('SourceImageId')} {info.get('SourceImageRegion')}")
    check({"Key": "tier", "Value": "gold"} in info.get("Tags", []), "CopyImageTags copies the tags")
    check(dr.describe_image_attribute(ImageId=copied, Attribute="launchPermission")["LaunchPermissions"] == [],
          "launch permissions are not copied")
    launch_and_find(dr, copied, token, "the copied image boots in the other region and finds the file")

    # StartInstances boots again (the file from the last boot is there); terminate a running VM.
    ec2.start_instances(InstanceIds=[instance])
    wait_state(ec2, instance, "stopped")
    check(console(ec2, instance).count("STRATA-GUEST-OK") == 2, "StartInstances boots the instance again")
    # A guest that keeps running (its UserData sleeps): TerminateInstances ends it.
    third = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                              UserData="sleep 600\n")["Instances"][0]
    deadline = time.time() + 120
    while "STRATA-GUEST-USER-DATA" not in console(ec2, third["InstanceId"]) and time.time() < deadline:
        time.sleep(0.5)
    check(state(ec2, third["InstanceId"])["State"]["Name"] == "running", "a running guest shows running")
    root = third["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    ended = ec2.terminate_instances(InstanceIds=[third["InstanceId"]])["TerminatingInstances"][0]
    check(ended["CurrentState"]["Name"] == "terminated", f"TerminateInstances: {ended['CurrentState']}")
    check(error_code(ec2.describe_volumes, VolumeIds=[root]) == "InvalidVolume.NotFound",
          "its DeleteOnTermination root volume is deleted")


if __name__ == "__main__":
    sys.exit(main())
