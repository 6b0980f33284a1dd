"""Warm-up servers, lifetimes, labels, pause and resume against a real daemon,
on children of the session's warm snapshot (each starts in a fraction of a
second: no boot)."""

from __future__ import annotations

import os
import time

import pytest
from conftest import ASK_WARM

from zygote import ConflictError, NotFoundError, Sandbox, Snapshot, SnapshotInfo
from zygote.testing import TestDaemon


def _gone(pid: int | None, timeout: float = 20.0) -> bool:
    assert pid
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_warm_up_server_runs_in_every_child_and_labels_find_them(
    daemon: TestDaemon, warm: SnapshotInfo
) -> None:
    kids = Snapshot.spawn(
        warm.tag, 3, metadata={"suite": "py-life", "role": "db"}, socket=daemon.socket
    )
    try:
        for k in kids:
            # Each child has its own copy of the server, which had answered the
            # readiness check once before the snapshot.
            assert k.commands.run(ASK_WARM).stdout.strip() == "pg-like 2"
            assert k.commands.run(ASK_WARM).stdout.strip() == "pg-like 3"
            tags = {p.tag for p in k.commands.list()}
            assert "warmup" in tags, k.commands.list()
            assert k.info.metadata == {"suite": "py-life", "role": "db"}
        ids = {k.id for k in kids}
        found = Sandbox.list(metadata={"role": "db"}, socket=daemon.socket)
        assert {s.id for s in found} == ids and len(found) == 3 and found.next_token is None
        found = Sandbox.list(
            metadata={"role": "db", "suite": "py-life"}, state="running", socket=daemon.socket
        )
        assert {s.id for s in found} == ids
        assert Sandbox.list(metadata={"role": "web"}, socket=daemon.socket) == []
        assert Sandbox.list(metadata={"role": "db"}, state="paused", socket=daemon.socket) == []
        # Paged: two, then the last one.
        page = Sandbox.list(metadata={"role": "db"}, limit=2, socket=daemon.socket)
        assert len(page) == 2 and page.has_next
        rest = Sandbox.list(
            metadata={"role": "db"}, limit=2, next_token=page.next_token, socket=daemon.socket
        )
        assert len(rest) == 1 and rest.next_token is None
        assert {s.id for s in page} | {s.id for s in rest} == ids
    finally:
        for k in kids:
            k.kill()
            k.close()


def test_a_child_with_a_lifetime_goes_and_one_extended_stays(
    daemon: TestDaemon, warm: SnapshotInfo
) -> None:
    t0 = time.monotonic()
    short = Sandbox.create(snapshot=warm.tag, timeout=3, socket=daemon.socket)
    kept = Sandbox.create(snapshot=warm.tag, timeout=3, socket=daemon.socket)
    try:
        for s in (short, kept):
            assert s.info.expires_at_unix is not None
            assert 1 <= s.info.expires_at_unix - s.info.created_at_unix <= 4
        kept.set_timeout(120)
        assert kept.info.expires_at_unix is not None
        assert kept.info.expires_at_unix - time.time() > 100
        while True:
            try:
                short.get_info()
            except NotFoundError:
                break
            assert time.monotonic() - t0 < 20, "the child outlived its 3 s"
            time.sleep(0.2)
        assert time.monotonic() - t0 >= 1.5, "it went too early"
        assert _gone(short.info.pid), "its QEMU is gone too"
        assert kept.is_running() and kept.commands.run("echo alive").stdout == "alive\n"
        # A lifetime that pauses instead; connect() resumes it (E2B's way).
        kept.set_timeout(1, on_expiry="pause")
        assert kept.info.on_expiry == "pause"
        deadline = time.monotonic() + 30
        while kept.get_info().state != "paused":
            assert time.monotonic() < deadline, "not paused on expiry"
            time.sleep(0.2)
        back = Sandbox.connect(kept.id, timeout=300, socket=daemon.socket)
        try:
            assert back.info.state == "running" and back.eval("warm").result
            assert back.info.expires_at_unix is not None
        finally:
            back.close()
    finally:
        short.kill()
        kept.kill()


def test_pause_then_resume_keeps_the_interpreter_and_a_background_counter(
    daemon: TestDaemon, warm: SnapshotInfo
) -> None:
    sb = Sandbox.create(snapshot=warm.tag, socket=daemon.socket)
    try:
        sb.eval("kept = 'paused-and-back'")
        counter = sb.commands.run(
            "i=0; while true; do i=$((i+1)); echo $i > /tmp/c.t; mv /tmp/c.t /tmp/c; "
            "sleep 0.1; done",
            background=True,
            tag="counter",
        )
        deadline = time.monotonic() + 20
        while not sb.files.exists("/tmp/c"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)
        before = int(sb.files.read("/tmp/c"))
        pid = sb.info.pid

        assert sb.pause() is True
        assert sb.info.state == "paused" and sb.info.pid is None
        assert _gone(pid), "pausing stops its QEMU"
        assert sb.pause() is False  # already paused
        with pytest.raises(ConflictError):
            sb.eval("1")
        assert sb.id in [s.id for s in Sandbox.list(state="paused", socket=daemon.socket)]

        # Another client connects: the sandbox is resumed under the same id.
        other = Sandbox.connect(sb.id, socket=daemon.socket)
        try:
            assert (other.id, other.info.state) == (sb.id, "running")
            assert other.eval("kept").result == "'paused-and-back'"
            after = int(other.files.read("/tmp/c"))
            assert after >= before, (before, after)
            time.sleep(0.5)
            assert int(other.files.read("/tmp/c")) > after, "the counter counts on"
            assert counter.pid in {p.pid for p in other.commands.list() if p.tag == "counter"}
        finally:
            other.close()
        assert sb.resume() is False  # running already
        sb.pause()
        assert sb.resume() is True and sb.eval("kept").result == "'paused-and-back'"
        assert sb.commands.kill(counter.pid) is True
    finally:
        sb.kill()
