#!/usr/bin/env python3
"""One scenario timed through E2B's own SDK (against zygote's E2B listener)
and through zygote's SDK (against zygote's TCP API), interleaved in one run
on one daemon: start a sandbox from a warm snapshot, `commands.run("true")`,
run it again, fork 3 children (the call returns with all three ready),
kill. E2B's SDK runs a command as `/bin/bash -l -c CMD`; the zygote side
runs the same line, so both start the same processes. Prints p50 /
p99 / n per step and the ratio E2B SDK / zygote SDK. Both go over loopback
TCP, so the difference is the compatibility layer and the SDKs themselves.

Run it with the venv scripts/test-e2b.sh makes (it has both SDKs):
  target/e2b-new-venv/bin/python scripts/bench-e2b.py --iterations 10
Needs root, target/release/zygote and the test image ($ZYGOTE_TEST_HOME).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time

import e2b
import zygote
from zygote.testing import TestDaemon, free_port

STEPS = ["create", "run true", "run again", "fork 3", "kill"]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(out: dict[str, list[float]], step: str, f):
    t = time.perf_counter()
    v = f()
    out[step].append((time.perf_counter() - t) * 1000)
    return v


def e2b_round(template: str, out: dict[str, list[float]]) -> None:
    sb = timed(out, "create", lambda: e2b.Sandbox.create(template=template))
    timed(out, "run true", lambda: sb.commands.run("true"))
    timed(out, "run again", lambda: sb.commands.run("true"))
    kids = timed(out, "fork 3", lambda: sb.fork(count=3))
    for k in kids:
        k.kill()
    timed(out, "kill", sb.kill)


def zygote_round(template: str, conn: dict, out: dict[str, list[float]]) -> None:
    sb = timed(out, "create", lambda: zygote.Sandbox.create(snapshot=template, **conn))
    # What E2B's SDK runs for commands.run("true"): a bash login shell.
    timed(out, "run true", lambda: sb.commands.run("/bin/bash -l -c true"))
    timed(out, "run again", lambda: sb.commands.run("/bin/bash -l -c true"))
    kids = timed(out, "fork 3", lambda: sb.fork(3))
    for k in kids:
        k.kill()
    timed(out, "kill", sb.kill)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10)
    args = ap.parse_args()
    key = "e2b_" + secrets.token_hex(20)
    keys = f"/tmp/zyg-bench-e2b-keys-{os.getpid()}"
    with open(os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(key + "\n")
    port = free_port()
    d = TestDaemon(tcp=True, extra_args=["--e2b-listen", f"127.0.0.1:{port}", "--e2b-api-keys", keys])
    try:
        os.environ.update(
            {"E2B_API_URL": f"http://127.0.0.1:{port}", "E2B_SANDBOX_URL": f"http://127.0.0.1:{port}",
             "E2B_API_KEY": key}
        )
        conn = {"url": d.url, "token": d.token}
        zygote.Snapshot.create("bench-e2b", warmup="import json", socket=d.socket)
        res = {"e2b": {s: [] for s in STEPS}, "zygote": {s: [] for s in STEPS}}
        e2b_round("bench-e2b", {s: [] for s in STEPS})  # warm both paths once
        zygote_round("bench-e2b", conn, {s: [] for s in STEPS})
        for _ in range(args.iterations):
            e2b_round("bench-e2b", res["e2b"])
            zygote_round("bench-e2b", conn, res["zygote"])
        print(f"E2B SDK {e2b.__version__ if hasattr(e2b, '__version__') else ''} vs zygote SDK, "
              f"n={args.iterations} each, ms")
        print(f"{'step':10} {'e2b p50':>9} {'e2b p99':>9} {'zyg p50':>9} {'zyg p99':>9} {'p50 ratio':>10}")
        for s in STEPS:
            a, b = res["e2b"][s], res["zygote"][s]
            print(f"{s:10} {statistics.median(a):9.1f} {pct(a, 99):9.1f} "
                  f"{statistics.median(b):9.1f} {pct(b, 99):9.1f} {statistics.median(a) / statistics.median(b):10.2f}")
    finally:
        d.stop()
        os.unlink(keys)


if __name__ == "__main__":
    main()
