"""Background commands, stdin, terminals and typed stream errors against a real
daemon and guest (the sync API; test_async.py does the same through the async one)."""

from __future__ import annotations

import time

import pytest

from zygote import (
    CommandExitError,
    CommandExitException,
    CommandHandle,
    NotFoundError,
    PtySize,
    Sandbox,
)
from zygote.testing import TestDaemon

FETCH = (
    'python3 -c "import urllib.request as u; '
    "print(u.urlopen('http://127.0.0.1:8000/?hello').status)\""
)


def _until(handle: CommandHandle, needle: str) -> str:
    """Read the handle's output until ``needle`` shows (the process's own
    ``timeout`` bounds the wait: the stream ends when it is killed)."""
    seen = ""
    for out, err, pty in handle:
        seen += out or err or (pty or b"").decode("utf-8", "replace")
        if needle in seen:
            return seen
    raise AssertionError(f"{needle!r} never showed; the output ended: {seen!r}")


def test_background_server_listed_reattached_from_another_client_and_killed(
    sandbox: Sandbox, daemon: TestDaemon
) -> None:
    seen: list[str] = []
    h = sandbox.commands.run(
        "python3 -u -m http.server 8000 --bind 127.0.0.1",
        background=True,
        on_stderr=seen.append,
        tag="web",
        cwd="/tmp",
        timeout=300,
    )
    assert isinstance(h, CommandHandle) and h.pid > 0 and h.exit_code is None
    try:
        # It serves: a foreground command in the same guest fetches from it.
        deadline = time.monotonic() + 60
        while sandbox.commands.run(FETCH).stdout.strip() != "200":
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.2)
        listed = {p.pid: p for p in sandbox.commands.list()}
        assert h.pid in listed, listed
        p = listed[h.pid]
        assert (p.tag, p.pty, p.stdin, p.running) == ("web", False, False, True)
        assert "http.server" in p.cmd

        # A second client (another Sandbox object, another connection) re-attaches
        # and first sees what the server logged before it came: the kept tail.
        other = Sandbox.connect(sandbox.id, socket=daemon.socket)
        try:
            again = other.commands.connect(h.pid)
            assert "GET /?hello HTTP" in _until(again, "GET /?hello")
            assert other.commands.kill(h.pid) is True
            with pytest.raises(CommandExitError) as ei:
                again.wait()
            assert ei.value.result.signal == 9 and ei.value.exit_code is None
            assert "GET /?hello" in again.stderr
        finally:
            other.close()
        # The first handle sees the same end; its callback got the same output.
        with pytest.raises(CommandExitException) as ei2:
            h.wait()
        assert ei2.value.result.signal == 9
        assert "GET /?hello" in "".join(seen) and "".join(seen) == h.stderr
        assert "Serving HTTP" in h.stdout
        assert h.pid not in {q.pid for q in sandbox.commands.list()}
        gone = {q.pid: q for q in sandbox.commands.list(include_exited=True)}[h.pid]
        assert not gone.running and gone.signal == 9
        assert sandbox.commands.kill(999_999) is False
    finally:
        sandbox.commands.kill(h.pid)


def test_stdin_user_envs_and_exit_codes(sandbox: Sandbox) -> None:
    h = sandbox.commands.run(
        'tr a-z A-Z; echo "$WHO" >&2; exit 4',
        background=True,
        stdin=True,
        envs={"WHO": "env-seen"},
        timeout=60,
    )
    h.send_stdin("first ")
    sandbox.commands.send_stdin(h.pid, b"second\n")
    h.close_stdin()
    with pytest.raises(CommandExitError) as ei:
        h.wait()
    r = ei.value.result
    assert (r.stdout, r.stderr, r.exit_code) == ("FIRST SECOND\n", "env-seen\n", 4)
    # Text given as stdin is sent, then closed; user= runs as that guest user.
    h = sandbox.commands.run("cat; id -un", background=True, stdin="fed\n", user="nobody")
    res = h.wait()
    assert (res.stdout, res.exit_code) == ("fed\nnobody\n", 0)
    assert sandbox.commands.run("id -un", user="nobody").stdout == "nobody\n"
    # Iterating sees the output as (stdout, stderr, pty) triples.
    h = sandbox.commands.run("echo a; echo b >&2", background=True)
    assert set(h) == {(None, "b\n", None), ("a\n", None, None)}


def test_an_interactive_python_on_a_terminal(sandbox: Sandbox) -> None:
    data: list[bytes] = []
    t = sandbox.pty.create(PtySize(rows=24, cols=80), data.append, timeout=120, cwd="/tmp")
    try:
        assert t.pid in {p.pid for p in sandbox.commands.list() if p.pty}
        sandbox.pty.send_stdin(t.pid, b"python3 -q\n")
        sandbox.pty.send_stdin(t.pid, "print(6*7)\n")
        # The answer, on a line of its own: the echo of what was typed has no 42.
        _until(t, "\r\n42\r\n")
        sandbox.pty.resize(t.pid, PtySize(rows=40, cols=100))
        sandbox.pty.send_stdin(t.pid, "import os; print(os.get_terminal_size())\n")
        assert "columns=100, lines=40" in _until(t, "lines=40")
        sandbox.pty.send_stdin(t.pid, "exit()\n")
        sandbox.pty.send_stdin(t.pid, "pwd; echo $TERM; exit 3\n")
        with pytest.raises(CommandExitError) as ei:
            t.wait()
        assert ei.value.exit_code == 3
        assert "/tmp\r\nxterm-256color\r\n" in t.stdout
        assert b"".join(data).decode() == t.stdout
    finally:
        sandbox.pty.kill(t.pid)
    # A terminal killed by the SDK ends with SIGKILL.
    t = sandbox.pty.create(PtySize(24, 80), cmd=["sleep", "600"])
    assert sandbox.pty.kill(t.pid) is True
    with pytest.raises(CommandExitError) as ei:
        t.wait()
    assert ei.value.result.signal == 9


def test_streamed_errors_keep_their_class(sandbox: Sandbox) -> None:
    # The same failure, buffered and streamed, raises the same typed error.
    with pytest.raises(NotFoundError) as buffered:
        sandbox.commands.run(["/no/such/program"])
    with pytest.raises(NotFoundError) as streamed:
        sandbox.commands.run(["/no/such/program"], on_stdout=print)
    assert buffered.value.status == streamed.value.status == 404
    assert "/no/such/program" in streamed.value.message
    with pytest.raises(NotFoundError):
        sandbox.commands.connect(999_999).wait()
