#!/usr/bin/env bash
# E2B's own Python SDKs from PyPI, unmodified, against a real daemon serving
# E2B's API (compat/e2b/tests): the newest pinned release and one older
# release line, each in its own venv under target/ (or $ZYGOTE_E2B_VENVS).
# Each run starts its own `zygote daemon --e2b-listen 127.0.0.1:PORT` on a
# private socket and home ($ZYGOTE_BIN, default target/release/zygote;
# images from $ZYGOTE_TEST_HOME). The zygote SDK is installed too, for its
# test daemon and to make the warm snapshot the tests start from.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

export ZYGOTE_TEST_HOME=${ZYGOTE_TEST_HOME:-/var/lib/zygote-test}
export ZYGOTE_BIN=${ZYGOTE_BIN:-$repo/target/release/zygote}
export PYTHONDONTWRITEBYTECODE=1
venvs=${ZYGOTE_E2B_VENVS:-$repo/target}
py=${PYTHON:-python3}

step() { printf '\n==> %s\n' "$*"; }

# name | pins | whether E2B's JavaScript SDK (compat/e2b/js, npm) runs too
lines=(
  "e2b-new|e2b==2.63.0 e2b-code-interpreter==2.11.5|1"
  "e2b-old|e2b==2.45.1 e2b-code-interpreter==2.10.0|0"
)

step "E2B's JavaScript SDK (npm ci in compat/e2b/js)"
(cd compat/e2b/js && npm ci --no-audit --no-fund)

status=0
for line in "${lines[@]}"; do
  name=${line%%|*}
  rest=${line#*|}
  pins=${rest%%|*}
  js=${rest#*|}
  venv=$venvs/$name-venv
  step "venv $venv: $pins"
  if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv"
    "$py" -m venv "$venv"
  fi
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q --disable-pip-version-check $pins pytest ./sdk/python
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./sdk/python
  "$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -Ei '^(e2b|e2b-code-interpreter|zygote) '
  step "pytest compat/e2b ($name)"
  (cd compat/e2b && ZYGOTE_E2B_JS=$js "$venv/bin/python" -m pytest -p no:cacheprovider -ra -v tests) || status=1
done
exit $status
