"""Pure parts of the SDK, without a daemon: endpoint resolution, error mapping,
request validation and the exec-stream decoder."""

from __future__ import annotations

import base64
import json

import pytest

from zygote import (
    ApiError,
    BadRequestError,
    CommandResult,
    ConfigError,
    NotFoundError,
    SandboxError,
    ServerError,
    UnavailableError,
    resolve,
)
from zygote._api import ExecStream, exec_call, write_file
from zygote._errors import CommandExitError, api_error


def test_resolve_order(monkeypatch: pytest.MonkeyPatch) -> None:
    for v in ("ZYGOTE_SOCKET", "ZYGOTE_URL", "ZYGOTE_TOKEN"):
        monkeypatch.delenv(v, raising=False)
    assert resolve().socket == "/run/zygote/zygote.sock"
    monkeypatch.setenv("ZYGOTE_SOCKET", "/tmp/s.sock")
    assert resolve().socket == "/tmp/s.sock"
    monkeypatch.setenv("ZYGOTE_URL", "http://127.0.0.1:8889/")
    monkeypatch.setenv("ZYGOTE_TOKEN", "tok")
    ep = resolve()
    assert (ep.url, ep.token, ep.socket) == ("http://127.0.0.1:8889", "tok", None)
    assert ep.headers() == {"Authorization": "Bearer tok"}
    # Arguments beat the environment.
    assert resolve(socket="/x.sock").socket == "/x.sock"
    assert resolve(socket="/x.sock").headers() == {}
    assert resolve(url="http://h:1", token="t2").token == "t2"
    with pytest.raises(ConfigError, match="not both"):
        resolve(socket="/x", url="http://h:1")
    with pytest.raises(ConfigError, match="needs a host and a port"):
        resolve(url="http://h")
    with pytest.raises(ConfigError, match="request_timeout"):
        resolve(socket="/x", request_timeout=0)


def test_api_error_classes() -> None:
    e = api_error(404, json.dumps({"error": "no sandbox with id `x`"}).encode())
    assert isinstance(e, NotFoundError) and e.status == 404
    assert e.message == "no sandbox with id `x`" and "HTTP 404" in str(e)
    assert isinstance(api_error(400, b'{"error": "bad"}'), BadRequestError)
    assert isinstance(api_error(503, b'{"error": "dead"}'), UnavailableError)
    assert isinstance(api_error(502, b"gateway"), ServerError)
    other = api_error(418, b"")
    assert type(other) is ApiError and other.message == "I'm a teapot"
    assert api_error(500, b"plain text").message == "plain text"


def test_request_validation() -> None:
    with pytest.raises(ConfigError, match="empty"):
        exec_call("id", "  ", None, None, None, None, False)
    with pytest.raises(ConfigError, match="timeout"):
        exec_call("id", "true", None, None, -1, None, False)
    with pytest.raises(ConfigError, match="env"):
        exec_call("id", "true", {"A": 1}, None, None, None, False)  # type: ignore[dict-item]
    c = exec_call("a/b", ["ls", "-l"], {"A": "1"}, "/tmp", 2, b"\x00", True)
    assert c.path == "/v1/sandboxes/a%2Fb/exec/stream"
    assert c.json == {
        "argv": ["ls", "-l"],
        "env": {"A": "1"},
        "cwd": "/tmp",
        "stdin_b64": "AA==",
        "timeout_secs": 2.0,
    }
    w = write_file("id", "/a b", "x", 0o755)
    assert w.params == {"path": "/a b", "mode": "755"} and w.content == b"x"
    with pytest.raises(ConfigError, match="mode"):
        write_file("id", "/a", b"", 0o17777)


def _line(**ev: object) -> str:
    return json.dumps(ev)


def test_exec_stream_decoder() -> None:
    d = ExecStream()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    assert d.feed(_line(type="started", pid=7)) == [] and d.pid == 7
    assert d.feed(_line(type="stdout", data_b64=b64(b"a\xc3"))) == [("stdout", "a")]
    assert d.feed(_line(type="stdout", data_b64=b64(b"\xa9\n"))) == [("stdout", "\u00e9\n")]
    assert d.feed(_line(type="stderr", data_b64=b64(b"e\xe2\x82"))) == [("stderr", "e")]
    # The exit flushes the undecodable tail as a replacement character.
    out = d.feed(_line(type="exit", exit_code=2, signal=None, timed_out=False, duration_ms=5.0))
    assert out == [("stderr", "\ufffd")]
    r = d.finish()
    assert r == CommandResult("a\u00e9\n", "e\ufffd", 2, None, False, 5.0)
    with pytest.raises(CommandExitError, match="exited with 2"):
        raise CommandExitError(r)
    d = ExecStream()
    with pytest.raises(SandboxError, match="agent went away"):
        d.feed(_line(type="error", error="agent went away"))
    # An error event with a status raises that status's class, as outside a stream.
    with pytest.raises(NotFoundError) as ei:
        ExecStream().feed(_line(type="error", error="no such program", status=404))
    assert ei.value.status == 404 and ei.value.message == "no such program"
    with pytest.raises(UnavailableError):
        ExecStream().feed(_line(type="error", error="stopping", status=503))
    # A terminal's output stays bytes.
    p = ExecStream(pty=True, keep=False)
    assert p.feed(_line(type="stdout", data_b64=b64(b"\x1b[0m\xc3"))) == [("pty", b"\x1b[0m\xc3")]
    with pytest.raises(SandboxError, match="without an exit status"):
        ExecStream().finish()
