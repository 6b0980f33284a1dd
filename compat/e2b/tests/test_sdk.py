"""E2B's SDK, unmodified, against zygote: sandboxes, commands, files,
lifetimes, listing, pause and connect, fork, snapshots, errors."""

from __future__ import annotations

import time

import pytest
from e2b import Sandbox
from e2b.exceptions import AuthenticationException, NotFoundException

from zygote.testing import TestDaemon


def test_create_from_the_default_template_boots_the_default_image(daemon: TestDaemon) -> None:
    sb = Sandbox.create(timeout=120)
    try:
        assert sb.sandbox_id
        r = sb.commands.run("echo booted; uname -s")
        assert r.stdout.split() == ["booted", "Linux"]
        assert r.exit_code == 0
        assert sb.is_running()
    finally:
        sb.kill()


def test_commands_foreground(sbx: Sandbox) -> None:
    r = sbx.commands.run("echo out; echo err >&2; exit 0")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    from e2b import CommandExitException

    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("echo partial; exit 3")
    assert e.value.exit_code == 3
    assert e.value.stdout == "partial\n"
    r = sbx.commands.run("echo $GREETING $PWD", envs={"GREETING": "hi"}, cwd="/tmp")
    assert r.stdout == "hi /tmp\n"
    seen: list[str] = []
    sbx.commands.run("for i in 1 2 3; do echo $i; done", on_stdout=seen.append)
    assert "".join(seen).split() == ["1", "2", "3"]


def test_commands_background(sbx: Sandbox) -> None:
    h = sbx.commands.run("sleep 60", background=True)
    pids = [p.pid for p in sbx.commands.list()]
    assert h.pid in pids
    assert h.kill()
    from e2b import CommandExitException

    with pytest.raises(CommandExitException):
        h.wait()
    assert h.pid not in [p.pid for p in sbx.commands.list()]

    cat = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(cat.pid, "hello stdin\n")
    sbx.commands.close_stdin(cat.pid)
    assert cat.wait().stdout == "hello stdin\n"

    slow = sbx.commands.run("sleep 1; echo later", background=True)
    again = sbx.commands.connect(slow.pid)
    assert again.wait().stdout == "later\n"


def test_files(sbx: Sandbox) -> None:
    info = sbx.files.write("/tmp/e2b/a.txt", "alpha")
    assert info.path == "/tmp/e2b/a.txt"
    assert sbx.files.read("/tmp/e2b/a.txt") == "alpha"
    assert sbx.files.read("/tmp/e2b/a.txt", format="bytes") == b"alpha"
    assert sbx.files.exists("/tmp/e2b/a.txt")
    assert not sbx.files.exists("/tmp/e2b/none")
    assert sbx.files.make_dir("/tmp/e2b/d")
    assert not sbx.files.make_dir("/tmp/e2b/d")
    names = sorted(e.name for e in sbx.files.list("/tmp/e2b"))
    assert names == ["a.txt", "d"]
    moved = sbx.files.rename("/tmp/e2b/a.txt", "/tmp/e2b/d/b.txt")
    assert moved.path == "/tmp/e2b/d/b.txt"
    assert sbx.commands.run("cat /tmp/e2b/d/b.txt").stdout == "alpha"
    big = bytes(range(256)) * 4096
    sbx.files.write("/tmp/e2b/big.bin", big)
    assert sbx.files.read("/tmp/e2b/big.bin", format="bytes") == big
    sbx.files.remove("/tmp/e2b/d")
    assert not sbx.files.exists("/tmp/e2b/d/b.txt")
    from e2b.exceptions import NotFoundException as NF

    with pytest.raises(NF):
        sbx.files.read("/tmp/e2b/missing")


def test_watch_dir(sbx: Sandbox) -> None:
    sbx.files.make_dir("/tmp/w")
    w = sbx.files.watch_dir("/tmp/w")
    try:
        sbx.files.write("/tmp/w/new.txt", "x")
        events = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e.name == "new.txt" for e in events):
            events += w.get_new_events()
            time.sleep(0.2)
        assert any(e.name == "new.txt" for e in events), events
    finally:
        w.stop()


def test_set_timeout_ends_the_sandbox(template: str) -> None:
    sb = Sandbox.create(template=template, timeout=600)
    sb.set_timeout(2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sb.is_running():
        time.sleep(0.5)
    assert not sb.is_running()
    with pytest.raises(NotFoundException):
        Sandbox.connect(sb.sandbox_id)


def test_list_by_metadata(template: str) -> None:
    tag = f"list-{time.monotonic_ns()}"
    a = Sandbox.create(template=template, metadata={"run": tag, "who": "a"})
    b = Sandbox.create(template=template, metadata={"run": tag, "who": "b"})
    try:
        from e2b import SandboxQuery

        found = Sandbox.list(query=SandboxQuery(metadata={"run": tag})).next_items()
        assert sorted(s.sandbox_id for s in found) == sorted([a.sandbox_id, b.sandbox_id])
        only_a = Sandbox.list(query=SandboxQuery(metadata={"run": tag, "who": "a"})).next_items()
        assert [s.sandbox_id for s in only_a] == [a.sandbox_id]
        assert only_a[0].metadata["who"] == "a"
        info = a.get_info()
        assert info.sandbox_id == a.sandbox_id and info.metadata["run"] == tag
    finally:
        a.kill()
        b.kill()


def test_pause_then_connect_keeps_state(sbx: Sandbox) -> None:
    sbx.commands.run("echo kept > /tmp/state")
    sbx.pause()
    again = Sandbox.connect(sbx.sandbox_id)
    assert again.commands.run("cat /tmp/state").stdout == "kept\n"


def test_fork_carries_state_to_every_child(sbx: Sandbox) -> None:
    if not hasattr(sbx, "fork"):
        pytest.skip("this e2b version has no Sandbox.fork")
    sbx.commands.run("echo parent-state > /tmp/fork-me")
    children = sbx.fork(count=3)
    try:
        assert len(children) == 3
        ids = {c.sandbox_id for c in children}
        assert len(ids) == 3 and sbx.sandbox_id not in ids
        for c in children:
            assert c.commands.run("cat /tmp/fork-me").stdout == "parent-state\n"
        children[0].commands.run("echo child0 > /tmp/fork-me")
        assert children[1].commands.run("cat /tmp/fork-me").stdout == "parent-state\n"
        assert sbx.commands.run("cat /tmp/fork-me").stdout == "parent-state\n"
    finally:
        for c in children:
            c.kill()


def test_snapshot_then_create_from_it(sbx: Sandbox) -> None:
    if not hasattr(sbx, "create_snapshot"):
        pytest.skip("this e2b version has no Sandbox.create_snapshot")
    sbx.commands.run("echo snap > /tmp/snap")
    snap = sbx.create_snapshot()
    child = Sandbox.create(template=snap.snapshot_id)
    try:
        assert child.commands.run("cat /tmp/snap").stdout == "snap\n"
    finally:
        child.kill()


def test_kill_and_errors(template: str) -> None:
    sb = Sandbox.create(template=template)
    sb.kill()
    assert not sb.is_running()
    with pytest.raises(NotFoundException):
        Sandbox.connect(sb.sandbox_id)
    with pytest.raises(NotFoundException):
        Sandbox.connect("0123456789abcdef")
    with pytest.raises(AuthenticationException):
        Sandbox.create(template=template, api_key="e2b_" + "0" * 39 + "1")
    with pytest.raises(Exception, match="not found"):
        Sandbox.create(template="no-such-template")
