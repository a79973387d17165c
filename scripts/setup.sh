#!/usr/bin/env bash
# Installs every Debian package Strata's build and tests need (idempotent), then configures and
# builds into build/. Works on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config clang
  librocksdb-dev liburing-dev libxxhash-dev libssl-dev libgcrypt20-dev libabsl-dev libzstd-dev
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libboost-dev libpugixml-dev libcli11-dev wrk
  python3 qemu-utils libnbd-bin python3-libnbd fio nbdkit nbd-server
  qemu-system-x86 busybox-static cpio e2fsprogs libclang-rt-14-dev
  syslinux syslinux-common mtools dosfstools fdisk
  ceph-mon ceph-osd ceph-common librados-dev libradospp-dev qemu-block-extra
  radosgw libcurl4-openssl-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The API tests drive the real clients: boto3 and the aws CLI (the machine image has pip's; a
# fresh Debian 12 gets Debian's).
python3 -c 'import boto3' 2>/dev/null || missing+=(python3-boto3)
command -v aws >/dev/null 2>&1 || missing+=(awscli)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-upgrade --no-install-recommends -q "${missing[@]}"
fi

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} ${CMAKE_EXTRA:-} >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
