"""The async API against a real daemon: one sandbox booted for the first test,
children of the warm snapshot for the second."""

from __future__ import annotations

import asyncio
import io
import os
import time

import pytest
from conftest import ASK_WARM

from zygote import (
    AsyncCommandHandle,
    AsyncSandbox,
    AsyncSnapshot,
    CommandExitError,
    FilesystemEvent,
    FilesystemEventType,
    NotFoundError,
    PtySize,
    SnapshotInfo,
)
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


async def test_async_processes_terminal_files_lifetimes_and_pause(
    daemon: TestDaemon, warm: SnapshotInfo
) -> None:
    """Issue 12's features through the async API, on children of the warm snapshot."""
    conn = {"socket": daemon.socket}
    sb = await AsyncSandbox.create(snapshot=warm.tag, metadata={"suite": "py-async"}, **conn)
    try:
        # The warm-up server runs in the child.
        assert (await sb.commands.run(ASK_WARM)).stdout.strip() == "pg-like 2"

        # A background command: callbacks (here a coroutine function) see output
        # as it arrives, a second client re-attaches and sees the kept tail.
        lines: list[str] = []

        async def on_out(s: str) -> None:
            await asyncio.sleep(0)
            lines.append(s)

        h = await sb.commands.run(
            "for i in 1 2 3; do echo tick $i; sleep 0.2; done; read x; echo got $x; exit 6",
            background=True,
            stdin=True,
            on_stdout=on_out,
        )
        assert isinstance(h, AsyncCommandHandle)
        assert h.pid in [p.pid for p in await sb.commands.list()]
        other = await AsyncSandbox.connect(sb.id, **conn)
        try:
            again = await other.commands.connect(h.pid)
            seen = ""
            async for out, _err, _pty in again:
                seen += out or ""
                if "tick 3" in seen:
                    break
            assert seen.startswith("tick 1\ntick 2\ntick 3\n"), seen
            await other.commands.send_stdin(h.pid, "word\n")
            with pytest.raises(CommandExitError) as ei:
                await again.wait()
            assert ei.value.exit_code == 6 and again.stdout.endswith("got word\n")
        finally:
            await other.close()
        with pytest.raises(CommandExitError):
            await h.wait()
        assert "".join(lines) == h.stdout == "tick 1\ntick 2\ntick 3\ngot word\n"
        with pytest.raises(NotFoundError) as nf:
            await sb.commands.run(["/no/such/program"], on_stdout=print)
        assert nf.value.status == 404

        # A terminal: python3 typed into bash, 6*7, a resize.
        data = bytearray()
        got42 = asyncio.Event()

        def on_data(b: bytes) -> None:
            data.extend(b)
            if b"\r\n42\r\n" in data:
                got42.set()

        t = await sb.pty.create(PtySize(24, 80), on_data, timeout=120)
        await sb.pty.send_stdin(t.pid, "python3 -q\n")
        await sb.pty.send_stdin(t.pid, "print(6*7)\n")
        await asyncio.wait_for(got42.wait(), 60)
        await sb.pty.resize(t.pid, PtySize(rows=33, cols=90))
        await sb.pty.send_stdin(t.pid, "import os; print(os.get_terminal_size())\nexit()\nexit\n")
        assert (await t.wait()).exit_code == 0
        assert "columns=90, lines=33" in t.stdout and bytes(data).decode() == t.stdout

        # Files: several in one call, a tree, a watch.
        events: list[FilesystemEvent] = []
        w = await sb.files.watch_dir("/srv", events.append, recursive=True)
        await sb.files.write_files(
            [{"path": "/srv/a.txt", "data": "a"}, {"path": "/srv/d/b.txt", "data": b"b"}]
        )
        assert [e.path for e in await sb.files.list("/srv", depth=2)] == [
            "/srv/a.txt",
            "/srv/d",
            "/srv/d/b.txt",
        ]
        assert await sb.files.make_dir("/srv/d") is False
        assert (await sb.files.rename("/srv/a.txt", "/srv/d/c.txt")).name == "c.txt"
        deadline = time.monotonic() + 30
        while not any(e.name == "d/c.txt" for e in events):
            assert time.monotonic() < deadline, events
            await asyncio.sleep(0.05)
        await w.stop()
        assert {("rename", "a.txt"), ("rename", "d/c.txt")} <= {(e.type, e.name) for e in events}
        assert any(e.type == FilesystemEventType.CREATE and e.name == "d" for e in events)

        # Pause, then connect resumes it with its interpreter state.
        await sb.eval("kept = 42")
        assert await sb.pause() is True and sb.info.state == "paused"
        paused = await AsyncSandbox.list(metadata={"suite": "py-async"}, state="paused", **conn)
        assert [s.id for s in paused] == [sb.id]
        back = await AsyncSandbox.connect(sb.id, **conn)
        try:
            assert back.info.state == "running" and (await back.eval("kept")).result == "42"
        finally:
            await back.close()

        # A lifetime on a child: gone after it.
        short = await AsyncSandbox.create(snapshot=warm.tag, timeout=2, **conn)
        t0 = time.monotonic()
        while await short.is_running():
            assert time.monotonic() - t0 < 20, "the child outlived its 2 s"
            await asyncio.sleep(0.2)
        with pytest.raises(NotFoundError):
            await short.get_info()
        await short.close()
    finally:
        await sb.kill()
        await sb.close()
