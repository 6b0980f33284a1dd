#!/usr/bin/env bash
# Reliability runs (not part of CI): load, soak and restarts against a real
# daemon (scripts/reliability.py). Builds zygote and the image first.
#   scripts/reliability.sh load [--clients 100 --seconds 300]
#   scripts/reliability.sh soak [--cycles 500]
#   scripts/reliability.sh restarts [--restarts 20]
set -euo pipefail
cd "$(dirname "$0")/.."
export ZYGOTE_TEST_HOME=${ZYGOTE_TEST_HOME:-/var/lib/zygote-test}
venv=${ZYGOTE_PY_VENV:-target/py-venv}
if ! "$venv/bin/python" -c 'import httpx' 2>/dev/null; then
  "$venv/bin/python" -c 'import httpx' 2>/dev/null || { python3 -m venv "$venv" && "$venv/bin/pip" install -q httpx; }
fi
./scripts/build.sh
./target/release/zygote image build python --home "$ZYGOTE_TEST_HOME" >/dev/null
exec "$venv/bin/python" scripts/reliability.py "$@"
