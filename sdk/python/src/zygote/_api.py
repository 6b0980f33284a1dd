"""The v1 REST calls, independent of sync or async transport.

Each function validates its arguments and returns a :class:`Call` (method, path,
query, body); the sync and async clients send it and parse the answer with the
same helpers, so both behave identically.
"""

from __future__ import annotations

import base64
import codecs
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ._errors import ConfigError, ProtocolError, SandboxError, error_for_status
from ._models import CommandResult

EXEC_TIMEOUT_SLACK = 30.0
"""Seconds the HTTP read may take beyond a command's own timeout."""

UseDefault = object()
"""Sentinel: the endpoint's default request timeout."""


@dataclass(slots=True)
class Call:
    """One HTTP request to the daemon."""

    method: str
    path: str
    params: dict[str, str] | None = None
    json: Any = None
    content: bytes | Iterable[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout: Any = UseDefault
    """``UseDefault``, a number of seconds, or ``None`` for no read limit."""


def seg(value: str, what: str) -> str:
    """A path segment (sandbox id, snapshot tag), percent-encoded."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def _env(env: Mapping[str, str] | None, what: str) -> dict[str, str]:
    if env is None:
        return {}
    out = {}
    for k, v in env.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ConfigError(f"{what}: keys and values must be strings, got {k!r}: {v!r}")
        out[k] = v
    return out


def _positive_int(v: int | None, what: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"{what}={v!r} must be a positive integer")
    return v


def _seconds(v: float | None, what: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or math.isinf(v):
        raise ConfigError(f"{what}={v!r} must be a positive number of seconds")
    return float(v)


def labels(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Labels: a string-to-string map (the daemon checks the key syntax)."""
    return _env(metadata, "metadata")


def _lifetime(body: dict[str, Any], timeout: float | None, on_expiry: str | None) -> None:
    """``timeout_secs`` (whole seconds, rounded up) and ``on_expiry`` into ``body``."""
    if (t := _seconds(timeout, "timeout")) is not None:
        body["timeout_secs"] = max(1, math.ceil(t))
    if on_expiry is not None:
        body["on_expiry"] = expiry(on_expiry)


def expiry(on_expiry: str) -> str:
    """A checked ``on_expiry``."""
    if on_expiry not in ("kill", "pause"):
        raise ConfigError(f"on_expiry={on_expiry!r}: pass 'kill' (remove it) or 'pause'")
    return on_expiry


def _mode(mode: str | None) -> str | None:
    if mode is None:
        return None
    if mode not in ("copy", "live"):
        raise ConfigError(f"mode={mode!r} is not a branch mode: pass 'copy' or 'live'")
    return mode


@dataclass(slots=True)
class Life:
    """A sandbox's lifetime and labels, as create, spawn and fork take them."""

    timeout: float | None = None
    on_expiry: str | None = None
    metadata: Mapping[str, str] | None = None
    network: dict[str, Any] | None = None
    volumes: list[dict[str, Any]] | None = None

    def into(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add ``timeout_secs``, ``on_expiry``, ``metadata``, ``network`` and
        ``volumes`` to ``body``."""
        _lifetime(body, self.timeout, self.on_expiry)
        if self.metadata is not None:
            body["metadata"] = labels(self.metadata)
        if self.network is not None:
            body["network"] = self.network
        if self.volumes:
            body["volumes"] = self.volumes
        return body


def volume_mounts(volumes: Any) -> list[dict[str, Any]] | None:
    """``volumes=[{"name": "data", "path": "/data", "read_only": False}, ...]``
    (or ``host_path`` instead of ``name``) as the API takes it."""
    if volumes is None:
        return None
    if isinstance(volumes, (str, bytes)) or not all(isinstance(v, Mapping) for v in volumes):
        raise ConfigError(
            f"volumes={volumes!r}: pass a list of dicts such as [{{'name': 'data', 'path': '/data'}}]"
        )
    out = []
    for v in volumes:
        unknown = set(v) - {"name", "host_path", "path", "read_only"}
        if unknown:
            raise ConfigError(
                f"volume {dict(v)!r}: unknown key(s) {sorted(unknown)}; use name or host_path, path, read_only"
            )
        if "path" not in v or ("name" in v) == ("host_path" in v):
            raise ConfigError(
                f"volume {dict(v)!r}: give a path and exactly one of name and host_path"
            )
        out.append(dict(v))
    return out


def _cidrs(v: Any, what: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str) or not all(isinstance(c, str) for c in v):
        raise ConfigError(f"{what}={v!r}: pass a list of IPv4 CIDR strings, e.g. ['198.18.0.0/15']")
    return list(v)


def network_body(
    network: Mapping[str, Any] | None, allow_internet_access: bool | None
) -> dict[str, Any] | None:
    """The ``network`` of a create or spawn body from E2B's arguments:
    ``allow_internet_access`` and ``network={"allow_out": [...], "deny_out": [...]}``
    (``{"enabled": False}`` for no network card at all)."""
    if network is None and allow_internet_access is None:
        return None
    n = dict(network or {})
    unknown = set(n) - {"allow_out", "deny_out", "internet", "enabled"}
    if unknown:
        raise ConfigError(
            f"network={network!r}: unknown key(s) {sorted(unknown)}; use allow_out, deny_out, internet or enabled"
        )
    body: dict[str, Any] = {}
    if n.get("enabled") is False:
        if allow_internet_access is not None or len(n) > 1:
            raise ConfigError("network={'enabled': False} leaves nothing for other network options to apply to")
        return {"enabled": False}
    internet = n.get("internet", allow_internet_access)
    if internet is not None:
        body["internet"] = bool(internet)
    if allow := _cidrs(n.get("allow_out"), "allow_out"):
        body["allow_out"] = allow
    if deny := _cidrs(n.get("deny_out"), "deny_out"):
        body["deny_out"] = deny
    return body


def set_network(
    sandbox_id: str, internet: bool, allow_out: Any, deny_out: Any
) -> Call:
    """``PATCH /v1/sandboxes/{id}/network``: replace the egress policy."""
    body = {
        "internet": bool(internet),
        "allow_out": _cidrs(allow_out, "allow_out"),
        "deny_out": _cidrs(deny_out, "deny_out"),
    }
    return sandbox_call("PATCH", sandbox_id, "/network", body)


def expose_port(sandbox_id: str, port: int) -> Call:
    """``POST /v1/sandboxes/{id}/ports``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"port={port!r}: pass a guest TCP port from 1 to 65535")
    return sandbox_call("POST", sandbox_id, "/ports", {"port": port})


def create_sandbox(
    image: str | None,
    memory_mib: int | None,
    vcpus: int | None,
    env: Mapping[str, str] | None,
    life: Life,
) -> Call:
    """``POST /v1/sandboxes`` (boot from an image)."""
    body: dict[str, Any] = {"env": _env(env, "env")}
    if image is not None:
        body["image"] = image
    if (m := _positive_int(memory_mib, "memory_mib")) is not None:
        body["memory_mib"] = m
    if (c := _positive_int(vcpus, "vcpus")) is not None:
        body["vcpus"] = c
    return Call("POST", "/v1/sandboxes", json=life.into(body))


def list_sandboxes(
    metadata: Mapping[str, str] | None,
    state: str | None,
    limit: int | None,
    next_token: str | None,
) -> Call:
    """``GET /v1/sandboxes?metadata.K=V&state=&limit=&next_token=``."""
    q = {f"metadata.{k}": v for k, v in labels(metadata).items()}
    if state is not None:
        if not isinstance(state, str):
            raise ConfigError(
                f"state={state!r}: pass one state, e.g. 'running' or 'paused' (list twice for two)"
            )
        q["state"] = state
    if (n := _positive_int(limit, "limit")) is not None:
        q["limit"] = str(n)
    if next_token is not None:
        q["next_token"] = next_token
    return Call("GET", "/v1/sandboxes", params=q or None)


def sandbox_call(method: str, sandbox_id: str, sub: str = "", json: Any = None) -> Call:
    """``/v1/sandboxes/{id}[/sub]``."""
    return Call(method, f"/v1/sandboxes/{seg(sandbox_id, 'sandbox id')}{sub}", json=json)


def set_timeout(sandbox_id: str, timeout: float, on_expiry: str | None) -> Call:
    """``POST /v1/sandboxes/{id}/timeout``: a new lifetime from now."""
    body: dict[str, Any] = {}
    if timeout is None:
        raise ConfigError("timeout=None: pass the seconds from now the sandbox may live")
    _lifetime(body, timeout, on_expiry)
    return sandbox_call("POST", sandbox_id, "/timeout", body)


def spawn(
    snapshot: str,
    n: int,
    memory_mib: int | None,
    vcpus: int | None,
    env: Mapping[str, str] | None,
    private_memory: bool,
    hugepages: bool,
    life: Life,
) -> Call:
    """``POST /v1/snapshots/{tag}/spawn`` (children of a snapshot)."""
    if not isinstance(snapshot, str) or not snapshot:
        raise ConfigError(f"snapshot must be a non-empty tag, got {snapshot!r}")
    body: dict[str, Any] = {
        "n": _positive_int(n, "n"),
        "private_memory": bool(private_memory),
        "hugepages": bool(hugepages),
        "env": _env(env, "env"),
    }
    if (m := _positive_int(memory_mib, "memory_mib")) is not None:
        body["memory_mib"] = m
    if (c := _positive_int(vcpus, "vcpus")) is not None:
        body["vcpus"] = c
    life.into(body)
    return Call("POST", f"/v1/snapshots/{seg(snapshot, 'snapshot')}/spawn", json=body)


def exec_call(
    sandbox_id: str,
    cmd: str | Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    timeout: float | None,
    stdin: str | bytes | None,
    stream: bool,
    user: str | None = None,
) -> Call:
    """``POST /v1/sandboxes/{id}/exec`` or ``/exec/stream``."""
    body = command_body(cmd, env, cwd, user)
    if isinstance(stdin, str):
        body["stdin"] = stdin
    elif isinstance(stdin, (bytes, bytearray, memoryview)):
        body["stdin_b64"] = base64.b64encode(bytes(stdin)).decode()
    elif stdin is not None:
        raise ConfigError(f"stdin must be str or bytes, got {type(stdin).__name__}")
    t = _seconds(timeout, "timeout")
    if t is not None:
        body["timeout_secs"] = t
    # A command may run as long as it likes unless it has a timeout.
    read_timeout = None if t is None else t + EXEC_TIMEOUT_SLACK
    suffix = "/exec/stream" if stream else "/exec"
    return Call(
        "POST",
        f"/v1/sandboxes/{seg(sandbox_id, 'sandbox id')}{suffix}",
        json=body,
        timeout=read_timeout,
    )


def command_body(
    cmd: str | Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    user: str | None,
) -> dict[str, Any]:
    """``cmd``/``argv``, ``env``, ``cwd`` and ``user`` of an exec or a process."""
    body: dict[str, Any] = {"env": _env(env, "envs")}
    if isinstance(cmd, str):
        if not cmd.strip():
            raise ConfigError("cmd is empty: pass a shell command line or a list of arguments")
        body["cmd"] = cmd
    else:
        argv = list(cmd)
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ConfigError(f"cmd={cmd!r}: an argument list must be non-empty strings")
        body["argv"] = argv
    if cwd is not None:
        body["cwd"] = cwd
    if user is not None:
        if not isinstance(user, str) or not user:
            raise ConfigError(f"user={user!r}: pass a guest user name, e.g. 'nobody'")
        body["user"] = user
    return body


def process_timeout(timeout: float | None) -> float | None:
    """A checked background-process ``timeout`` (seconds)."""
    return _seconds(timeout, "timeout")


def branch(
    sandbox_id: str,
    tag: str | None,
    mode: str | None,
    hugepages: bool,
    wait: bool,
    downtime_limit_ms: int | None,
) -> Call:
    """``POST /v1/sandboxes/{id}/branch``."""
    body: dict[str, Any] = {"hugepages": bool(hugepages), "wait": bool(wait)}
    if tag is not None:
        body["tag"] = tag
    if (m := _mode(mode)) is not None:
        body["mode"] = m
    if (d := _positive_int(downtime_limit_ms, "downtime_limit_ms")) is not None:
        body["downtime_limit_ms"] = d
    return Call("POST", f"/v1/sandboxes/{seg(sandbox_id, 'sandbox id')}/branch", json=body)


def fork(
    sandbox_id: str,
    n: int,
    mode: str | None,
    tag: str | None,
    private_memory: bool,
    hugepages: bool,
    life: Life,
) -> Call:
    """``POST /v1/sandboxes/{id}/fork``."""
    body: dict[str, Any] = {
        "n": _positive_int(n, "n"),
        "private_memory": bool(private_memory),
        "hugepages": bool(hugepages),
    }
    if (m := _mode(mode)) is not None:
        body["mode"] = m
    if tag is not None:
        body["tag"] = tag
    life.into(body)
    return Call("POST", f"/v1/sandboxes/{seg(sandbox_id, 'sandbox id')}/fork", json=body)


@dataclass(slots=True)
class Warmup:
    """How a snapshot warms up: Python in its interpreter, a shell command left
    running (a server), and what says it is ready (a command or a port)."""

    warmup: str | None = None
    warmup_cmd: str | None = None
    ready_cmd: str | None = None
    ready_port: int | None = None
    ready_timeout: float | None = None

    def into(self, body: dict[str, Any]) -> None:
        """Add the warm-up fields to a ``CreateSnapshot`` body."""
        for k in ("warmup", "warmup_cmd", "ready_cmd"):
            v = getattr(self, k)
            if v is not None:
                if not isinstance(v, str) or not v.strip():
                    raise ConfigError(f"{k}={v!r} must be a non-empty string")
                body[k] = v
        if self.ready_cmd is not None and self.ready_port is not None:
            raise ConfigError("pass ready_cmd= or ready_port=, not both: one readiness check")
        if self.ready_port is not None:
            p = self.ready_port
            if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 65535:
                raise ConfigError(f"ready_port={p!r} is not a TCP port: pass 1-65535")
            body["ready_port"] = p
        if (t := _seconds(self.ready_timeout, "ready_timeout")) is not None:
            body["ready_timeout_secs"] = max(1, math.ceil(t))


def create_snapshot(
    tag: str,
    image: str | None,
    warm: Warmup,
    memory_mib: int | None,
    vcpus: int | None,
    hugepages: bool,
) -> Call:
    """``POST /v1/snapshots`` (boot, warm up, snapshot, remove the booted sandbox)."""
    if not isinstance(tag, str) or not tag:
        raise ConfigError(f"tag must be a non-empty string, got {tag!r}")
    body: dict[str, Any] = {"tag": tag, "hugepages": bool(hugepages)}
    if image is not None:
        body["image"] = image
    warm.into(body)
    if (m := _positive_int(memory_mib, "memory_mib")) is not None:
        body["memory_mib"] = m
    if (c := _positive_int(vcpus, "vcpus")) is not None:
        body["vcpus"] = c
    return Call("POST", "/v1/snapshots", json=body)


def _guest_path(path: str) -> str:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"path must be a non-empty guest path, got {path!r}")
    return path


