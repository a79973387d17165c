#!/usr/bin/env python3
"""KMS and encrypted volumes through the real clients: boto3 (KMS JSON API, EC2), the aws CLI,
and NBD clients writing to encrypted volumes. Two accounts, with and without a grant; a
disabled key; EBS encryption by default; then the invariant-5 scan of the stopped daemon's
data directory (and the same scan finding plaintext of an unencrypted volume), and restarts
with a wrong root key and with none.

Usage: kms_test.py BIN_DIR. Prints "N passed, M failed".
"""
import base64
import json
import os
import subprocess
import sys


from strata_testlib import GiB, MiB, Checks, Daemon, error_code, sh, scratch_dir

BIN = sys.argv[1]
check = Checks()
GROUP = "i-0abcdef0123456789"


def marker(n):
    word = b"STRATA-KMS-TEST-PLAINTEXT-MARKER-"
    return (word * (n // len(word) + 1))[:n]


def files_containing(root, needle):
    hits = []
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                if needle in fh.read():
                    hits.append(p)
    return hits


def main():
    work = scratch_dir("strata-kms-")
    data_dir = os.path.join(work, "data")
    daemon = Daemon(BIN, data_dir)
    check(daemon.start(), "stratad starts")
    root_key_file = data_dir + ".kms-root-key"
    check(os.path.exists(root_key_file) and oct(os.stat(root_key_file).st_mode & 0o777) == "0o600",
          "the root key was made beside the data directory, mode 0600")
    check("generated the KMS root key" in daemon.log_text(), "stratad says where the root key is")
    try:
        run(work, data_dir, daemon)
    finally:
        if daemon.proc.poll() is None:
            check(daemon.stop() == 0, "stratad stops cleanly")
    return check.summary()


def raw_kms(daemon, operation, body):
    """A SigV4-signed KMS request with `body` sent as it is (boto3 validates types first)."""
    import urllib.request
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    url = f"http://127.0.0.1:{daemon.api}/"
    request = AWSRequest(method="POST", url=url, data=body.encode(), headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"TrentService.{operation}"})
    SigV4Auth(Credentials(*daemon.admin_keys()), "kms", "local-1").add_auth(request)
    req = urllib.request.Request(url, data=body.encode(), headers=dict(request.headers), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def malformed_kms_json(daemon, key_id):
    """Fields of the wrong type get SerializationException and change nothing; stratad lives."""
    cases = [
        ("ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": "seven"}),
        ("EnableKeyRotation", {"KeyId": key_id, "RotationPeriodInDays": [90]}),
        ("CreateKey", {"Tags": [{"TagKey": "a", "TagValue": 5}]}),
        ("CreateKey", {"Description": {"nested": True}}),
        ("Encrypt", {"KeyId": 12, "Plaintext": "aGk="}),
        ("Encrypt", {"KeyId": key_id, "Plaintext": "aGk=", "EncryptionContext": {"a": 1}}),
        ("GenerateDataKey", {"KeyId": key_id, "NumberOfBytes": 1.5}),
        ("CreateGrant", {"KeyId": key_id, "GranteePrincipal": "x", "Operations": [7]}),
        ("DescribeKey", {"KeyId": None, "GrantTokens": "t"}),
    ]
    keys_before = len(daemon.client("kms").list_keys()["Keys"])
    for operation, body in cases:
        status, reply = raw_kms(daemon, operation, json.dumps(body))
        check(status == 400 and reply.get("__type") == "SerializationException",
              f"{operation} with {body}: SerializationException ({status} {reply})")
    status, reply = raw_kms(daemon, "DescribeKey", "[1, 2]")
    check(status == 400 and reply.get("__type") == "SerializationException", f"a JSON list body: {reply}")
    kms = daemon.client("kms")
    check(len(kms.list_keys()["Keys"]) == keys_before, "malformed CreateKeys made no key")
    check(kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled",
          "the key was not scheduled for deletion, and stratad still answers")


def run(work, data_dir, daemon):
    ec2, kms = daemon.client("ec2"), daemon.client("kms")
    cli = [f"{BIN}/strata", "--data-dir", data_dir, "--endpoint", f"http://127.0.0.1:{daemon.api}"]
    out = sh(*cli, "account", "create", "bob")
    bob_keys = json.loads(out.stdout) if out.returncode == 0 else {}
    bob = (bob_keys.get("AccessKeyId", "x"), bob_keys.get("SecretAccessKey", "x"))
    bob_id = bob_keys.get("AccountId", "")
    bob_ec2, bob_kms = daemon.client("ec2", bob), daemon.client("kms", bob)

    # --- KMS calls ---
    key = kms.create_key(Description="backups", Tags=[{"TagKey": "team", "TagValue": "storage"}])
    meta = key["KeyMetadata"]
    key_id, key_arn = meta["KeyId"], meta["Arn"]
    check(meta["KeyState"] == "Enabled" and meta["KeySpec"] == "SYMMETRIC_DEFAULT", f"CreateKey: {meta}")
    check(any(k["KeyId"] == key_id for k in kms.list_keys()["Keys"]), "ListKeys")
    kms.create_alias(AliasName="alias/backups", TargetKeyId=key_id)
    check(kms.describe_key(KeyId="alias/backups")["KeyMetadata"]["KeyId"] == key_id, "alias resolves")
    check(error_code(kms.create_alias, AliasName="alias/aws/mine", TargetKeyId=key_id) is not None,
          "alias/aws/ is reserved")
    blob = kms.encrypt(KeyId="alias/backups", Plaintext=b"hello", EncryptionContext={"app": "t"})
    check(kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"app": "t"})["Plaintext"] == b"hello",
          "Encrypt/Decrypt with an encryption context")
    check(error_code(kms.decrypt, CiphertextBlob=blob["CiphertextBlob"]) == "InvalidCiphertextException",
          "a wrong encryption context is refused")
    tampered = bytearray(blob["CiphertextBlob"])
    tampered[-5] ^= 1
    check(error_code(kms.decrypt, CiphertextBlob=bytes(tampered), EncryptionContext={"app": "t"})
          == "InvalidCiphertextException", "a flipped bit is refused")
    dk = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    check(len(dk["Plaintext"]) == 32 and kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"],
          "GenerateDataKey")
    nopt = kms.generate_data_key_without_plaintext(KeyId=key_id, NumberOfBytes=64)
    check("Plaintext" not in nopt and len(kms.decrypt(CiphertextBlob=nopt["CiphertextBlob"])["Plaintext"]) == 64,
          "GenerateDataKeyWithoutPlaintext")
    other = kms.create_key(Description="other")["KeyMetadata"]["KeyId"]
    moved = kms.re_encrypt(CiphertextBlob=dk["CiphertextBlob"], DestinationKeyId=other)
    check(kms.decrypt(CiphertextBlob=moved["CiphertextBlob"])["KeyId"].endswith(other), "ReEncrypt")
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=180)
    check(kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"], "EnableKeyRotation")
    kms.rotate_key_on_demand(KeyId=key_id)
    check(kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"],
          "old ciphertexts decrypt after rotation")
    policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
    check(policy["Statement"][0]["Action"] == "kms:*", "GetKeyPolicy: the default policy")
    check(error_code(kms.put_key_policy, KeyId=key_id, PolicyName="default", Policy="{") ==
          "MalformedPolicyDocumentException", "a malformed policy is refused")
    doomed = kms.create_key()["KeyMetadata"]["KeyId"]
    check(error_code(kms.schedule_key_deletion, KeyId=doomed, PendingWindowInDays=3) is not None,
          "a deletion window under 7 days is refused")
    gone = kms.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)
    check(gone["KeyState"] == "PendingDeletion", "ScheduleKeyDeletion")
    check(error_code(kms.encrypt, KeyId=doomed, Plaintext=b"x") == "KMSInvalidStateException",
          "a key pending deletion cannot be used")
    kms.cancel_key_deletion(KeyId=doomed)
    check(kms.describe_key(KeyId=doomed)["KeyMetadata"]["KeyState"] == "Disabled",
          "CancelKeyDeletion leaves the key disabled")
    out = sh("aws", "--endpoint-url", f"http://127.0.0.1:{daemon.api}", "kms", "list-aliases",
             "--output", "json", env=dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=os.path.join(data_dir, "credentials"),
                                          AWS_CONFIG_FILE=os.path.join(data_dir, "config")))
    aliases = [a["AliasName"] for a in json.loads(out.stdout)["Aliases"]] if out.returncode == 0 else []
    check("alias/backups" in aliases, f"aws kms list-aliases: {aliases} {out.stderr[-300:]}")

    malformed_kms_json(daemon, key_id)

    # --- Encrypted volumes ---
    vol = ec2.create_volume(Size=1, AvailabilityZone="local-1a", Encrypted=True, KmsKeyId=key_arn)
    check(vol["Encrypted"] and vol["KmsKeyId"] == key_arn, f"CreateVolume Encrypted with KmsKeyId: {vol.get('KmsKeyId')}")
    vol_id = vol["VolumeId"]
    ec2.attach_volume(VolumeId=vol_id, InstanceId=GROUP, Device="/dev/sdf")
    uri = daemon.uri(vol_id)
    image = os.path.join(work, "secret.raw")
    with open(image, "wb") as f:
        f.write(marker(4 * MiB))
        f.truncate(GiB)
    out = sh("nbdcopy", image, uri)
    check(out.returncode == 0, f"nbdcopy into the encrypted volume: {out.stderr}")
    out = sh("qemu-img", "compare", "-f", "raw", "-F", "raw", image, uri)
    check(out.returncode == 0, f"the encrypted volume reads back: {out.stdout} {out.stderr}")
    snap = ec2.create_snapshot(VolumeId=vol_id)["SnapshotId"]
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig={"Delay": 1})
    s = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
    check(s["Encrypted"] and s["KmsKeyId"] == key_arn, "the snapshot is encrypted with the same key")
    clone = ec2.create_volume(SnapshotId=snap, AvailabilityZone="local-1a")
    check(clone["Encrypted"], "a volume from an encrypted snapshot is encrypted")
    copy = ec2.copy_snapshot(SourceSnapshotId=snap, SourceRegion="local-1", Encrypted=True, KmsKeyId=other)
    ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[copy["SnapshotId"]], WaiterConfig={"Delay": 1})
    check(ec2.describe_snapshots(SnapshotIds=[copy["SnapshotId"]])["Snapshots"][0]["KmsKeyId"].endswith(other),
          "CopySnapshot under another key")
    filtered = ec2.describe_volumes(Filters=[{"Name": "encrypted", "Values": ["true"]}])["Volumes"]
    check({v["VolumeId"] for v in filtered} == {vol_id, clone["VolumeId"]}, "filter encrypted=true")

    # Across accounts: shared, but no volume without the key; with a grant, yes.
    ec2.modify_snapshot_attribute(SnapshotId=snap, Attribute="createVolumePermission",
                                  OperationType="add", UserIds=[bob_id])
    code = error_code(bob_ec2.create_volume, SnapshotId=snap, AvailabilityZone="local-1a")
    check(code == "KMSAccessDeniedException", f"without a grant Bob cannot use the shared snapshot: {code}")
    # Nor by naming a key of his own (re-encrypting needs kms:Decrypt on the source key), nor
    # by copying it, nor by reading its blocks through EBS direct.
    bob_key = bob_kms.create_key(Description="bob's")["KeyMetadata"]["KeyId"]
    volumes_before = len(bob_ec2.describe_volumes()["Volumes"])
    code = error_code(bob_ec2.create_volume, SnapshotId=snap, AvailabilityZone="local-1a",
                      Encrypted=True, KmsKeyId=bob_key)
    check(code == "KMSAccessDeniedException", f"nor under a key of his own: {code}")
    code = error_code(bob_ec2.copy_snapshot, SourceSnapshotId=snap, SourceRegion="local-1",
                      Encrypted=True, KmsKeyId=bob_key)
    check(code == "KMSAccessDeniedException", f"nor as a copy under his key: {code}")
    check(len(bob_ec2.describe_volumes()["Volumes"]) == volumes_before
          and bob_ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] == [],
          "the refusals made nothing")
    bob_ebs = daemon.client("ebs", bob)
    blocks = bob_ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
    code = error_code(bob_ebs.get_snapshot_block, SnapshotId=snap,
                      BlockIndex=blocks[0]["BlockIndex"], BlockToken=blocks[0]["BlockToken"])
    check(code == "AccessDeniedException", f"nor through EBS direct GetSnapshotBlock: {code}")
    grant = kms.create_grant(KeyId=key_id, GranteePrincipal=bob_id,
                             Operations=["Decrypt", "DescribeKey", "GenerateDataKey"])
    check(len(kms.list_grants(KeyId=key_id)["Grants"]) == 1, "ListGrants")
    bob_vol = bob_ec2.create_volume(SnapshotId=snap, AvailabilityZone="local-1a")
    check(bob_vol["Encrypted"], "with a grant Bob makes an encrypted volume of it")
    data = bob_ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=blocks[0]["BlockIndex"],
                                      BlockToken=blocks[0]["BlockToken"])["BlockData"].read()
    check(len(data) == 512 * 1024, "with a grant, GetSnapshotBlock reads it")
    bob_ec2.attach_volume(VolumeId=bob_vol["VolumeId"], InstanceId=GROUP, Device="/dev/sdg")
    back = os.path.join(work, "bob.raw")
    out = sh("nbdcopy", daemon.uri(bob_vol["VolumeId"]), back)
    check(out.returncode == 0 and open(back, "rb").read(4 * MiB) == marker(4 * MiB), "Bob's volume reads the data")
    bob_kms.retire_grant(GrantToken=grant["GrantToken"])
    check(error_code(bob_ec2.create_volume, SnapshotId=snap, AvailabilityZone="local-1a") ==
          "KMSAccessDeniedException", "after RetireGrant Bob is refused again")

    # A disabled key: no new attachments; the attached volume keeps working; re-enabling restores.
    kms.disable_key(KeyId=key_id)
    code = error_code(ec2.attach_volume, VolumeId=clone["VolumeId"], InstanceId=GROUP, Device="/dev/sdh")
    check(code == "KMSKeyDisabled", f"attach with a disabled key: {code}")
    code = error_code(ec2.create_volume, SnapshotId=snap, AvailabilityZone="local-1a")
    check(code == "KMSKeyDisabled", f"create with a disabled key: {code}")
    out = sh("qemu-io", "-f", "raw", "-c", "read 0 4k", uri)
    check(out.returncode == 0 and "read 4096/4096" in out.stdout, "the attached volume keeps working")
    kms.enable_key(KeyId=key_id)
    ec2.attach_volume(VolumeId=clone["VolumeId"], InstanceId=GROUP, Device="/dev/sdh")
    state = ec2.describe_volumes(VolumeIds=[clone["VolumeId"]])["Volumes"][0]["State"]
    check(state == "in-use", f"re-enabled: attach works: {state}")

    # EBS encryption by default.
    check(not ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"], "off by default")
    ec2.enable_ebs_encryption_by_default()
    check(ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"], "EnableEbsEncryptionByDefault")
    check(ec2.get_ebs_default_kms_key_id()["KmsKeyId"] ==
          kms.describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"], "the default key is alias/aws/ebs")
    ec2.modify_ebs_default_kms_key_id(KmsKeyId=key_id)
    check(ec2.get_ebs_default_kms_key_id()["KmsKeyId"] == key_arn, "ModifyEbsDefaultKmsKeyId")
    auto = ec2.create_volume(Size=1, AvailabilityZone="local-1a")
    check(auto["Encrypted"] and auto["KmsKeyId"] == key_arn, "a plain CreateVolume is now encrypted")
    check(not bob_ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"], "per account")
    ec2.reset_ebs_default_kms_key_id()
    ec2.disable_ebs_encryption_by_default()
    check(not ec2.create_volume(Size=1, AvailabilityZone="local-1a")["Encrypted"], "disabled again")

    # The control: an unencrypted volume with the same marker.
    plain = ec2.create_volume(Size=1, AvailabilityZone="local-1a")["VolumeId"]
    ec2.attach_volume(VolumeId=plain, InstanceId="i-0123456789abcdef1", Device="/dev/sdf")
    sh("nbdcopy", image, daemon.uri(plain))

    # --- Invariant 5: stop, then scan every file of the data directory ---
    check(daemon.stop() == 0, "stratad stops cleanly")
    hits = files_containing(data_dir, marker(64))
    # The control volume holds the same marker: it must be found there and nowhere else.
    plain_hits = [h for h in hits if plain in h]
    check(plain_hits and len(hits) == len(plain_hits),
          f"the marker is only in the unencrypted volume's files: {hits}")
    root_key = open(data_dir + ".kms-root-key").read().strip()
    check(not files_containing(data_dir, bytes.fromhex(root_key)) and not files_containing(data_dir, root_key.encode()),
          "the root key is not in the data directory")
    check(not files_containing(data_dir, dk["Plaintext"]), "a data key handed out is not on disk")

    # --- A wrong root key, or none: encrypted data stays closed with a clear error ---
    wrong = os.path.join(work, "wrong.key")
    with open(wrong, "w") as f:
        f.write(os.urandom(32).hex())
    os.chmod(wrong, 0o600)
    daemon.extra = ["--kms-root-key-file", wrong]
    check(daemon.start(), "stratad starts with a wrong root key")
    out = sh("nbdcopy", daemon.uri(vol_id), os.path.join(work, "x.raw"))
    check(out.returncode != 0, "reads of an encrypted volume fail with a wrong root key")
    check("wrong root key" in daemon.log_text(), "the log says the root key is wrong")
    check(error_code(daemon.client("kms").encrypt, KeyId=key_id, Plaintext=b"x") is not None,
          "the KMS refuses with a wrong root key")
    daemon.stop()
    daemon.extra = ["--kms-root-key-file", data_dir + ".kms-root-key"]
    check(daemon.start(), "stratad restarts with the right root key")
    out = sh("qemu-img", "compare", "-f", "raw", "-F", "raw", image, daemon.uri(vol_id))
    check(out.returncode == 0, f"the right root key opens it again: {out.stderr}")


if __name__ == "__main__":
    sys.exit(main())
