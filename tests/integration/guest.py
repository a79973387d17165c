"""A small Linux guest that boots in seconds under QEMU (TCG or KVM), built from Debian packages:
the cloud kernel (apt-get download), an initramfs that loads the virtio modules and switches to
/dev/vda, and a busybox-static root file system (mke2fs -d). The guest's init writes the token
given on the kernel command line (strata.token=...) to /hello.txt, syncs, prints
"STRATA-GUEST-OK <token>" on the serial console and powers off."""
import glob
import os
import shutil
import subprocess

MODULES = ["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
           "virtio_blk"]
APPLETS = ["sh", "mount", "umount", "sed", "cat", "echo", "sync", "poweroff", "mkdir", "sleep", "ls",
           "insmod", "switch_root"]

INITRAMFS_INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in {modules}; do
  [ -f /lib/modules/$m.ko ] && /bin/busybox insmod /lib/modules/$m.ko
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do /bin/busybox sleep 0.1; i=$((i+1)); done
if ! /bin/busybox mount -t ext4 /dev/vda /newroot; then
  echo "STRATA-GUEST-FAIL cannot mount /dev/vda"
  /bin/busybox poweroff -f
fi
/bin/busybox umount /proc
/bin/busybox mount --move /dev /newroot/dev
exec /bin/busybox switch_root /newroot /sbin/init
"""

ROOT_INIT = """#!/bin/sh
mount -t proc proc /proc
token=$(sed -n 's/.*strata\\.token=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
echo "$token" > /hello.txt
sync
echo "STRATA-GUEST-OK $token"
poweroff -f
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
        for d in ("sbin", "proc", "dev", "sys", "tmp"):
            os.makedirs(os.path.join(tree, d), exist_ok=True)
        with open(os.path.join(tree, "sbin", "init"), "w") as f:
            f.write(ROOT_INIT)
        os.chmod(os.path.join(tree, "sbin", "init"), 0o755)
        run("mke2fs", "-q", "-F", "-t", "ext4", "-E", "lazy_itable_init=0,lazy_journal_init=0",
            "-d", tree, rootfs + ".tmp", "64M")
        os.rename(rootfs + ".tmp", rootfs)
    return vmlinuz, initrd, rootfs


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
