"""Sandbox, commands, files and eval against a real daemon and guest."""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import httpx
import pytest

from zygote import (
    AuthenticationError,
    BadRequestError,
    CommandExitError,
    ConfigError,
    ConnectError,
    NotFoundError,
    Sandbox,
)
from zygote.testing import TestDaemon


def test_create_and_list(sandbox: Sandbox, daemon: TestDaemon) -> None:
    assert sandbox.info.state == "running"
    assert sandbox.info.memory_mib == 256 and sandbox.info.vcpus == 1
    assert sandbox.info.metadata == {"suite": "py-session"}
    assert sandbox.info.expires_at_unix is None and sandbox.info.on_expiry == "kill"
    assert sandbox.id in [s.id for s in Sandbox.list(socket=daemon.socket)]
    assert sandbox.get_info().id == sandbox.id
    assert sandbox.is_running()
    assert sandbox.ping() > 0


def test_run_exit_code_stdout_stderr(sandbox: Sandbox) -> None:
    r = sandbox.commands.run("echo out; echo err >&2; exit 7")
    assert (r.stdout, r.stderr, r.exit_code, r.timed_out) == ("out\n", "err\n", 7, False)
    assert not r.ok
    # An argument list runs without a shell: the space stays inside one argument.
    r = sandbox.commands.run(["python3", "-c", "import sys; print(sys.argv[1:])", "a b", "$HOME"])
    assert r.stdout == "['a b', '$HOME']\n" and r.ok
    with pytest.raises(CommandExitError) as ei:
        sandbox.commands.run("echo boom >&2; exit 3", check=True)
    assert ei.value.result.exit_code == 3 and "boom" in str(ei.value)


def test_run_env_cwd_stdin(sandbox: Sandbox) -> None:
    r = sandbox.commands.run(
        'echo "$SB_LEVEL $CMD_LEVEL"; pwd', env={"CMD_LEVEL": "from-run"}, cwd="/tmp"
    )
    assert r.stdout == "from-create from-run\n/tmp\n", r
    r = sandbox.commands.run("cat", stdin="fed\n")
    assert r.stdout == "fed\n"
    r = sandbox.commands.run(["od", "-An", "-tx1"], stdin=b"\x00\xff")
    assert r.stdout.split() == ["00", "ff"]


def test_run_timeout(sandbox: Sandbox) -> None:
    t0 = time.monotonic()
    r = sandbox.commands.run("echo started; sleep 60", timeout=1.5)
    elapsed = time.monotonic() - t0
    assert r.timed_out and r.exit_code is None and r.signal == 9, r
    assert r.stdout == "started\n"
    assert elapsed < 20, elapsed
    # The sandbox still works after the kill.
    assert sandbox.commands.run("echo alive").stdout == "alive\n"


def test_streaming_callbacks(sandbox: Sandbox) -> None:
    seen: list[tuple[str, str, float]] = []
    script = (
        "echo first; echo e1 >&2; sleep 2; "
        # One UTF-8 character split across two writes (and so two chunks).
        "printf '\\303'; sleep 0.5; printf '\\251\\n'; echo e2 >&2; exit 4"
    )
    r = sandbox.commands.run(
        script,
        on_stdout=lambda s: seen.append(("out", s, time.monotonic())),
        on_stderr=lambda s: seen.append(("err", s, time.monotonic())),
    )
    done = time.monotonic()
    assert r.exit_code == 4
    assert r.stdout == "first\n\u00e9\n" and r.stderr == "e1\ne2\n"
    assert "".join(s for k, s, _ in seen if k == "out") == r.stdout
    assert "".join(s for k, s, _ in seen if k == "err") == r.stderr
    first = next(t for k, s, t in seen if k == "out" and "first" in s)
    # The first line arrived while the command was still sleeping, not at its end.
    assert done - first > 1.5, (done - first, seen)


def test_files_binary_exact(sandbox: Sandbox, tmp_path: Path) -> None:
    small = bytes(range(256)) * 4 + b"\r\n\x00"
    assert sandbox.files.write("/root/py/small.bin", small).bytes == len(small)
    assert sandbox.files.read("/root/py/small.bin", format="bytes") == small
    # Over 1 MiB the daemon moves files through the transfer disk.
    big = os.urandom(3 * 1024 * 1024 + 17)
    info = sandbox.files.write("/root/py/big.bin", io.BytesIO(big))
    assert info.bytes == len(big) and info.path == "/root/py/big.bin"
    assert sandbox.files.read("/root/py/big.bin", format="bytes") == big
    # The guest sees the same bytes.
    r = sandbox.commands.run("sha256sum /root/py/big.bin")
    assert r.stdout.split()[0] == hashlib.sha256(big).hexdigest()
    # Streamed to and from local files; the permission bits travel with upload.
    src = tmp_path / "up.bin"
    src.write_bytes(big[::-1])
    src.chmod(0o640)
    assert sandbox.files.upload(src, "/root/py/up.bin").bytes == len(big)
    assert sandbox.files.stat("/root/py/up.bin").mode & 0o777 == 0o640
    dst = tmp_path / "down.bin"
    assert sandbox.files.download("/root/py/up.bin", dst) == len(big)
    assert dst.read_bytes() == big[::-1]
    with pytest.raises(NotFoundError):
        sandbox.files.download("/root/py/none.bin", tmp_path / "none.bin")


