#!/usr/bin/env bash
# Builds zygote (release) and the static guest agent.
#   target/release/zygote
#   target/x86_64-unknown-linux-gnu/release/zygote-agent   (static)
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked --release -p zygote-agent --target x86_64-unknown-linux-gnu
cargo build --locked --release -p zygote-cli
agent=target/x86_64-unknown-linux-gnu/release/zygote-agent
if command -v readelf >/dev/null && readelf -l "$agent" | grep -q "program interpreter"; then
  echo "build: $agent is dynamically linked; the guest needs a static agent" >&2
  exit 1
fi
