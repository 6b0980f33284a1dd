#!/usr/bin/env bash
# Builds zygote (release) and the static guest agent.
#   target/release/zygote
#   target/x86_64-unknown-linux-gnu/release/zygote-agent   (static)
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --locked --release -p zygote-agent --target x86_64-unknown-linux-gnu
cargo build --locked --release -p zygote-cli
if ldd target/x86_64-unknown-linux-gnu/release/zygote-agent >/dev/null 2>&1; then
  echo "build: the agent is not static" >&2
  exit 1
fi
