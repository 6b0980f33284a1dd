"""The async API against a real daemon: one sandbox booted for the whole module."""

from __future__ import annotations

import asyncio
import io
import os
import time

import pytest

from zygote import AsyncSandbox, AsyncSnapshot, NotFoundError
from zygote.testing import TestDaemon

pytestmark = pytest.mark.anyio


async def test_async_sandbox_end_to_end(daemon: TestDaemon) -> None:
    async with AsyncSandbox.create(socket=daemon.socket, env={"LEVEL": "async"}) as sb:
        assert sb.info.state == "running"
        assert sb.id in [s.id for s in await AsyncSandbox.list(socket=daemon.socket)]

        r = await sb.commands.run('echo "$LEVEL $X"; echo warn >&2; exit 5', env={"X": "1"})
        assert (r.stdout, r.stderr, r.exit_code) == ("async 1\n", "warn\n", 5)

        # Callbacks may be plain functions or coroutine functions.
        out: list[str] = []
        err: list[str] = []

        async def on_err(s: str) -> None:
            await asyncio.sleep(0)
            err.append(s)

        r = await sb.commands.run(
            "echo a; sleep 0.3; echo b >&2; echo c",
            cwd="/tmp",
            on_stdout=out.append,
            on_stderr=on_err,
        )
        assert r.exit_code == 0 and "".join(out) == "a\nc\n" == r.stdout and "".join(err) == "b\n"

        r = await sb.commands.run("sleep 30", timeout=1)
        assert r.timed_out and r.exit_code is None

        # Two commands at once on one sandbox.
        t0 = time.monotonic()
        a, b = await asyncio.gather(
            sb.commands.run("sleep 1; echo one"), sb.commands.run("sleep 1; echo two")
        )
        assert (a.stdout, b.stdout) == ("one\n", "two\n")
        assert time.monotonic() - t0 < 10

        data = os.urandom(70_000)
        # A binary file object is streamed in chunks.
        assert (await sb.files.write("/root/a/data.bin", io.BytesIO(data))).bytes == len(data)
        assert await sb.files.read("/root/a/data.bin", format="bytes") == data
        assert [e.name for e in await sb.files.list("/root/a")] == ["data.bin"]
        await sb.files.remove("/root/a/data.bin")
        assert not await sb.files.exists("/root/a/data.bin")

        assert (await sb.eval("y = 6")).result is None
        assert (await sb.eval("y * 7")).result == "42"

        await sb.files.write("/root/a/mark", "parent")
        (child,) = await sb.fork(1)
        try:
            assert await child.files.read("/root/a/mark") == "parent"
            assert (await child.eval("y")).result == "6"
        finally:
            await child.kill()
            await child.close()
        tag = child.info.snapshot_tag
        assert tag and (await AsyncSnapshot.get(tag, socket=daemon.socket)).tag == tag
        await AsyncSnapshot.delete(tag, socket=daemon.socket)
        pid, sid = sb.info.pid, sb.id

    # `async with` removed it.
    with pytest.raises(NotFoundError):
        await AsyncSandbox.connect(sid, socket=daemon.socket)
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}")


async def test_async_await_form_and_errors(daemon: TestDaemon) -> None:
    with pytest.raises(NotFoundError) as ei:
        await AsyncSandbox.connect("missing-id", socket=daemon.socket)
    assert ei.value.status == 404 and "missing-id" in ei.value.message
    with pytest.raises(NotFoundError):
        await AsyncSandbox.create(snapshot="no-such-snapshot", socket=daemon.socket)
    assert isinstance(await AsyncSnapshot.list(socket=daemon.socket), list)
