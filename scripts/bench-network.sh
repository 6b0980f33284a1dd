#!/usr/bin/env bash
# Guest <-> outside TCP throughput and latency through a sandbox's network
# (virtio-net, tap, namespace NAT, host NAT), both directions, on this
# machine only: the "outside world" is a namespace this script creates in the
# benchmarking range (198.18.0.2), torn down at the end.
#
#   scripts/bench-network.sh [MIB] [ROUNDS]     (default 64 MiB, 200 echo rounds)
#
# Starts its own daemon (target/release/zygote, images from $ZYGOTE_TEST_HOME)
# on a private socket and home, with --network nat.
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-64}
rounds=${2:-200}
bin=${ZYGOTE_BIN:-$PWD/target/release/zygote}
images=${ZYGOTE_TEST_HOME:-/var/lib/zygote-test}/images
ns=zb-out-$$
link=zbo$$
work=$(mktemp -d /tmp/zbnet.XXXXXX)
daemon_pid=
server_pid=

cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  ip link delete "$link" 2>/dev/null || true
  ip netns delete "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip link add "$link" type veth peer name eth0 netns "$ns"
ip addr add 198.18.0.1/30 dev "$link"
ip link set "$link" up
ip -n "$ns" addr add 198.18.0.2/30 dev eth0
ip -n "$ns" link set eth0 up
ip -n "$ns" link set lo up
ip -n "$ns" route add default via 198.18.0.1

# The outside servers: 5001 swallows what it gets, 5002 sends N MiB, 5003 echoes.
cat > "$work/server.py" <<'EOF'
import socket, sys, threading
n = int(sys.argv[1]) << 20
def serve(port, handle):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("198.18.0.2", port)); s.listen(8)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
def sink(c):
    while c.recv(1 << 20): pass
    c.close()
def source(c):
    buf = b"x" * (1 << 20)
    for _ in range(n >> 20): c.sendall(buf)
    c.close()
def echo(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (d := c.recv(64)): c.sendall(d)
    c.close()
for port, h in ((5001, sink), (5002, source)):
    threading.Thread(target=serve, args=(port, h), daemon=True).start()
serve(5003, echo)
EOF
ip netns exec "$ns" python3 "$work/server.py" "$mib" &
server_pid=$!

mkdir -p "$work/home"
ln -s "$images" "$work/home/images"
"$bin" daemon --socket "$work/d.sock" --home "$work/home" --prestart 0 >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$work/d.sock" ] && break; sleep 0.1; done
z() { "$bin" "$1" --socket "$work/d.sock" "${@:2}"; }
id=$(z create --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

cat > "$work/guest.py" <<'EOF'
import socket, sys, time
n = int(sys.argv[1]) << 20
rounds = int(sys.argv[2])
buf = b"y" * (1 << 20)
t = time.perf_counter(); s = socket.create_connection(("198.18.0.2", 5001))
for _ in range(n >> 20): s.sendall(buf)
s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
up = n / (time.perf_counter() - t)
t = time.perf_counter(); s = socket.create_connection(("198.18.0.2", 5002)); got = 0
while (d := s.recv(1 << 20)): got += len(d)
down = got / (time.perf_counter() - t)
s = socket.create_connection(("198.18.0.2", 5003)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtt = []
for _ in range(rounds):
    t = time.perf_counter(); s.sendall(b"p"); s.recv(64); rtt.append((time.perf_counter() - t) * 1e3)
rtt.sort()
p = lambda q: rtt[min(len(rtt) - 1, int(q * len(rtt)))]
print(f"guest -> outside  {up * 8 / 1e6:8.1f} Mbit/s  ({n >> 20} MiB)")
print(f"outside -> guest  {down * 8 / 1e6:8.1f} Mbit/s  ({got >> 20} MiB)")
print(f"TCP round trip    p50 {p(0.5):.3f} ms  p99 {p(0.99):.3f} ms  (n={rounds}, 1 byte, TCP_NODELAY)")
EOF
z cp "$work/guest.py" "$id:/root/guest.py" >/dev/null
echo "zygote network bench: one sandbox (1 vCPU, $(z ls --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["accel"])')) <-> a namespace at 198.18.0.2"
z exec "$id" -- python3 /root/guest.py "$mib" "$rounds"
z rm "$id" >/dev/null
