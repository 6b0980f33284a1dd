#!/usr/bin/env bash
# Fault injection at length (not part of CI): SIGKILLs the daemon at random
# points of random operations and checks the invariants after every restart
# (crates/tests/tests/fault_injection.rs). About 2-3 s per kill on a 2-core TCG
# host. Usage: scripts/faults.sh [KILLS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export ZYGOTE_TEST_HOME=${ZYGOTE_TEST_HOME:-/var/lib/zygote-test}
export ZYGOTE_E2E=1
export ZYGOTE_FAULT_KILLS=${1:-200}
[ -n "${2:-}" ] && export ZYGOTE_FAULT_SEED=$2
./scripts/build.sh
./target/release/zygote image build python --home "$ZYGOTE_TEST_HOME"
cargo test --locked --release -p zygote-tests --test fault_injection -- --nocapture
