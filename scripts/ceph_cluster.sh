#!/usr/bin/env bash
# A throw-away one-node Ceph cluster (one mon, one OSD) on 127.0.0.1 for trying Strata's RADOS
# backend and for its tests. Everything (conf, keys, data, logs, sockets, PIDs) stays under DIR.
#
#   scripts/ceph_cluster.sh start DIR   # prints `export CEPH_CONF=...` lines once a write worked
#   scripts/ceph_cluster.sh stop DIR [--purge]
#
# start makes two pools: CEPH_POOL (default "strata", catalog and indexes, replicated) and
# CEPH_DATA_POOL (default "strata-data", chunk objects). Knobs (environment, at creation):
#   CEPH_OBJECTSTORE  memstore (default: RAM, nothing survives a stop) | bluestore (sparse file)
#   CEPH_START_TIMEOUT seconds for the whole start (default 120)
#   CEPH_WITH_RGW     1: radosgw (S3) too, on a free 127.0.0.1 port, with a user whose keys
#                     start prints as STRATA_ARCHIVE_S3 (the endpoint), STRATA_ARCHIVE_ACCESS_KEY_ID
#                     and STRATA_ARCHIVE_SECRET_ACCESS_KEY: stratad's archive tier (--archive-s3).
#                     Needs the Debian package radosgw.
# A stopped bluestore cluster restarts with its data. Needs the Debian packages ceph-mon,
# ceph-osd and ceph-common (scripts/setup.sh installs them).
set -euo pipefail

