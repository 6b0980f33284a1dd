#!/usr/bin/env bash
# Figures of images and snapshots that travel, on this machine, all local:
#  - pull-and-boot of an OCI image (the test image's root as a one-layer image
#    made with umoci, pushed with skopeo to a docker-registry on loopback);
#  - push and pull of a snapshot of a 1 GiB guest (throughput);
#  - registry bytes for five successive branches of one parent, against five
#    full copies (`snapshot pack` of each);
#  - time from `snapshot pull` to the first child ready on a second daemon.
# Needs root, target/release/zygote, the static agent and the test image
# ($ZYGOTE_TEST_HOME, default /var/lib/zygote-test). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
Z=$PWD/target/release/zygote
TEST_HOME=${ZYGOTE_TEST_HOME:-/var/lib/zygote-test}
W=$(mktemp -d /tmp/zyg-travel.XXXXXX)
PORT=${PORT:-5077}
REG=127.0.0.1:$PORT
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W" "$TEST_HOME/images/travel-py"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.3f}')" "$(now)" "$1"; }

cat > "$W/reg.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $W/store
http:
  addr: $REG
EOF
docker-registry serve "$W/reg.yml" >"$W/reg.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.1; done

daemon() { # home socket
  mkdir -p "$1"
  [ -e "$1/images" ] || ln -s "$TEST_HOME/images" "$1/images"
  "$Z" daemon --home "$1" --socket "$2" >"$1.log" 2>&1 & pids+=($!)
  for _ in $(seq 200); do ZYGOTE_SOCKET=$2 "$Z" ls >/dev/null 2>&1 && return; sleep 0.1; done
  echo "daemon on $1 did not start" >&2; exit 1
}

echo "== image: pull and boot"
cur=$(cat "$TEST_HOME/images/python/current")
mkdir "$W/root"
debugfs -R "rdump / $W/root" "$TEST_HOME/images/python/$cur/rootfs.ext4" 2>/dev/null
umoci init --layout "$W/lay" && umoci new --image "$W/lay:py"
umoci unpack --image "$W/lay:py" "$W/b" >/dev/null && cp -a "$W/root/." "$W/b/rootfs/"
umoci repack --image "$W/lay:py" "$W/b" && rm -rf "$W/b" "$W/root"
skopeo copy --quiet --dest-tls-verify=false "oci:$W/lay:py" "docker://$REG/bench/py:1"
daemon "$W/h1" "$W/d1.sock"
export ZYGOTE_SOCKET=$W/d1.sock
t=$(now); "$Z" image pull "$REG/bench/py:1" --name travel-py --home "$TEST_HOME" >/dev/null 2>&1; pull_s=$(secs "$t")
t=$(now); "$Z" run --image travel-py -- true >/dev/null; boot_s=$(secs "$t")
t=$(now); "$Z" run --image python -- true >/dev/null; boot_ref=$(secs "$t")
printf "image pull %.2f s (%s MB layer), first run %.2f s (the recipe image: %.2f s)\n" \
  "$pull_s" "$(du -sm "$W/lay/blobs" | cut -f1)" "$boot_s" "$boot_ref"

echo "== a parent and five successive branches: registry bytes against full copies"
store0=$(du -sb "$W/store" | cut -f1)
"$Z" snapshot create --tag gen0 --wait --warmup 'x = 0' >/dev/null
"$Z" snapshot push gen0 "$REG/bench/lineage:gen0" --home "$W/h1" --json >"$W/gen0.json"
"$Z" snapshot pack gen0 "$W/gen0.zst" >/dev/null
full=$(stat -c %s "$W/gen0.zst"); rm -f "$W/gen0.zst"
for i in 1 2 3 4 5; do
  id=$("$Z" spawn "gen$((i-1))" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["sandbox"]["id"])')
  "$Z" eval "$id" "x = $i; data$i = bytes(range(256)) * 4096" >/dev/null
  "$Z" branch "$id" --tag "gen$i" --wait >/dev/null
  "$Z" rm "$id" >/dev/null
  "$Z" snapshot push "gen$i" "$REG/bench/lineage:gen$i" --home "$W/h1" --json >"$W/gen$i.json"
  "$Z" snapshot pack "gen$i" "$W/gen$i.zst" >/dev/null
  full=$((full + $(stat -c %s "$W/gen$i.zst")))
  rm -f "$W/gen$i.zst"
done
store=$(( $(du -sb "$W/store" | cut -f1) - store0 ))
python3 - "$W" "$store" "$full" <<'PY'
import json, sys
w, store, full = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sent = [json.load(open(f"{w}/gen{i}.json"))["pushed_bytes"] for i in range(0, 6)]
print("sent (MB): parent " + f"{sent[0]/1e6:.1f}; branches " + ", ".join(f"{s/1e6:.1f}" for s in sent[1:]))
print(f"registry grew {store/1e6:.0f} MB for the parent and five successive branches; "
      f"as six full copies (snapshot pack, zstd) {full/1e6:.0f} MB; ratio {full/store:.1f}x")
PY

echo "== snapshot of a 1 GiB guest: push and pull"
"$Z" snapshot create --tag big --memory 1024 --wait \
  --warmup 'import os; blob = os.urandom(400 << 20)' >/dev/null
t=$(now); "$Z" snapshot push big "$REG/bench/snap:big" --home "$W/h1" --json >"$W/push.json"; push_s=$(secs "$t")
daemon "$W/h2" "$W/d2.sock"
t=$(now); ZYGOTE_SOCKET=$W/d2.sock "$Z" snapshot pull "$REG/bench/snap:big" --home "$W/h2" --json >"$W/pull.json"; pull_s=$(secs "$t")
t2=$(now); ZYGOTE_SOCKET=$W/d2.sock "$Z" spawn big >/dev/null; child_s=$(secs "$t2")
python3 - "$W/push.json" "$W/pull.json" "$push_s" "$pull_s" "$child_s" <<'PY'
import json, sys
push, pull = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
ps, ls, cs = map(float, sys.argv[3:6])
b = push["bundle_bytes"]
print(f"bundle {b/1e6:.0f} MB ({push['chunks']} chunks, {push['zero_chunks']} zero); "
      f"push {ps:.1f} s, {push['pushed_bytes']/1e6:.0f} MB sent ({b/1e6/ps:.0f} MB/s of bundle); "
      f"pull {ls:.1f} s, {pull['fetched_bytes']/1e6:.0f} MB fetched ({b/1e6/ls:.0f} MB/s of bundle); "
      f"first child on the second daemon {cs:.2f} s after the pull ({ls+cs:.1f} s from pull to child)")
PY

