#!/usr/bin/env bash
# Builds the TypeScript SDK (sdk/typescript) and runs its tests with node:test:
# unit tests, and end-to-end tests against a real `zygote daemon` booting real
# guests under TCG (two boots; about a minute). Needs Node.js >= 20 and npm, the
# zygote binary ($ZYGOTE_BIN, default target/release/zygote) and the test image
# ($ZYGOTE_TEST_HOME, default /var/lib/zygote-test; scripts/test.sh builds it).
# With ZYGOTE_E2E=1 an end-to-end test that cannot run is a failure.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "test-typescript: node and npm are needed (Node.js >= 20)" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "test-typescript: Node.js $(node --version) is too old: the SDK needs >= 20" >&2
  exit 1
fi

export ZYGOTE_BIN=${ZYGOTE_BIN:-$repo/target/release/zygote}
export ZYGOTE_TEST_HOME=${ZYGOTE_TEST_HOME:-/var/lib/zygote-test}

cd "$repo/sdk/typescript"
# The lock file pins versions and hashes (no registry address): npm ci installs
# exactly those from whatever registry this machine's npm is configured for.
npm ci --no-audit --no-fund
npm test