def files_call(method: str, sandbox_id: str, path: str, sub: str = "", **params: str) -> Call:
    """``/v1/sandboxes/{id}/files[/sub]?path=...``."""
    q = {"path": _guest_path(path), **params}
    return Call(method, f"/v1/sandboxes/{seg(sandbox_id, 'sandbox id')}/files{sub}", params=q)


def write_file(sandbox_id: str, path: str, data: Any, mode: int | None) -> Call:
    """``PUT /v1/sandboxes/{id}/files?path=`` with a raw body."""
    params = {}
    if mode is not None:
        if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise ConfigError(f"mode={mode!r} must be permission bits, e.g. 0o644")
        params["mode"] = format(mode, "o")
    if isinstance(data, str):
        content: Any = data.encode()
    elif isinstance(data, (bytes, bytearray, memoryview)):
        content = bytes(data)
    elif hasattr(data, "read"):
        content = _chunks(data)
    elif isinstance(data, Iterable):
        content = data
    else:
        raise ConfigError(
            f"data must be str, bytes, a binary file object or an iterable of bytes, "
            f"got {type(data).__name__}"
        )
    c = files_call("PUT", sandbox_id, path, **params)
    c.content = content
    c.headers["Content-Type"] = "application/octet-stream"
    c.timeout = None  # large files stream for as long as they need
    return c


