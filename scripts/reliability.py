#!/usr/bin/env python3
"""Reliability runs against a real daemon (not tests; scripts/reliability.sh runs them).

  load      N concurrent clients for S seconds on the Unix socket, a mix of exec,
            eval, file put/get, list, spawn+rm and branch: calls per second,
            p50/p99 per kind, errors by status; the daemon's RSS and fd count
            before and after.
  soak      N sequential spawn -> exec -> rm cycles: QEMU processes, the daemon's
            memfds and fds, runtime directories and host MemAvailable before and
            after.
  restarts  one sandbox with an eval variable and a guest counter kept across N
            daemon restarts (crash and upgrade exits alternating): state checked
            after each, and the time a restarted daemon takes to answer.

Each starts its own daemon (--bin) on a fresh home under /tmp whose images link
to --images (the test image home), and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


class Daemon:
    def __init__(self, bin: str, images: str, extra: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="zygrel", dir="/tmp"))
        self.home = self.dir / "home"
        self.home.mkdir()
        (self.home / "images").symlink_to(Path(images) / "images")
        self.socket = self.dir / "d.sock"
        self.bin = bin
        self.extra = extra
        self.log = open(self.dir / "daemon.log", "ab")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.bin, "daemon", "--socket", str(self.socket), "--home", str(self.home), *self.extra],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        while True:
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket))) as c:
                    if c.get("http://zygote/healthz", timeout=1).status_code == 200:
                        return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 120:
                raise SystemExit(f"the daemon did not come up; see {self.dir}/daemon.log")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        if sig == signal.SIGKILL:
            self.proc.kill()
        else:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=120)
        self.proc = None

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cleanup(self) -> None:
        if self.proc is not None:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def proc_facts(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS:"))
    fds = list(Path(f"/proc/{pid}/fd").iterdir())
    memfds = 0
    for f in fds:
        try:
            if os.readlink(f).startswith("/memfd:"):
                memfds += 1
        except OSError:
            pass
    return {"rss_kib": rss, "fds": len(fds), "memfds": memfds}


def host_facts(home: Path) -> dict[str, int]:
    qemus = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmd and str(home).encode() in cmd:
                qemus += 1
    avail = next(
        int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemAvailable:")
    )
    dirs = len(list((home / "sandboxes").iterdir()))
    return {"qemus": qemus, "mem_available_kib": avail, "sandbox_dirs": dirs}


def client(d: Daemon, timeout: float = 600) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url="http://zygote",
        transport=httpx.AsyncHTTPTransport(uds=str(d.socket)),
        timeout=timeout,
    )


async def status(req) -> int:
    return (await req).status_code


async def must(r: httpx.Response) -> dict | list:
    if r.status_code >= 300:
        raise SystemExit(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")
    return r.json()


async def load(args: argparse.Namespace) -> None:
    d = Daemon(args.bin, args.images, [])
    d.start()
    try:
        async with client(d) as c:
            shared = [(await must(await c.post("/v1/sandboxes", json={})))["id"] for _ in range(args.sandboxes)]
            await must(await c.post("/v1/snapshots", json={"tag": "load-warm"}))
            before = proc_facts(d.pid())
            heavy = asyncio.Semaphore(args.heavy)
            lat: dict[str, list[float]] = {}
            errors: dict[str, dict[int, int]] = {}
            deadline = time.monotonic() + args.seconds
            rng = random.Random(args.seed)

            async def call(kind: str, fn) -> None:
                t0 = time.monotonic()
                try:
                    status = await fn()
                except httpx.HTTPError as e:
                    status = -1
                    print(f"{kind}: {e!r}", file=sys.stderr)
                ms = (time.monotonic() - t0) * 1e3
                if 200 <= status < 300:
                    lat.setdefault(kind, []).append(ms)
                else:
                    errors.setdefault(kind, {}).setdefault(status, 0)
                    errors[kind][status] += 1

            async def one(i: int) -> None:
                async with client(d) as cc:
                    n = 0
                    while time.monotonic() < deadline:
                        n += 1
                        sb = shared[(i + n) % len(shared)]
                        k = rng.random()
                        if k < 0.35:
                            await call("exec", lambda: status(cc.post(f"/v1/sandboxes/{sb}/exec", json={"argv": ["true"]})))
                        elif k < 0.55:
                            await call("eval", lambda: status(cc.post(f"/v1/sandboxes/{sb}/eval", json={"code": f"x{i} = {n}"})))
                        elif k < 0.65:
                            path = f"/tmp/load-{i}"
                            await call("file_put", lambda: status(cc.put(f"/v1/sandboxes/{sb}/files", params={"path": path}, content=os.urandom(1024))))
                            await call("file_get", lambda: status(cc.get(f"/v1/sandboxes/{sb}/files", params={"path": path})))
                        elif k < 0.80:
                            await call("list", lambda: status(cc.get("/v1/sandboxes")))
                        elif k < 0.93:
                            async with heavy:
                                async def spawn_rm() -> int:
                                    r = await cc.post("/v1/snapshots/load-warm/spawn", json={"n": 1})
                                    if r.status_code != 201:
                                        return r.status_code
                                    kid = r.json()[0]["sandbox"]
                                    if kid is None:
                                        return 500
                                    r2 = await cc.delete(f"/v1/sandboxes/{kid['id']}")
                                    return r2.status_code if r2.status_code != 200 else 201
                                await call("spawn_rm", spawn_rm)
                        else:
                            async with heavy:
                                async def branch_rm() -> int:
                                    r = await cc.post(f"/v1/sandboxes/{sb}/branch", json={"mode": "live"})
                                    if r.status_code not in (201, 202):
                                        return r.status_code
                                    r2 = await cc.delete(f"/v1/snapshots/{r.json()['tag']}")
                                    return 201 if r2.status_code == 200 else r2.status_code
                                await call("branch_rm", branch_rm)

            t0 = time.monotonic()
            await asyncio.gather(*(one(i) for i in range(args.clients)))
            wall = time.monotonic() - t0
            for sb in shared:
                await c.delete(f"/v1/sandboxes/{sb}")
            await c.delete("/v1/snapshots/load-warm")
        await asyncio.sleep(2)
        after = proc_facts(d.pid())
        total = sum(len(v) for v in lat.values())
        print(f"zygote load: {args.clients} clients, {args.seconds} s, {args.sandboxes} shared sandboxes, heavy ops <= {args.heavy} at once")
        print(f"{'kind':<10} {'n':>7} {'per_s':>8} {'p50_ms':>9} {'p99_ms':>9}  errors")
        for k in sorted(set(lat) | set(errors)):
            xs = lat.get(k, [])
            print(f"{k:<10} {len(xs):>7} {len(xs) / wall:>8.1f} {pct(xs, 50):>9.1f} {pct(xs, 99):>9.1f}  {errors.get(k, {})}")
        print(f"total ok calls {total} in {wall:.0f} s ({total / wall:.1f}/s); errors {sum(sum(e.values()) for e in errors.values())}")
        print(f"daemon before: {before}")
        print(f"daemon after : {after}")
    finally:
        d.cleanup()


async def soak(args: argparse.Namespace) -> None:
    d = Daemon(args.bin, args.images, ["--prestart", "0"])
    d.start()
    try:
        async with client(d) as c:
            await must(await c.post("/v1/snapshots", json={"tag": "soak"}))
            await asyncio.sleep(1)
            before = {**proc_facts(d.pid()), **host_facts(d.home)}
            times = []
            for i in range(args.cycles):
                t0 = time.monotonic()
                kid = (await must(await c.post("/v1/snapshots/soak/spawn", json={"n": 1})))[0]["sandbox"]
                r = await must(await c.post(f"/v1/sandboxes/{kid['id']}/exec", json={"argv": ["echo", str(i)]}))
                assert r["stdout"] == f"{i}\n", r
                await must(await c.delete(f"/v1/sandboxes/{kid['id']}"))
                times.append((time.monotonic() - t0) * 1e3)
                if (i + 1) % 50 == 0:
                    print(f"soak: {i + 1}/{args.cycles} cycles; {proc_facts(d.pid())}", file=sys.stderr)
            await asyncio.sleep(2)
            after = {**proc_facts(d.pid()), **host_facts(d.home)}
        print(f"zygote soak: {args.cycles} spawn -> exec -> rm cycles, cycle p50 {pct(times, 50):.0f} ms p99 {pct(times, 99):.0f} ms")
        for k in before:
            print(f"{k:<20} before {before[k]:>10}  after {after[k]:>10}  delta {after[k] - before[k]:>+8}")
    finally:
        d.cleanup()


async def restarts(args: argparse.Namespace) -> None:
    d = Daemon(args.bin, args.images, ["--prestart", "0"])
    d.start()
    try:
        async with client(d) as c:
            sb = (await must(await c.post("/v1/sandboxes", json={})))["id"]
            await must(await c.post(f"/v1/sandboxes/{sb}/eval", json={"code": "kept = 'across-restarts'"}))
            await must(await c.post(f"/v1/sandboxes/{sb}/exec", json={"cmd": "nohup sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/c.t; mv /tmp/c.t /tmp/c; sleep 0.1; done' >/dev/null 2>&1 &"}))
        up = []
        last = 0
        for n in range(args.restarts):
            how = signal.SIGKILL if n % 2 == 0 else signal.SIGUSR2
            d.stop(how)
            up.append(d.start() * 1e3)
            async with client(d) as c:
                info = await must(await c.get(f"/v1/sandboxes/{sb}"))
                assert info["state"] == "running", info
                r = await must(await c.post(f"/v1/sandboxes/{sb}/eval", json={"code": "kept"}))
                assert r["result"] == "'across-restarts'", r
                cnt = int((await must(await c.post(f"/v1/sandboxes/{sb}/exec", json={"argv": ["cat", "/tmp/c"]})))["stdout"])
                assert cnt > last, (cnt, last)
                last = cnt
            print(f"restart {n + 1}/{args.restarts} ({signal.Signals(how).name}): kept; counter {cnt}", file=sys.stderr)
        print(f"zygote restarts: 1 sandbox kept across {args.restarts} daemon restarts (SIGKILL and SIGUSR2 alternating), state checked after each")
        print(f"restarted daemon answering (incl. re-adoption): p50 {pct(up, 50):.0f} ms p99 {pct(up, 99):.0f} ms (n={len(up)})")
    finally:
        d.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="target/release/zygote")
    p.add_argument("--images", default=os.environ.get("ZYGOTE_TEST_HOME", "/var/lib/zygote-test"))
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("load")
    l.add_argument("--clients", type=int, default=100)
    l.add_argument("--seconds", type=int, default=300)
    l.add_argument("--sandboxes", type=int, default=4)
    l.add_argument("--heavy", type=int, default=3, help="spawns and branches in flight at once")
    l.add_argument("--seed", type=int, default=1)
    s = sub.add_parser("soak")
    s.add_argument("--cycles", type=int, default=500)
    r = sub.add_parser("restarts")
    r.add_argument("--restarts", type=int, default=20)
    args = p.parse_args()
    asyncio.run({"load": load, "soak": soak, "restarts": restarts}[args.cmd](args))


if __name__ == "__main__":
    main()
