#!/usr/bin/env bash
# Drives the real binaries (strata, strata-fsck, stratad) as a user would: a round trip of data
# through volumes and snapshots, bad input that must fail clearly and change nothing, and
# stratad's clean stop on SIGTERM. Usage: cli_test.sh BIN_DIR
set -euo pipefail
BIN=$1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
export STRATA_QUIET=1
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
expect_fail() {  # expect_fail "message substring" command...
  local want=$1; shift
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  if [ $rc -ne 0 ] && grep -q -- "$want" <<<"$out"; then ok; else bad "expected failure '$want' from: $* (rc=$rc, got: $out)"; fi
}

head -c 3000000 /dev/urandom > image.raw
VOL=$("$BIN/strata" volume create --size 4M --tag Name=web | cut -f1)
[[ $VOL =~ ^vol-[0-9a-f]{17}$ ]] && ok || bad "volume id $VOL"
"$BIN/strata" volume import "$VOL" image.raw
SNAP=$("$BIN/strata" snapshot create "$VOL" --description nightly | cut -f1)
[[ $SNAP =~ ^snap-[0-9a-f]{17}$ ]] && ok || bad "snapshot id $SNAP"
"$BIN/strata" snapshot describe "$SNAP" | grep -q "state=completed" && ok || bad "snapshot not completed"
"$BIN/strata" snapshot export "$SNAP" snap.raw
cmp <(head -c 3000000 snap.raw) image.raw && ok || bad "snapshot content differs"

# A clone is lazy and independent.
CLONE=$("$BIN/strata" volume create --snapshot "$SNAP" --size 8M | cut -f1)
"$BIN/strata" volume export "$CLONE" clone.raw
cmp <(head -c 3000000 clone.raw) image.raw && ok || bad "clone content differs"
[ "$(stat -c %s clone.raw)" = 8388608 ] && ok || bad "clone size"
printf 'patched' > patch.bin
"$BIN/strata" volume import "$CLONE" patch.bin --offset 1M
SNAP2=$("$BIN/strata" snapshot create "$CLONE" | cut -f1)
CHANGED=$("$BIN/strata" snapshot changed "$SNAP" "$SNAP2" | head -n -1 | cut -f1 | tr '\n' ' ')
[ "$CHANGED" = "2 " ] && ok || bad "changed blocks: '$CHANGED'"
"$BIN/strata-fsck" | grep -q "0 findings" && ok || bad "fsck findings"

# Bad input: a clear error, non-zero exit, nothing changed.
before=$("$BIN/strata" volume list; "$BIN/strata" snapshot list)
expect_fail "multiple of 4096" "$BIN/strata" volume create --size 4097
expect_fail "invalid size" "$BIN/strata" volume create --size 12Q
expect_fail "does not exist" "$BIN/strata" volume delete vol-00000000000000000
expect_fail "does not exist" "$BIN/strata" snapshot create vol-nope
expect_fail "never shrink" "$BIN/strata" volume grow "$VOL" --size 1M
expect_fail "unknown option --sise" "$BIN/strata" volume create --sise 1G
expect_fail "unknown command" "$BIN/strata" frobnicate
expect_fail "not of the same lineage" bash -c "\"$BIN/strata\" snapshot changed $SNAP \$(\"$BIN/strata\" snapshot create \$(\"$BIN/strata\" volume create --size 1M | cut -f1) | cut -f1)"
expect_fail "may hold only lowercase" "$BIN/strata" region create "Bad Region"
expect_fail "needs a command: create, list" "$BIN/strata" volume
expect_fail "VOL is required" "$BIN/strata" volume describe
expect_fail "unexpected argument \"extra\"" "$BIN/strata" snapshot describe "$SNAP" extra
expect_fail "not in {json,text,table}" "$BIN/strata" --output xml status
expect_fail "invalid size" "$BIN/strata" volume grow "$VOL" --size 1X

# Every program and subcommand has --help: usage on stdout, exit 0, nothing done.
for cmd in "" init env status attach detach import-image instances console ec2 volume \
    "volume create" "volume list" "volume describe" "volume delete" "volume grow" \
    "volume hydrate" "volume import" "volume export" snapshot "snapshot create" \
    "snapshot list" "snapshot describe" "snapshot delete" "snapshot export" "snapshot blocks" \
    "snapshot changed" region "region list" "region create" account "account create" \
    "account list" gc stats copy-stats; do
  # shellcheck disable=SC2086
  out=$("$BIN/strata" $cmd --help 2>&1) && grep -q "^Usage: strata ${cmd:+$cmd }\[OPTIONS\]" <<<"$out" \
    && ok || bad "strata $cmd --help: $out"
done
# Captured first: grep -q stops reading at its match, and stratad would die of SIGPIPE.
out=$("$BIN/stratad" --help 2>&1) && grep -q -- "--nbd-listen LIST" <<<"$out" && ok || bad "stratad --help"
"$BIN/strata-fsck" --help | grep -q -- "--data-dir DIR" && ok || bad "strata-fsck --help"
after=$("$BIN/strata" volume list | grep -v "size=1048576"; "$BIN/strata" snapshot list | grep -v "size=1048576")
[ "$before" = "$after" ] && ok || bad "bad input changed the store"

# stratad holds the lock, and stops cleanly on SIGTERM.
env -u STRATA_QUIET "$BIN/stratad" --data-dir ./data --api-listen 127.0.0.1:0 --nbd-listen 127.0.0.1:0 \
  2> stratad.log &
PID=$!
for _ in $(seq 100); do grep -q "serving" stratad.log && break; sleep 0.05; done
expect_fail "another process has this store open" "$BIN/strata" volume list
"$BIN/strata" env | grep -q "^export AWS_SHARED_CREDENTIALS_FILE=.*/data/credentials$" && ok || bad "strata env"
for secret in data/credentials data/accounts; do
  [ "$(stat -c %a "$secret")" = 600 ] && ok || bad "$secret is mode $(stat -c %a "$secret"), not 600"
done
expect_fail "is missing" "$BIN/strata" --data-dir ./nowhere env
expect_fail "unknown option" "$BIN/stratad" --bogus
kill -TERM $PID
wait $PID && ok || bad "stratad exit status"
grep -q "stopped" stratad.log && ok || bad "stratad did not stop cleanly"
"$BIN/strata" volume list | grep -q "$VOL" && ok || bad "store unusable after stratad"

# A corrupt byte in a segment is found by fsck and makes reads fail, never return wrong data.
SEG=$(ls -S data/regions/local-1/segments/* | head -1)
printf '\x00\xff' | dd of="$SEG" bs=1 seek=4096 conv=notrunc status=none
out=$("$BIN/strata-fsck" 2>&1) && bad "fsck missed corruption" || { grep -q "checksum mismatch" <<<"$out" && ok || bad "fsck output: $out"; }
expect_fail "DATA_LOSS\|checksum" "$BIN/strata" snapshot export "$SNAP" x.raw

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
