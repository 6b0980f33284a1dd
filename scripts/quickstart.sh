#!/usr/bin/env bash
# Sets up zygote on a fresh Debian bookworm machine and runs the main job:
# installs the Debian packages it needs, builds zygote and the static guest
# agent, builds the default `python` image, starts the daemon on the default
# socket, runs Python in a sandbox, and prints measured timings.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "quickstart: run as root (QEMU memory paths, debootstrap): sudo $0" >&2
  exit 1
fi
command -v cargo >/dev/null || { echo "quickstart: cargo is needed (https://rustup.rs)" >&2; exit 1; }

echo "==> Debian packages"; ./scripts/install-deps.sh
echo "==> build";           ./scripts/build.sh
Z=./target/release/zygote
echo "==> image";           $Z image build python

echo "==> daemon"
if ! $Z ls >/dev/null 2>&1; then
  echo "no daemon answered; the CLI started one (log: /var/lib/zygote/daemon.log)"
fi

echo "==> run code in a sandbox"
time $Z run -- python3 -c 'import platform, sys; print("hello from", platform.node(), platform.release(), "python", sys.version.split()[0])'

echo "==> a sandbox that keeps its state"
ID=$($Z create)
$Z exec "$ID" -- sh -c 'echo "kernel: $(uname -r); cpus: $(nproc); mem: $(grep MemTotal /proc/meminfo)"'
$Z eval "$ID" 'import math; state = [math.factorial(n) for n in range(10)]'
$Z eval "$ID" 'sum(state)'
$Z rm "$ID" >/dev/null

echo "==> timings (zygote bench boot; CSV and charts in bench-out/)"
$Z bench boot --iterations 5 --execs 10 --file-mib 64 --idle 4 --out bench-out
