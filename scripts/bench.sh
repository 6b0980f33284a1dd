#!/usr/bin/env bash
# Runs the benchmark figures the README shows (zygote bench boot, spawn and
# branch at full size) against the daemon on $ZYGOTE_SOCKET (or the default
# socket), writes CSV, tables and charts into bench-out/, and copies the
# tables and charts into docs/bench/ for the README. A benchmark, not a test:
# about 30 minutes on a quiet 2-core TCG host (boot ~4, branch ~10, spawn
# ~15); run it on an otherwise idle
# machine. The hugepage cells need the pool grown first (the bench says how
# many pages when it is short), e.g.:
#   echo 1280 > /proc/sys/vm/nr_hugepages
set -euo pipefail
cd "$(dirname "$0")/.."
Z=${Z:-./target/release/zygote}
OUT=${OUT:-bench-out}
only=${1:-all}

run() { echo "+ $*" >&2; "$@"; }

if [ "$only" = all ] || [ "$only" = boot ]; then
  run $Z bench boot --iterations 20 --execs 10 --file-mib 64 --idle 4 --out "$OUT"
fi
if [ "$only" = all ] || [ "$only" = branch ]; then
  run $Z bench branch --memory-mib 1024 --iterations 10 \
    --modes copy,copy+hugepages,live --loads idle,rewrite:64,touch:600 --out "$OUT"
fi
if [ "$only" = all ] || [ "$only" = spawn ]; then
  run $Z bench spawn --memory-mib 512 --iterations 20 \
    --private 1,3,5 --pages 4k,2m --cow 1,4,16 --out "$OUT"
fi

mkdir -p docs/bench
for f in "$OUT"/*-table.txt "$OUT"/*.png; do
  [ -e "$f" ] && cp "$f" docs/bench/
done
echo "tables and charts copied into docs/bench/" >&2
