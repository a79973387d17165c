#!/usr/bin/env python3
"""A small Linux guest that boots in seconds under QEMU (TCG or KVM), built from Debian packages:
the cloud kernel (apt-get download), an initramfs that loads the virtio modules and switches to
the root device (root= on the kernel command line, else /dev/vda), and a busybox-static root file
system (mke2fs -d).

The guest's init prints "STRATA-GUEST-FOUND <token>" when /hello.txt exists from an earlier
boot, runs the instance's UserData (QEMU fw_cfg opt/strata/user-data) as a shell script if
there is one, writes a new token (strata.token=... on the kernel command line, else a random
one) to /hello.txt, syncs, prints "STRATA-GUEST-OK <token>" and powers off.

build() gives the parts for QEMU's direct kernel boot; build_disk() a bootable raw disk image
(MBR, a FAT boot partition with SYSLINUX, the kernel and initramfs, and the ext4 root
partition), which is what `strata import-image` turns into an AMI.

Usage: guest_image.py CACHE_DIR  (prints the path of the bootable disk image)"""
import glob
import os
import shutil
import subprocess

MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
           "virtio_blk"]
ROOT_MODULES = ["qemu_fw_cfg"]  # Loaded by the root file system's init (UserData).
APPLETS = ["sh", "mount", "umount", "sed", "cat", "echo", "sync", "poweroff", "mkdir", "sleep", "ls",
           "insmod", "switch_root", "date", "uname", "dd", "head", "tr"]

INITRAMFS_INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in {modules}; do
  [ -f /lib/modules/$m.ko ] && /bin/busybox insmod /lib/modules/$m.ko
done
root=$(/bin/busybox sed -n 's/.*root=\\(\\/dev\\/[a-z0-9]*\\).*/\\1/p' /proc/cmdline)
[ -n "$root" ] || root=/dev/vda
i=0
while [ ! -b $root ] && [ $i -lt 100 ]; do /bin/busybox sleep 0.1; i=$((i+1)); done
if ! /bin/busybox mount -t ext4 $root /newroot; then
  echo "STRATA-GUEST-FAIL cannot mount $root"
  /bin/busybox poweroff -f
fi
/bin/busybox umount /proc
/bin/busybox mount --move /dev /newroot/dev
exec /bin/busybox switch_root /newroot /sbin/init
"""

ROOT_INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "STRATA-GUEST-BOOTED $(uname -r)"
[ -f /hello.txt ] && echo "STRATA-GUEST-FOUND $(cat /hello.txt)"
insmod /lib/modules/qemu_fw_cfg.ko 2>/dev/null
user_data=/sys/firmware/qemu_fw_cfg/by_name/opt/strata/user-data/raw
if [ -f $user_data ]; then
  echo "STRATA-GUEST-USER-DATA"
  sh $user_data
fi
token=$(sed -n 's/.*strata\\.token=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
[ -n "$token" ] || token=$(tr -d - < /proc/sys/kernel/random/uuid)
echo "$token" > /hello.txt
sync
echo "STRATA-GUEST-OK $token"
poweroff -f
"""

SYSLINUX_CFG = """DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND console=ttyS0 root=/dev/vda2 panic=-1 quiet
"""


def run(*args, **kwargs):
    subprocess.run([str(a) for a in args], check=True, capture_output=True, **kwargs)


def kernel_package():
    out = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        name = line.split(":")[-1].strip()
        if name.startswith("linux-image-") and name[len("linux-image-"):][:1].isdigit():
            return name
    return None


def fetch_kernel(cache):
    """Downloads and unpacks the cloud kernel into cache/kernel (once)."""
    root = os.path.join(cache, "kernel")
    if glob.glob(os.path.join(root, "boot", "vmlinuz-*")):
        return root
    os.makedirs(cache, exist_ok=True)
    package = kernel_package()
    if package is None:  # No package lists yet (a fresh machine): fetch them.
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        package = kernel_package()
    if package is None:
        raise RuntimeError("no linux-image-cloud-amd64 in the package lists")
    run("apt-get", "download", package, cwd=cache)
    deb = glob.glob(os.path.join(cache, f"{package}_*.deb"))[0]
    run("dpkg-deb", "-x", deb, root)
    os.remove(deb)
    return root


def busybox_tree(root, applets):
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(root, "bin", "busybox"))
    for a in applets:
        link = os.path.join(root, "bin", a)
        if not os.path.exists(link):
            os.symlink("busybox", link)


