"""The v1 REST calls of background processes, terminals and directory trees,
independent of sync or async transport (see :mod:`zygote._api`)."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from ._api import Call, _guest_path, command_body, files_call, process_timeout, seg
from ._errors import ConfigError
from ._models import PtySize

SIGKILL = 9

PTY_ENV = {"TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
"""What a terminal's environment gets unless the caller sets it (as E2B's)."""
PTY_SHELL = ["/bin/bash", "-i", "-l"]
"""What ``pty.create`` runs unless given ``cmd``: an interactive login shell."""


def _procs(sandbox_id: str, sub: str = "") -> str:
    return f"/v1/sandboxes/{seg(sandbox_id, 'sandbox id')}/processes{sub}"


def _pid(pid: int) -> int:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ConfigError(f"pid={pid!r} is not a process id: take it from a handle's .pid")
    return pid


def pty_size(size: PtySize | tuple[int, int] | Mapping[str, int]) -> dict[str, int]:
    """``{"rows", "cols"}`` from a :class:`PtySize`, ``(rows, cols)`` or a mapping."""
    if isinstance(size, PtySize):
        rows, cols = size.rows, size.cols
    elif isinstance(size, Mapping):
        rows, cols = size.get("rows"), size.get("cols")
    elif isinstance(size, tuple) and len(size) == 2:
        rows, cols = size
    else:
        raise ConfigError(f"size={size!r}: pass PtySize(rows=24, cols=80)")
    for what, v in (("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1000:
            raise ConfigError(f"terminal {what}={v!r} is out of range: pass 1-1000")
    return {"rows": rows, "cols": cols}


def start_process(
    sandbox_id: str,
    cmd: str | Sequence[str],
    envs: Mapping[str, str] | None,
    cwd: str | None,
    user: str | None,
    stdin: bool,
    timeout: float | None,
    pty: PtySize | None = None,
    tag: str | None = None,
) -> Call:
    """``POST /v1/sandboxes/{id}/processes``: a background process or a terminal."""
    body: dict[str, Any] = command_body(cmd, envs, cwd, user)
    body["stdin"] = bool(stdin)
    if (t := process_timeout(timeout)) is not None:
        body["timeout_secs"] = t
    if pty is not None:
        body["pty"] = pty_size(pty)
    if tag is not None:
        body["tag"] = tag
    return Call("POST", _procs(sandbox_id), json=body)


def list_processes(sandbox_id: str) -> Call:
    """``GET /v1/sandboxes/{id}/processes``."""
    return Call("GET", _procs(sandbox_id))


def process_output(sandbox_id: str, pid: int, replay: bool) -> Call:
    """``GET .../processes/{pid}/output``: NDJSON ``ExecEvent`` lines, for as
    long as the process runs (no read limit)."""
    c = Call(
        "GET",
        _procs(sandbox_id, f"/{_pid(pid)}/output"),
        params={"replay": "true" if replay else "false"},
    )
    c.timeout = None
    return c


def process_stdin(sandbox_id: str, pid: int, data: str | bytes, eof: bool) -> Call:
    """``POST .../processes/{pid}/stdin[?eof=true]`` with the raw bytes."""
    if isinstance(data, str):
        content = data.encode()
    elif isinstance(data, (bytes, bytearray, memoryview)):
        content = bytes(data)
    else:
        raise ConfigError(f"data must be str or bytes, got {type(data).__name__}")
    c = Call(
        "POST",
        _procs(sandbox_id, f"/{_pid(pid)}/stdin"),
        params={"eof": "true" if eof else "false"},
        content=content,
    )
    c.headers["Content-Type"] = "application/octet-stream"
    return c


def process_signal(sandbox_id: str, pid: int, signal: int) -> Call:
    """``POST .../processes/{pid}/signal`` (SIGKILL: ``DELETE .../processes/{pid}``)."""
    if isinstance(signal, bool) or not isinstance(signal, int) or not 1 <= signal <= 64:
        raise ConfigError(f"signal={signal!r} is not a signal number: pass e.g. 15 (SIGTERM)")
    if signal == SIGKILL:
        return Call("DELETE", _procs(sandbox_id, f"/{_pid(pid)}"))
    return Call("POST", _procs(sandbox_id, f"/{_pid(pid)}/signal"), json={"signal": signal})


def process_resize(sandbox_id: str, pid: int, size: PtySize) -> Call:
    """``POST .../processes/{pid}/resize``."""
    return Call("POST", _procs(sandbox_id, f"/{_pid(pid)}/resize"), json=pty_size(size))


def pty_env(envs: Mapping[str, str] | None) -> dict[str, str]:
    """A terminal's environment: the caller's over :data:`PTY_ENV`."""
    return {**PTY_ENV, **(envs or {})}


def make_dir(sandbox_id: str, path: str, parents: bool) -> Call:
    """``POST .../files/mkdir?path=&parents=``."""
    return files_call("POST", sandbox_id, path, "/mkdir", parents="true" if parents else "false")


def rename(sandbox_id: str, old_path: str, new_path: str) -> Call:
    """``POST .../files/rename``."""
    body = {"from": _guest_path(old_path), "to": _guest_path(new_path)}
    return Call("POST", f"/v1/sandboxes/{seg(sandbox_id, 'sandbox id')}/files/rename", json=body)


def walk(sandbox_id: str, path: str, depth: int | None) -> Call:
    """``GET .../files/walk?path=&depth=``."""
    d = 1 if depth is None else depth
    if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 32:
        raise ConfigError(f"depth={depth!r} is out of range: pass 1-32 (1: the entries only)")
    return files_call("GET", sandbox_id, path, "/walk", depth=str(d))


def watch(sandbox_id: str, path: str, recursive: bool) -> Call:
    """``GET .../files/watch?path=&recursive=``: NDJSON ``FsEvent`` lines, no read limit."""
    c = files_call("GET", sandbox_id, path, "/watch", recursive="true" if recursive else "false")
    c.timeout = None
    return c


def _file_bytes(data: Any, path: str) -> bytes:
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if hasattr(data, "read"):
        b = data.read()
        if isinstance(b, str):
            return b.encode()
        if isinstance(b, (bytes, bytearray)):
            return bytes(b)
    raise ConfigError(
        f"data of {path!r} must be str, bytes or a file object, got {type(data).__name__}"
    )


def batch(sandbox_id: str, files: Sequence[Mapping[str, Any]]) -> Call:
    """``POST .../files/batch``: several files in one call (each whole, in order)."""
    if isinstance(files, (str, bytes)) or not isinstance(files, Sequence):
        raise ConfigError("files must be a list of {'path': ..., 'data': ...} entries")
    out = []
    for f in files:
        if not isinstance(f, Mapping) or "path" not in f or "data" not in f:
            raise ConfigError(f"{f!r} is not a file entry: pass {{'path': ..., 'data': ...}}")
        path = _guest_path(f["path"])
        entry: dict[str, Any] = {
            "path": path,
            "data_b64": base64.b64encode(_file_bytes(f["data"], path)).decode(),
        }
        mode = f.get("mode")
        if mode is not None:
            if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
                raise ConfigError(f"mode={mode!r} of {path!r} must be permission bits, e.g. 0o644")
            entry["mode"] = format(mode, "o")
        out.append(entry)
    c = Call("POST", f"/v1/sandboxes/{seg(sandbox_id, 'sandbox id')}/files/batch")
    c.json = {"files": out}
    c.timeout = None
    return c