def _chunks(f: Any, size: int = 256 * 1024) -> Iterable[bytes]:
    while True:
        b = f.read(size)
        if not b:
            return
        if isinstance(b, str):
            raise ConfigError("the file object must be opened in binary mode ('rb')")
        yield b


class ExecStream:
    """Decoder of an NDJSON stream of ``ExecEvent`` lines (an exec's, or a
    followed background process's).

    ``feed`` takes one line and returns the decoded output chunks
    (``("stdout", text)`` / ``("stderr", text)``, or ``("pty", bytes)`` for a
    terminal's output when ``pty``); after the ``exit`` event ``result`` holds
    the :class:`CommandResult` (with the whole output when ``keep``). Text is
    decoded incrementally so a multi-byte character split across chunks is not
    mangled. An ``error`` event raises the :class:`ApiError` subclass of its
    ``status`` (as the same failure outside a stream), else :class:`SandboxError`.
    """

    def __init__(self, *, pty: bool = False, keep: bool = True) -> None:
        self.result: CommandResult | None = None
        self.pid: int | None = None
        self._pty = pty
        self._keep = keep
        self._out = bytearray()
        self._err = bytearray()
        self._dec = {
            "stdout": codecs.getincrementaldecoder("utf-8")("replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")("replace"),
        }

    def feed(self, line: str | bytes) -> list[tuple[str, Any]]:
        """Decode one line of the stream."""
        if self.result is not None or not line.strip():
            return []
        try:
            ev = json.loads(line)
            kind = ev["type"]
        except (ValueError, KeyError, TypeError) as e:
            raise ProtocolError(f"bad exec stream line {line!r}: {e}") from None
        if kind == "started":
            self.pid = ev.get("pid")
            return []
        if kind in ("stdout", "stderr"):
            data = base64.b64decode(ev.get("data_b64", ""))
            if self._keep:
                (self._out if kind == "stdout" else self._err).extend(data)
            if self._pty and kind == "stdout":
                return [("pty", data)] if data else []
            text = self._dec[kind].decode(data)
            return [(kind, text)] if text else []
        if kind == "exit":
            self.result = CommandResult(
                stdout=self._out.decode("utf-8", "replace"),
                stderr=self._err.decode("utf-8", "replace"),
                exit_code=ev.get("exit_code"),
                signal=ev.get("signal"),
                timed_out=bool(ev.get("timed_out", False)),
                duration_ms=float(ev.get("duration_ms", 0.0)),
            )
            return self._flush()
        if kind == "error":
            raise stream_error(ev, "the command failed in the sandbox")
        return []  # an event type this SDK does not know yet

    def _flush(self) -> list[tuple[str, Any]]:
        """Text still held by the incremental decoders (an incomplete character)."""
        out: list[tuple[str, Any]] = []
        for kind, dec in self._dec.items():
            t = dec.decode(b"", final=True)
            if t:
                out.append((kind, t))
        return out

    def finish(self) -> CommandResult:
        """The result, or an error when the stream ended without an exit event."""
        if self.result is None:
            raise SandboxError("the exec stream ended without an exit status")
        return self.result


def stream_error(ev: dict[str, Any], what: str) -> Exception:
    """The exception for an ``error`` event (or line) of a stream: the
    :class:`ApiError` subclass of its ``status``, else :class:`SandboxError`."""
    msg = ev.get("error", ev)
    status = ev.get("status")
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        return error_for_status(status, str(msg))
    return SandboxError(f"{what}: {msg}")