def build(cache):
    """Returns (kernel, initrd, rootfs image); built once into `cache`."""
    cache = os.path.abspath(cache)
    kernel_root = fetch_kernel(cache)
    vmlinuz = glob.glob(os.path.join(kernel_root, "boot", "vmlinuz-*"))[0]
    initrd = os.path.join(cache, "initrd.img")
    rootfs = os.path.join(cache, "rootfs.img")
    if not os.path.exists(initrd):
        tree = os.path.join(cache, "initramfs")
        shutil.rmtree(tree, ignore_errors=True)
        busybox_tree(tree, APPLETS)
        os.makedirs(os.path.join(tree, "lib", "modules"))
        for m in MODULES:
            found = glob.glob(os.path.join(kernel_root, "lib", "modules", "*", "kernel", "drivers", "**",
                                           f"{m}.ko"), recursive=True)
            if found:
                shutil.copy(found[0], os.path.join(tree, "lib", "modules", f"{m}.ko"))
        with open(os.path.join(tree, "init"), "w") as f:
            f.write(INITRAMFS_INIT.format(modules=" ".join(MODULES)))
        os.chmod(os.path.join(tree, "init"), 0o755)
        subprocess.run(f"find . | cpio -o -H newc --quiet | gzip -1 > {initrd}.tmp", shell=True,
                       check=True, cwd=tree)
        os.rename(initrd + ".tmp", initrd)
    if not os.path.exists(rootfs):
        tree = os.path.join(cache, "rootfs")
        shutil.rmtree(tree, ignore_errors=True)
        busybox_tree(tree, APPLETS)
        for d in ("sbin", "proc", "dev", "sys", "tmp", "lib/modules"):
            os.makedirs(os.path.join(tree, d), exist_ok=True)
        for m in ROOT_MODULES:
            found = glob.glob(os.path.join(kernel_root, "lib", "modules", "*", "kernel", "**",
                                           f"{m}.ko"), recursive=True)
            if found:
                shutil.copy(found[0], os.path.join(tree, "lib", "modules", f"{m}.ko"))
        with open(os.path.join(tree, "sbin", "init"), "w") as f:
            f.write(ROOT_INIT)
        os.chmod(os.path.join(tree, "sbin", "init"), 0o755)
        run("mke2fs", "-q", "-F", "-t", "ext4", "-E", "lazy_itable_init=0,lazy_journal_init=0",
            "-d", tree, rootfs + ".tmp", "64M")
        os.rename(rootfs + ".tmp", rootfs)
    return vmlinuz, initrd, rootfs


MIB = 1 << 20
BOOT_MIB = 32
ROOT_MIB = 64


def build_disk(cache):
    """A bootable raw disk (legacy BIOS): MBR with SYSLINUX's boot code; partition 1, FAT,
    bootable, holding SYSLINUX, the kernel and the initramfs; partition 2 the ext4 root file
    system. Needs syslinux, syslinux-common, mtools, dosfstools and fdisk. Built once."""
    cache = os.path.abspath(cache)
    disk = os.path.join(cache, "disk.raw")
    if os.path.exists(disk):
        return disk
    kernel, initrd, rootfs = build(cache)
    boot = os.path.join(cache, "boot.img")
    if os.path.exists(boot):
        os.remove(boot)
    run("mkfs.fat", "-C", boot, str(BOOT_MIB * 1024))
    cfg = os.path.join(cache, "syslinux.cfg")
    with open(cfg, "w") as f:
        f.write(SYSLINUX_CFG)
    for src, name in ((kernel, "vmlinuz"), (initrd, "initrd.img"), (cfg, "syslinux.cfg")):
        run("mcopy", "-i", boot, src, f"::{name}")
    run("syslinux", "--install", boot)
    tmp = disk + ".tmp"
    with open(tmp, "wb") as f:
        f.truncate((1 + BOOT_MIB + ROOT_MIB + 1) * MIB)
    layout = (f"label: dos\nstart=2048, size={BOOT_MIB * 2048}, type=c, bootable\n"
              f"start={(1 + BOOT_MIB) * 2048}, size={ROOT_MIB * 2048}, type=83\n")
    subprocess.run(["sfdisk", "-q", tmp], input=layout, text=True, check=True, capture_output=True)
    run("dd", f"if={boot}", f"of={tmp}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
    run("dd", f"if={rootfs}", f"of={tmp}", "bs=1M", f"seek={1 + BOOT_MIB}", "conv=notrunc,sparse",
        "status=none")
    run("dd", "if=/usr/lib/syslinux/mbr/mbr.bin", f"of={tmp}", "bs=440", "count=1", "conv=notrunc",
        "status=none")
    os.remove(boot)
    os.rename(tmp, disk)
    return disk


def qemu_command(kernel, initrd, drives, serial_log, append=""):
    """qemu-system-x86_64 booting `kernel` with each NBD URI in `drives` as a virtio disk, in
    order. TCG unless STRATA_VM_ACCEL=kvm: on these machines /dev/kvm exists but a KVM guest
    never runs (nested virtualization), and TCG boots this guest in about 4 s."""
    accel = ["-accel", os.environ.get("STRATA_VM_ACCEL", "tcg")]
    cmd = ["qemu-system-x86_64", *accel, "-m", "256", "-nodefaults", "-display", "none", "-nic", "none",
           "-serial", f"file:{serial_log}", "-no-reboot", "-kernel", kernel, "-initrd", initrd,
           "-append", f"console=ttyS0 panic=-1 quiet {append}".strip()]
    for uri in drives:
        cmd += ["-drive", f"file={uri},format=raw,if=virtio,cache=none"]
    return cmd


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(build_disk(sys.argv[1]))
