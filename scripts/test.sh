#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit and host tests, and the
# end-to-end tests that boot real guests under TCG. Needs root (QEMU, memfd
# paths under /proc, debootstrap for the image). Installs missing Debian
# packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
export ZYGOTE_TEST_HOME=${ZYGOTE_TEST_HOME:-/var/lib/zygote-test}

step() { printf '\n==> %s\n' "$*"; }

step "Debian packages"
./scripts/install-deps.sh

step "hugepage pool (the memory module's hugetlb tests hold up to 8 pages)"
if [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 16 ]; then
  echo 16 > /proc/sys/vm/nr_hugepages || echo "cannot reserve hugepages; hugetlb tests will say why they skip"
fi
grep -E "HugePages_(Total|Free)" /proc/meminfo

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "build (release; static agent)"
./scripts/build.sh

step "guest image (cached by content)"
./target/release/zygote image build python --home "$ZYGOTE_TEST_HOME"

step "tests (unit, host, end-to-end)"
export ZYGOTE_E2E=1
export ZYGOTE_IMAGE_TESTS=${ZYGOTE_IMAGE_TESTS:-1}
cargo test --locked --release --workspace -- --test-threads=2

step "Python SDK and MCP server (against a real daemon)"
./scripts/test-python.sh

step "TypeScript SDK (node:test against a real daemon)"
./scripts/test-typescript.sh

step "E2B's own SDKs (PyPI, unmodified) against the daemon's E2B listener"
./scripts/test-e2b.sh