def test_files_text_list_stat_remove(sandbox: Sandbox) -> None:
    f = sandbox.files
    f.write("/root/py/dir/a.txt", "h\u00e9llo\n")
    f.write("/root/py/dir/run.sh", "#!/bin/sh\necho ran\n", mode=0o755)
    assert f.read("/root/py/dir/a.txt") == "h\u00e9llo\n"
    assert sandbox.commands.run("/root/py/dir/run.sh").stdout == "ran\n"
    assert f.stat("/root/py/dir/run.sh").mode & 0o777 == 0o755
    sandbox.commands.run("mkdir -p /root/py/dir/sub")
    entries = {e.name: e for e in f.list("/root/py/dir")}
    assert set(entries) == {"a.txt", "run.sh", "sub"}
    assert entries["a.txt"].kind == "file" and entries["a.txt"].size == len("h\u00e9llo\n".encode())
    assert entries["sub"].kind == "dir" and entries["a.txt"].path == "/root/py/dir/a.txt"
    f.remove("/root/py/dir/a.txt")
    assert not f.exists("/root/py/dir/a.txt")
    with pytest.raises(NotFoundError) as ei:
        f.read("/root/py/dir/a.txt")
    assert ei.value.status == 404
    f.remove("/root/py/dir", recursive=True)
    assert not f.exists("/root/py/dir")


def test_eval_keeps_state(sandbox: Sandbox) -> None:
    assert sandbox.eval("import math\nx = 41").result is None
    r = sandbox.eval("print('side'); x + math.floor(1.5)")
    assert (r.result, r.stdout, r.error) == ("42", "side\n", None)
    r = sandbox.eval("raise ValueError('bad value 7')")
    assert r.error == "ValueError: bad value 7" and "Traceback" in (r.traceback or "")
    assert sandbox.eval("x").result == "41"


def test_typed_errors(sandbox: Sandbox, daemon: TestDaemon) -> None:
    with pytest.raises(NotFoundError) as ei:
        Sandbox.connect("no-such-sandbox", socket=daemon.socket)
    e = ei.value
    raw = httpx.Client(transport=httpx.HTTPTransport(uds=daemon.socket)).get(
        "http://zygote/v1/sandboxes/no-such-sandbox"
    )
    assert e.status == 404 == raw.status_code
    assert e.message == raw.json()["error"] and "no-such-sandbox" in e.message
    # A value the daemon rejects comes back as a 400 with its message.
    with pytest.raises(BadRequestError) as bi:
        sandbox.commands.run("true", cwd="relative/dir")
    assert bi.value.status == 400 and "relative/dir" in bi.value.message
    # Values the SDK can check itself never reach the daemon.
    with pytest.raises(ConfigError, match="memory_mib"):
        Sandbox.create(memory_mib=-1, socket=daemon.socket)
    with pytest.raises(ConfigError, match="mode"):
        sandbox.branch(mode="fast")  # type: ignore[arg-type]


def test_tcp_token_and_env_config(
    sandbox: Sandbox, daemon: TestDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert daemon.url and daemon.token
    # Arguments: the same sandbox, reached over TCP with the bearer token.
    tcp = Sandbox.connect(sandbox.id, url=daemon.url, token=daemon.token)
    try:
        assert tcp.commands.run("echo over-tcp").stdout == "over-tcp\n"
        assert tcp.files.read("/etc/hostname") == sandbox.files.read("/etc/hostname")
    finally:
        tcp.close()  # not kill: the session's sandbox lives on
    # Environment, like the CLI: ZYGOTE_URL + ZYGOTE_TOKEN win over ZYGOTE_SOCKET.
    monkeypatch.setenv("ZYGOTE_SOCKET", "/tmp/zygote-no-such.sock")
    monkeypatch.setenv("ZYGOTE_URL", daemon.url)
    monkeypatch.setenv("ZYGOTE_TOKEN", daemon.token)
    assert sandbox.id in [s.id for s in Sandbox.list()]
    # A wrong token is a typed 401 with the daemon's message.
    monkeypatch.setenv("ZYGOTE_TOKEN", "wrong-" + daemon.token)
    with pytest.raises(AuthenticationError) as ei:
        Sandbox.list()
    assert ei.value.status == 401 and "bearer token" in ei.value.message
    monkeypatch.delenv("ZYGOTE_TOKEN")
    with pytest.raises(AuthenticationError):
        Sandbox.list()
    # Without ZYGOTE_URL, ZYGOTE_SOCKET is used.
    monkeypatch.delenv("ZYGOTE_URL")
    monkeypatch.setenv("ZYGOTE_SOCKET", daemon.socket)
    assert sandbox.id in [s.id for s in Sandbox.list()]


def test_bad_endpoints() -> None:
    with pytest.raises(ConnectError) as ei:
        Sandbox.list(socket="/tmp/zygote-no-such.sock")
    assert "unix:/tmp/zygote-no-such.sock" in str(ei.value)
    with pytest.raises(ConnectError):
        Sandbox.list(url="http://127.0.0.1:1")
    with pytest.raises(ConfigError, match="http://"):
        Sandbox.list(url="ftp://127.0.0.1:1")
    with pytest.raises(ConfigError, match="port"):
        Sandbox.list(url="http://127.0.0.1")
    with pytest.raises(ConfigError, match="not both"):
        Sandbox.list(url="http://127.0.0.1:1", socket="/x")
