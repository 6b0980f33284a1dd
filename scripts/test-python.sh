#!/usr/bin/env bash
# Tests of the Python SDK (sdk/python) and the MCP server (sdk/mcp) against a
# real daemon booting real guests. First checks that the SDK's sync API
# (_sync.py, _commands_sync.py, _files_sync.py) is what
# sdk/python/scripts/unasync.py generates from the async modules.
# Creates a venv under target/py-venv (or $ZYGOTE_PY_VENV), installs both
# packages and pytest into it, and runs both suites. Each suite starts its own
# `zygote daemon` on a private socket and home ($ZYGOTE_BIN, default
# target/release/zygote; images from $ZYGOTE_TEST_HOME) and stops it with
# SIGTERM at the end.
#
# With ZYGOTE_E2E=1 (as scripts/test.sh sets it) a test that cannot run here
# (not root, no image, no binary) fails; without it, it is skipped with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

export ZYGOTE_TEST_HOME=${ZYGOTE_TEST_HOME:-/var/lib/zygote-test}
export ZYGOTE_BIN=${ZYGOTE_BIN:-$repo/target/release/zygote}
export PYTHONDONTWRITEBYTECODE=1
venv=${ZYGOTE_PY_VENV:-$repo/target/py-venv}
py=${PYTHON:-python3}

step() { printf '\n==> %s\n' "$*"; }

if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "test-python: $py is $("$py" --version 2>&1); the SDK needs Python >= 3.11 (set PYTHON=)" >&2
  exit 1
fi

step "sdk/python: the sync modules are what scripts/unasync.py generates from the async ones"
"$py" sdk/python/scripts/unasync.py --check
echo "sync modules up to date"

step "Python venv ($venv)"
if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf "$venv"
  if ! "$py" -m venv "$venv" 2>/dev/null; then
    # Debian's python3 ships venv's pip bootstrap separately.
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      rm -rf "$venv"
      apt-get update -q
      apt-get install -y -q python3-venv
      "$py" -m venv "$venv"
    else
      echo "test-python: '$py -m venv' failed: install python3-venv (Debian) and retry" >&2
      exit 1
    fi
  fi
fi
vpy=$venv/bin/python
"$vpy" -m pip install -q --disable-pip-version-check -c sdk/test-constraints.txt \
  ./sdk/python ./sdk/mcp pytest anyio
# The version number does not change with every commit: always install this tree.
"$vpy" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./sdk/python ./sdk/mcp
"$vpy" -m pip list --disable-pip-version-check 2>/dev/null | grep -Ei '^(zygote|zygote-mcp|mcp|httpx|pytest|anyio) '

status=0
for suite in sdk/python sdk/mcp; do
  step "pytest $suite (ZYGOTE_E2E=${ZYGOTE_E2E:-unset}, ZYGOTE_BIN=$ZYGOTE_BIN)"
  (cd "$suite" && "$vpy" -m pytest -p no:cacheprovider -ra -v tests) || status=1
done
exit $status
