"""Branch, fork, snapshots and context-manager cleanup against a real daemon."""

from __future__ import annotations

import os
import time

import pytest

from zygote import ConflictError, NotFoundError, Sandbox, Snapshot, SnapshotInfo
from zygote.testing import TestDaemon


def _gone(pid: int | None, timeout: float = 20.0) -> bool:
    """The QEMU process `pid` has exited."""
    assert pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.1)
    return False


def test_branch_then_child_sees_branch_time_state(sandbox: Sandbox, daemon: TestDaemon) -> None:
    sandbox.files.write("/root/branch-state.txt", "v1")
    sandbox.eval("branch_counter = 10")
    snap = sandbox.branch(tag="py-branch", mode="live")
    assert snap.tag == "py-branch" and snap.branched_from == sandbox.id
    assert snap.mode == "live" and snap.memory_mib == sandbox.info.memory_mib
    assert snap.pause_ms is not None and snap.pause_ms >= 0
    assert snap.status in ("writing", "ready")
    assert Snapshot.get("py-branch", socket=daemon.socket).tag == "py-branch"
    assert "py-branch" in [s.tag for s in Snapshot.list(socket=daemon.socket)]
    # The parent keeps running and moves on after the branch.
    sandbox.files.write("/root/branch-state.txt", "v2")
    sandbox.eval("branch_counter = 11")

    child = Sandbox.create(snapshot="py-branch", socket=daemon.socket)
    try:
        assert child.id != sandbox.id and child.info.snapshot_tag == "py-branch"
        assert child.info.memory == "cow"
        assert child.files.read("/root/branch-state.txt") == "v1"
        assert child.eval("branch_counter").result == "10"
        assert sandbox.eval("branch_counter").result == "11"
    finally:
        assert child.kill() is True
        child.close()
    assert child.kill() is False  # already gone
    with pytest.raises(ConflictError):
        sandbox.branch(tag="py-branch")
    Snapshot.delete("py-branch", socket=daemon.socket)
    with pytest.raises(NotFoundError):
        Snapshot.get("py-branch", socket=daemon.socket)


def test_fork_children_see_parent_state_and_diverge(sandbox: Sandbox, daemon: TestDaemon) -> None:
    sandbox.files.write("/root/fork-state.txt", "parent")
    sandbox.eval("fork_marker = 'before fork'")
    children = sandbox.fork(2, timeout=600, metadata={"forked": "yes"})
    try:
        assert len(children) == 2 and len({c.id for c in children} | {sandbox.id}) == 3
        for c in children:
            # The parent's labels, and the fork's over them.
            assert c.info.metadata == {"suite": "py-session", "forked": "yes"}, c.info
            assert c.info.expires_at_unix is not None
            assert 590 <= c.info.expires_at_unix - time.time() <= 610
        tag = children[0].info.snapshot_tag
        assert tag and all(c.info.snapshot_tag == tag for c in children)
        for c in children:
            assert c.files.read("/root/fork-state.txt") == "parent"
            assert c.eval("fork_marker").result == "'before fork'"
            assert c.commands.run("hostname").stdout.strip() != ""
        # Each child goes its own way.
        children[0].files.write("/root/fork-state.txt", "child0")
        children[0].eval("fork_marker = 'child0'")
        assert children[1].files.read("/root/fork-state.txt") == "parent"
        assert children[1].eval("fork_marker").result == "'before fork'"
        assert sandbox.files.read("/root/fork-state.txt") == "parent"
        pids = [c.info.pid for c in children]
    finally:
        for c in children:
            c.kill()
            c.close()
    assert all(_gone(p) for p in pids)
    listed = {s.id for s in Sandbox.list(socket=daemon.socket)}
    assert not listed & {c.id for c in children}
    Snapshot.delete(tag, socket=daemon.socket)


def test_snapshot_create_spawn_and_with_cleanup(daemon: TestDaemon, warm: SnapshotInfo) -> None:
    assert warm.tag == "py-warm" and warm.image == "python" and warm.memory_mib == 256
    assert "py-warm" in [s.tag for s in Snapshot.list(socket=daemon.socket)]
    with pytest.raises(ConflictError):
        Snapshot.create("py-warm", socket=daemon.socket)
    with Sandbox.create(snapshot="py-warm", socket=daemon.socket) as child:
        assert child.eval("warm").result == repr('{"a": 1}')
        pid = child.info.pid
        cid = child.id
        # A snapshot of a child: deleted, it is gone for good.
        child.branch(tag="py-del", mode="live")
    # Gone after the block: not listed, not reachable, its QEMU exited.
    assert cid not in {s.id for s in Sandbox.list(socket=daemon.socket)}
    with pytest.raises(NotFoundError):
        Sandbox.connect(cid, socket=daemon.socket)
    assert _gone(pid)
    many = Snapshot.spawn("py-warm", 2, socket=daemon.socket)
    try:
        assert [c.eval("warm").result for c in many] == [repr('{"a": 1}')] * 2
    finally:
        for c in many:
            c.kill()
            c.close()
    Snapshot.delete("py-del", socket=daemon.socket)
    assert "py-del" not in [s.tag for s in Snapshot.list(socket=daemon.socket)]
    with pytest.raises(NotFoundError) as ei:
        Snapshot.delete("py-del", socket=daemon.socket)
    assert ei.value.status == 404 and "py-del" in ei.value.message
    with pytest.raises(NotFoundError):
        Sandbox.create(snapshot="py-del", socket=daemon.socket)