die() { echo "ceph_cluster: $*" >&2; exit 1; }
say() { echo "ceph_cluster: $*" >&2; }
[ $# -ge 2 ] || die "usage: $0 start|stop DIR [--purge]"
command=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
CONF=$DIR/ceph.conf
case "$DIR" in *[[:space:]\$\;\#\'\"\\]*) die "$DIR: no spaces, quotes, \$, ; or # (ceph.conf syntax)" ;; esac

# A PID is one of ours only while its command line names our ceph.conf (PIDs get reused).
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF -- "$CONF"; }

stop_cluster() {
  local purge=$1 signal=TERM name pid
  [ "$purge" = 1 ] && signal=KILL
  # radosgw before the OSD (it hangs without one), the OSD before the mon (an OSD tells the mon
  # it stops, and waits if the mon is gone).
  for name in rgw osd.0 mon.a; do
    pid=$(awk -v n="$name" '$1 == n {print $2}' "$DIR/pids" 2>/dev/null | tail -n 1 || true)
    [ -n "$pid" ] && ours "$pid" || continue
    kill -"$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do ours "$pid" || break; sleep 0.1; done
    if ours "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  done
  rm -f "$DIR/pids"
  if [ "$purge" = 1 ]; then rm -rf -- "$DIR"; fi
}

if [ "$command" = stop ]; then
  stop_cluster "$([ "${3:-}" = --purge ] && echo 1 || echo 0)"
  exit 0
fi
[ "$command" = start ] || die "unknown command $command (start or stop)"

for tool in ceph-mon ceph-osd ceph-authtool monmaptool ceph rados; do
  command -v "$tool" >/dev/null || die "$tool not found: apt-get install ceph-mon ceph-osd ceph-common"
done
free_port() {
  local candidate
  for _ in $(seq 1 100); do
    candidate=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null || { echo "$candidate"; return 0; }
  done
  die "no free port on 127.0.0.1"
}
# Daemons prefer these variables over their own conf and keyring.
unset CEPH_KEYRING CEPH_ARGS CEPH_CONF
TIMEOUT=${CEPH_START_TIMEOUT:-120}
DEADLINE=$(($(date +%s) + TIMEOUT))
left() { local r=$((DEADLINE - $(date +%s))); [ $r -gt 0 ] && echo $r || echo 1; }

if [ -f "$DIR/pids" ]; then
  while read -r name pid; do
    ours "$pid" && die "$DIR is running ($name, pid $pid); stop it first"
  done <"$DIR/pids"
fi

launch() {  # name, command...: a daemon in the foreground of its own session, PID recorded
  local name=$1
  shift
  setsid "$@" -f </dev/null >>"$DIR/log/$name.out" 2>&1 &
  echo "$name $!" >>"$DIR/pids"
}

on_failure() {
  local rc=$?
  [ $rc -eq 0 ] && return
  for f in "$DIR"/log/*.out "$DIR"/log/osd.0.log; do
    [ -s "$f" ] && { echo "--- $f" >&2; tail -n 12 "$f" >&2; }
  done
  stop_cluster 0
}
trap on_failure EXIT

if [ -f "$DIR/created" ]; then
  . "$DIR/created"
  [ "$STORE" = bluestore ] || die "$DIR is a stopped memstore cluster (nothing kept): stop --purge, then start"
  launch mon.a ceph-mon -c "$CONF" -i a
  launch osd.0 ceph-osd -c "$CONF" -i 0
else
  WITH_RGW=${CEPH_WITH_RGW:-0}
  if [ "$WITH_RGW" = 1 ]; then
    command -v radosgw >/dev/null || die "CEPH_WITH_RGW=1 needs radosgw: apt-get install radosgw"
  fi
  [ ! -e "$CONF" ] || die "$DIR holds a cluster whose first start failed: stop $DIR --purge"
  STORE=${CEPH_OBJECTSTORE:-memstore}
  POOL=${CEPH_POOL:-strata}
  DATA_POOL=${CEPH_DATA_POOL:-strata-data}
  case "$STORE" in
    memstore) store_lines="memstore device bytes = 4294967296" ;;
    bluestore) store_lines="bluestore block create = true
bluestore block size = 10737418240
bluestore fsck on mount = false
osd memory target = 1073741824" ;;
    *) die "CEPH_OBJECTSTORE must be memstore or bluestore" ;;
  esac
  port=$(free_port)
  RGW_PORT=0
  if [ "$WITH_RGW" = 1 ]; then
    RGW_PORT=$(free_port)
    [ "$RGW_PORT" != "$port" ] || RGW_PORT=$(free_port)
  fi
  fsid=$(cat /proc/sys/kernel/random/uuid)
  mkdir -p "$DIR/log" "$DIR/run" "$DIR/mon.a" "$DIR/osd.0"
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon initial members = a
mon host = [v2:127.0.0.1:$port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
keyring = $DIR/keyring
run dir = $DIR/run
admin socket = $DIR/run/\$name.\$pid.asok
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
crash dir = $DIR/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# The cluster holds a few hundred MB: a nearly full host disk must not stop the mon.
mon data avail warn = 0
mon data avail crit = 0
# Map changes (pool create) commit in ~0.1 s instead of 1 s.
paxos propose interval = 0.05
paxos min wait = 0.01
osd objectstore = $STORE

[mon]
mon data = $DIR/mon.\$id
keyring = $DIR/mon.\$id/keyring

# radosgw makes its pools itself.
mon max pg per osd = 1000

[osd]
osd data = $DIR/osd.\$id
keyring = $DIR/osd.\$id/keyring
$store_lines

[client.rgw.gw]
keyring = $DIR/rgw/keyring
rgw data = $DIR/rgw
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw dns name = 127.0.0.1
rgw enable usage log = false
rgw thread pool size = 16
log file = $DIR/log/rgw.log
EOF
  # Every key is in the mon's keyring before its mkfs: no `ceph auth add` round trips.
  ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool --create-keyring "$DIR/osd.0/keyring" --gen-key -n osd.0 \
    --cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *' >/dev/null
  ceph-authtool "$DIR/mon.keyring" --import-keyring "$DIR/keyring" >/dev/null
  ceph-authtool "$DIR/mon.keyring" --import-keyring "$DIR/osd.0/keyring" >/dev/null
  if [ "$WITH_RGW" = 1 ]; then
    mkdir -p "$DIR/rgw"
    ceph-authtool --create-keyring "$DIR/rgw/keyring" --gen-key -n client.rgw.gw \
      --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
    ceph-authtool "$DIR/mon.keyring" --import-keyring "$DIR/rgw/keyring" >/dev/null
  fi
  monmaptool -c /dev/null --create --enable-all-features --fsid "$fsid" \
    --addv a "[v2:127.0.0.1:$port]" "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring" \
    >"$DIR/log/mkfs.out" 2>&1 || die "ceph-mon --mkfs failed"
  launch mon.a ceph-mon -c "$CONF" -i a
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  # One `ceph` process for every mon command (its start-up is most of a command's time), while
  # the OSD's mkfs runs; --no-mon-config keeps that mkfs from racing the mon's start.
  printf '%s\n' "osd new $osd_uuid 0" \
    "osd pool create $POOL 8 8 replicated" "osd pool application enable $POOL rados" \
    "osd pool create $DATA_POOL 8 8 replicated" "osd pool application enable $DATA_POOL rados" \
    "osd pool ls" |
    timeout "$(left)" ceph -c "$CONF" --connect-timeout "$(left)" >"$DIR/log/pools.out" 2>&1 &
  mon_commands=$!
  ceph-osd -c "$CONF" -i 0 --mkfs --no-mon-config --osd-uuid "$osd_uuid" \
    >>"$DIR/log/mkfs.out" 2>&1 || die "ceph-osd --mkfs failed"
  wait $mon_commands || die "mon commands failed"
  grep -qx "$DATA_POOL" "$DIR/log/pools.out" || die "pools not created"
  launch osd.0 ceph-osd -c "$CONF" -i 0
  printf 'STORE=%s\nPOOL=%s\nDATA_POOL=%s\nWITH_RGW=%s\nRGW_PORT=%s\n' "$STORE" "$POOL" \
    "$DATA_POOL" "$WITH_RGW" "$RGW_PORT" >"$DIR/created.tmp"
fi

# Ready means a real write. A fast objecter tick: an op sent while the OSD was still down is
# resent as soon as it boots instead of on the next 5 s tick.
echo probe >"$DIR/run/probe"
until timeout 10 rados -c "$CONF" --objecter_tick_interval=0.2 -p "$POOL" \
  put strata_probe "$DIR/run/probe" >>"$DIR/log/probe.out" 2>&1; do
  [ "$(left)" -gt 1 ] || die "pool $POOL not writable within ${TIMEOUT}s"
  sleep 0.2
done
rados -c "$CONF" -p "$POOL" rm strata_probe 2>/dev/null || true
rgw_lines=
if [ "${WITH_RGW:-0}" = 1 ]; then
  launch rgw radosgw -c "$CONF" -n client.rgw.gw
  if [ ! -f "$DIR/rgw/s3.env" ]; then
    uuid() { tr -d '\n-' </proc/sys/kernel/random/uuid; }
    access=STRATA$(uuid | tr 'a-f' 'A-F' | cut -c1-14)
    secret=$(uuid)$(uuid)
    secret=${secret:0:40}
    # radosgw-admin talks to RADOS itself: it works while radosgw starts.
    timeout "$(left)" radosgw-admin -c "$CONF" user create --uid=strata --display-name=strata \
      --access-key="$access" --secret-key="$secret" >"$DIR/log/rgw-user.out" 2>&1 ||
      die "radosgw-admin user create failed (see $DIR/log/rgw-user.out)"
    printf 'ACCESS=%s\nSECRET=%s\n' "$access" "$secret" >"$DIR/rgw/s3.env"
  fi
  . "$DIR/rgw/s3.env"
  until (exec 3<>"/dev/tcp/127.0.0.1/$RGW_PORT") 2>/dev/null; do
    [ "$(left)" -gt 1 ] || die "radosgw not listening on 127.0.0.1:$RGW_PORT within ${TIMEOUT}s"
    sleep 0.2
  done
  rgw_lines=$(printf 'export STRATA_ARCHIVE_S3=http://127.0.0.1:%s\nexport STRATA_ARCHIVE_ACCESS_KEY_ID=%s\nexport STRATA_ARCHIVE_SECRET_ACCESS_KEY=%s' \
    "$RGW_PORT" "$ACCESS" "$SECRET")
fi
[ -f "$DIR/created.tmp" ] && mv "$DIR/created.tmp" "$DIR/created"
{
  printf 'export CEPH_CONF=%s\nexport CEPH_POOL=%s\nexport CEPH_DATA_POOL=%s\n' \
    "$CONF" "$POOL" "$DATA_POOL"
  [ -z "$rgw_lines" ] || printf '%s\n' "$rgw_lines"
} | tee "$DIR/env.sh"
say "ready: $CONF, pools $POOL and $DATA_POOL${rgw_lines:+, radosgw on 127.0.0.1:$RGW_PORT}"
