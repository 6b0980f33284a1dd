# Generated from _async.py by sdk/python/scripts/unasync.py: edit _async.py, then run it.
"""The synchronous API: :class:`Sandbox`, its ``commands`` and ``files``,
and :class:`Snapshot`."""

from __future__ import annotations

import builtins
import contextlib
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, BinaryIO, Literal, overload

from . import _api
from ._config import DEFAULT_REQUEST_TIMEOUT, Endpoint, resolve
from ._errors import (
    CommandExitError,
    ConfigError,
    NotFoundError,
    SandboxError,
    TransportError,
    ZygoteError,
)
from ._models import (
    CommandResult,
    EntryInfo,
    EvalResult,
    FileStat,
    ImageInfo,
    SandboxInfo,
    SnapshotInfo,
    WriteInfo,
    entries_from_json,
    write_info_from_json,
)
from ._transport import SyncTransport

OutputCallback = Callable[[str], Any]
"""Called with each decoded chunk of output as it arrives."""


def _endpoint(
    socket: str | os.PathLike[str] | None,
    url: str | None,
    token: str | None,
    request_timeout: float | None,
) -> Endpoint:
    return resolve(socket=socket, url=url, token=token, request_timeout=request_timeout)


def _children(
    transport: SyncTransport,
    results: Any,
    endpoint: Endpoint,
) -> builtins.list[Sandbox]:
    """Sandboxes from a list of ``SpawnResult``; on any failure kill the others and raise."""
    ok, errors = [], []
    for r in results or []:
        if r.get("sandbox"):
            ok.append(SandboxInfo.from_json(r["sandbox"]))
        else:
            errors.append(r.get("error") or "unknown error")
    if errors or not ok:
        for info in ok:
            try:
                transport.send(
                    _api.Call("DELETE", f"/v1/sandboxes/{_api.seg(info.id, 'id')}"),
                )
            except NotFoundError:
                pass
        raise SandboxError(
            f"{len(errors)} of {len(ok) + len(errors)} children did not start "
            f"(the others were removed): " + "; ".join(errors)
        )
    return [Sandbox(info, SyncTransport(endpoint)) for info in ok]


def _spawn(
    ep: Endpoint,
    tag: str,
    n: int,
    memory_mib: int | None,
    vcpus: int | None,
    env: Mapping[str, str] | None,
    private_memory: bool,
    hugepages: bool,
) -> builtins.list[Sandbox]:
    t = SyncTransport(ep)
    try:
        call = _api.spawn(tag, n, memory_mib, vcpus, env, private_memory, hugepages)
        return _children(t, t.json(call), ep)
    finally:
        t.close()


class Commands:
    """``sandbox.commands``: run processes in the guest."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        stdin: str | bytes | None = None,
        on_stdout: OutputCallback | None = None,
        on_stderr: OutputCallback | None = None,
        check: bool = False,
    ) -> CommandResult:
        """Run a command and wait for it to end.

        Args:
            cmd: A shell command line (run with ``/bin/sh -c``) or an argument list
                (run directly, no shell).
            env: Extra environment variables for this command.
            cwd: Working directory in the guest.
            timeout: Seconds after which the command's process group is killed;
                the result then has ``timed_out=True``. ``None``: no limit.
            stdin: Text or bytes fed to the command's stdin (then closed).
            on_stdout: Called with each chunk of stdout as it arrives (uses the
                streaming endpoint).
            on_stderr: Called with each chunk of stderr as it arrives.
            check: Raise :class:`CommandExitError` unless the exit code is 0.

        Returns:
            The :class:`CommandResult` with the whole ``stdout``, ``stderr`` and
            ``exit_code`` (also when callbacks were given).

        Raises:
            NotFoundError: The sandbox is gone.
            BadRequestError: The daemon rejected an argument (e.g. a relative ``cwd``).
        """
        stream = on_stdout is not None or on_stderr is not None
        call = _api.exec_call(self._sb.id, cmd, env, cwd, timeout, stdin, stream)
        t = self._sb._transport
        if not stream:
            result = CommandResult.from_json(t.json(call))
        else:
            dec = _api.ExecStream()
            with t.stream(call) as resp:
                for line in resp.iter_lines():
                    for kind, text in dec.feed(line):
                        cb = on_stdout if kind == "stdout" else on_stderr
                        if cb is not None:
                            cb(text)
                    if dec.result is not None:
                        break
            result = dec.finish()
        if check and result.exit_code != 0:
            raise CommandExitError(result)
        return result


class Files:
    """``sandbox.files``: the guest's filesystem. Paths are absolute guest paths."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sb = sandbox

    def write(self, path: str, data: Any, *, mode: int | None = None) -> WriteInfo:
        """Write a file (created or replaced atomically; parent directories are created).

        Args:
            path: Absolute guest path.
            data: ``str`` (written as UTF-8), ``bytes``, a binary file object, or
                an iterable of ``bytes`` chunks (streamed).
            mode: Permission bits, e.g. ``0o755``.
        """
        call = _api.write_file(self._sb.id, path, data, mode)
        return write_info_from_json(self._sb._transport.json(call))

    @overload
    def read(self, path: str, *, format: Literal["text"] = "text") -> str: ...
    @overload
    def read(self, path: str, *, format: Literal["bytes"]) -> bytes: ...

    def read(self, path: str, *, format: Literal["text", "bytes"] = "text") -> str | bytes:
        """Read a whole file.

        Args:
            path: Absolute guest path.
            format: ``"text"`` (decoded as UTF-8, invalid bytes replaced) or
                ``"bytes"`` (exactly the file's bytes).

        Raises:
            NotFoundError: No such file.
        """
        if format not in ("text", "bytes"):
            raise ConfigError(f"format={format!r}: pass 'text' or 'bytes'")
        call = _api.files_call("GET", self._sb.id, path)
        call.timeout = None
        resp = self._sb._transport.send(call)
        data = resp.content
        return data if format == "bytes" else data.decode("utf-8", "replace")

    def download(self, path: str, dest: str | os.PathLike[str] | BinaryIO) -> int:
        """Stream a guest file into a local file (a path, created or truncated, or a
        binary file object) without holding it in memory; returns the bytes written.

        Raises:
            NotFoundError: No such guest file.
            TransportError: The download ended early.
        """
        call = _api.files_call("GET", self._sb.id, path)
        call.timeout = None
        n = 0
        with self._sb._transport.stream(call) as resp:
            expected = resp.headers.get("content-length")
            with contextlib.ExitStack() as stack:
                out: BinaryIO = (
                    stack.enter_context(open(dest, "wb"))
                    if isinstance(dest, (str, os.PathLike))
                    else dest
                )
                for chunk in resp.iter_bytes():
                    out.write(chunk)
                    n += len(chunk)
        if expected is not None and int(expected) != n:
            raise TransportError(f"download of {path} ended after {n} of {expected} bytes")
        return n

    def upload(
        self, local: str | os.PathLike[str], path: str, *, mode: int | None = None
    ) -> WriteInfo:
        """Stream a local file into the guest (its permission bits too, unless ``mode``)."""
        with open(local, "rb") as f:
            if mode is None:
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            return self.write(path, f, mode=mode)

    def list(self, path: str) -> builtins.list[EntryInfo]:
        """List a directory (sorted by name)."""
        call = _api.files_call("GET", self._sb.id, path, "/list")
        return entries_from_json(self._sb._transport.json(call))

    def stat(self, path: str) -> FileStat:
        """Size, mode, kind and mtime of a path."""
        call = _api.files_call("GET", self._sb.id, path, "/stat")
        return FileStat.from_json(self._sb._transport.json(call))

    def exists(self, path: str) -> bool:
        """Whether a path exists."""
        try:
            self.stat(path)
        except NotFoundError:
            return False
        return True

    def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, or a directory (``recursive=True`` for a non-empty one)."""
        call = _api.files_call(
            "DELETE", self._sb.id, path, recursive="true" if recursive else "false"
        )
        self._sb._transport.send(call)


class Sandbox:
    """A running sandbox: a Linux microVM with a warm Python interpreter.

    Create one with :meth:`create` (or reattach with :meth:`connect`); use it as a
    context manager to have it removed at the end::

        with Sandbox.create() as sb:
            r = sb.commands.run("uname -r")
            print(r.stdout)

    Attributes:
        id: The sandbox id.
        info: The :class:`SandboxInfo` as last fetched (see :meth:`get_info`).
        commands: :class:`Commands` of this sandbox.
        files: :class:`Files` of this sandbox.
    """

    def __init__(self, info: SandboxInfo, transport: SyncTransport) -> None:
        self.info = info
        self.id = info.id
        self._transport = transport
        self.commands = Commands(self)
        self.files = Files(self)

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, state={self.info.state!r})"

    @property
    def sandbox_id(self) -> str:
        """The sandbox id (E2B's name for :attr:`id`)."""
        return self.id

    @classmethod
    def create(
        cls,
        image: str | None = None,
        *,
        snapshot: str | None = None,
        memory_mib: int | None = None,
        vcpus: int | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        private_memory: bool = False,
        hugepages: bool = False,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> Sandbox:
        """Boot a sandbox from an image, or start one from a snapshot.

        The sandbox: ``sb = Sandbox.create()``, or as a context manager
        that removes it at the end of the block: ``with Sandbox.create() as sb:``.

        Args:
            image: Image to boot (default ``python``). Not with ``snapshot``.
            snapshot: Tag of a snapshot to start from (copy-on-write, a fraction
                of a second instead of a boot).
            memory_mib: Guest RAM in MiB (default 256; a snapshot's child must match it).
            vcpus: Virtual CPUs (default 1).
            env: Environment applied to every command in the sandbox.
            timeout: Lifetime in seconds; the daemon removes the sandbox after it.
                Only for image boots (the daemon has no lifetime for children).
            private_memory: With ``snapshot``: the child gets its own memory
                (can then be branched in ``copy`` mode) instead of copy-on-write.
            hugepages: With ``private_memory``: back it with 2 MiB hugepages.
            socket: Daemon socket (default ``ZYGOTE_SOCKET``, then ``/run/zygote/zygote.sock``).
            url: Daemon URL on TCP (default ``ZYGOTE_URL``).
            token: Bearer token for ``url`` (default ``ZYGOTE_TOKEN``).
            request_timeout: Seconds one API call may take.
        """
        created = cls._create(
            image,
            snapshot,
            memory_mib,
            vcpus,
            env,
            timeout,
            private_memory,
            hugepages,
            _endpoint(socket, url, token, request_timeout),
        )
        return created

    @classmethod
    def _create(
        cls,
        image: str | None,
        snapshot: str | None,
        memory_mib: int | None,
        vcpus: int | None,
        env: Mapping[str, str] | None,
        timeout: float | None,
        private_memory: bool,
        hugepages: bool,
        ep: Endpoint,
    ) -> Sandbox:
        if snapshot is not None:
            if image is not None:
                raise ConfigError(
                    "pass image= or snapshot=, not both: a child has its snapshot's image"
                )
            if timeout is not None:
                raise ConfigError(
                    "timeout= is not supported for children of a snapshot (the daemon has "
                    "no lifetime for them): remove it with kill() or a `with` block"
                )
            kids = _spawn(ep, snapshot, 1, memory_mib, vcpus, env, private_memory, hugepages)
            return kids[0]
        if private_memory or hugepages:
            raise ConfigError("private_memory= and hugepages= apply to snapshot= children only")
        t = SyncTransport(ep)
        try:
            doc = t.json(_api.create_sandbox(image, memory_mib, vcpus, env, timeout))
        except BaseException:
            t.close()
            raise
        return cls(SandboxInfo.from_json(doc), t)

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> Sandbox:
        """Attach to an existing sandbox by id.

        Raises:
            NotFoundError: No sandbox has that id.
        """
        t = SyncTransport(_endpoint(socket, url, token, request_timeout))
        try:
            doc = t.json(
                _api.Call("GET", f"/v1/sandboxes/{_api.seg(sandbox_id, 'sandbox id')}"),
            )
        except BaseException:
            t.close()
            raise
        return cls(SandboxInfo.from_json(doc), t)

    @staticmethod
    def list(
        *,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> builtins.list[SandboxInfo]:
        """Every sandbox the daemon holds."""
        t = SyncTransport(_endpoint(socket, url, token, request_timeout))
        try:
            docs = t.json(_api.Call("GET", "/v1/sandboxes"))
            return [SandboxInfo.from_json(d) for d in docs]
        finally:
            t.close()

    @staticmethod
    def images(
        *,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> builtins.list[ImageInfo]:
        """The images the daemon can boot."""
        t = SyncTransport(_endpoint(socket, url, token, DEFAULT_REQUEST_TIMEOUT))
        try:
            return [ImageInfo.from_json(d) for d in t.json(_api.Call("GET", "/v1/images"))]
        finally:
            t.close()

    def get_info(self) -> SandboxInfo:
        """Fetch the sandbox's current state (also stored in :attr:`info`)."""
        doc = self._transport.json(
            _api.Call("GET", f"/v1/sandboxes/{_api.seg(self.id, 'id')}"),
        )
        self.info = SandboxInfo.from_json(doc)
        return self.info

    def is_running(self) -> bool:
        """True while the daemon has the sandbox in state ``running``."""
        try:
            info = self.get_info()
            return info.state == "running"
        except NotFoundError:
            return False

    def ping(self) -> float:
        """Round trip daemon-to-agent in milliseconds."""
        doc = self._transport.json(
            _api.Call("POST", f"/v1/sandboxes/{_api.seg(self.id, 'id')}/ping")
        )
        return float(doc["agent_rtt_ms"])

    def eval(self, code: str) -> EvalResult:
        """Run Python in the sandbox's warm interpreter; its state persists between calls.

        The trailing expression's ``repr`` is returned in ``result``; an exception
        does not raise here but is returned in ``error`` and ``traceback``.
        """
        if not isinstance(code, str):
            raise ConfigError(f"code must be a str, got {type(code).__name__}")
        call = _api.Call(
            "POST", f"/v1/sandboxes/{_api.seg(self.id, 'id')}/eval", json={"code": code}
        )
        call.timeout = None
        return EvalResult.from_json(self._transport.json(call))

    def branch(
        self,
        tag: str | None = None,
        *,
        mode: Literal["copy", "live"] | None = None,
        hugepages: bool = False,
        wait: bool = False,
        downtime_limit_ms: int | None = None,
    ) -> SnapshotInfo:
        """Snapshot this running sandbox; it keeps running.

        Args:
            tag: Snapshot tag (default: generated).
            mode: ``copy`` (brief stop, copy touched RAM) or ``live`` (precopy;
                pause of a few ms). Default: what suits the sandbox.
            hugepages: Back the snapshot memory with 2 MiB hugepages.
            wait: Answer only once ``memory.bin`` is on disk (status ``ready``).
            downtime_limit_ms: ``live`` mode: QEMU's downtime limit (default 20).
        """
        call = _api.branch(self.id, tag, mode, hugepages, wait, downtime_limit_ms)
        return SnapshotInfo.from_json(self._transport.json(call))

    def fork(
        self,
        n: int = 1,
        *,
        mode: Literal["copy", "live"] | None = None,
        tag: str | None = None,
        private_memory: bool = False,
        hugepages: bool = False,
    ) -> builtins.list[Sandbox]:
        """Branch this sandbox and start ``n`` children from the snapshot.

        Each child starts with this sandbox's memory, processes and files as they
        were at the branch, then goes its own way. The intermediate snapshot's
        tag is in each child's ``info.snapshot_tag``.

        Raises:
            SandboxError: A child did not start (the ones that did are removed).
        """
        call = _api.fork(self.id, n, mode, tag, private_memory, hugepages)
        doc = self._transport.json(call)
        return _children(self._transport, doc.get("children"), self._transport.endpoint)

    def kill(self) -> bool:
        """Remove the sandbox (stops its VM, deletes its disk). False if it was already gone."""
        try:
            self._transport.send(
                _api.Call("DELETE", f"/v1/sandboxes/{_api.seg(self.id, 'id')}"),
            )
        except NotFoundError:
            return False
        return True

    def close(self) -> None:
        """Close this object's connections to the daemon (the sandbox keeps running;
        a later call reconnects)."""
        self._transport.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.kill()
        except ZygoteError:
            if exc is None:
                raise
            # The block's own exception matters more than a failed cleanup.
        finally:
            self.close()


class Snapshot:
    """Snapshots held by the daemon: create (boot, warm up, freeze), list, get,
    delete, and start children from one."""

    @staticmethod
    def create(
        tag: str,
        *,
        image: str | None = None,
        warmup: str | None = None,
        memory_mib: int | None = None,
        vcpus: int | None = None,
        hugepages: bool = False,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> SnapshotInfo:
        """Boot a sandbox, run ``warmup`` in its interpreter, snapshot it, remove it.

        Args:
            tag: The snapshot's name.
            image: Image to boot (default ``python``).
            warmup: Python run before the snapshot (e.g. ``"import json, math"``).
            memory_mib: Guest RAM in MiB.
            vcpus: vCPUs.
            hugepages: Hugepage-backed snapshot memory.

        Raises:
            ConflictError: The tag is taken.
        """
        t = SyncTransport(_endpoint(socket, url, token, request_timeout))
        try:
            call = _api.create_snapshot(tag, image, warmup, memory_mib, vcpus, hugepages)
            return SnapshotInfo.from_json(t.json(call))
        finally:
            t.close()

    @staticmethod
    def list(
        *,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> builtins.list[SnapshotInfo]:
        """Every snapshot."""
        t = SyncTransport(_endpoint(socket, url, token, DEFAULT_REQUEST_TIMEOUT))
        try:
            docs = t.json(_api.Call("GET", "/v1/snapshots"))
            return [SnapshotInfo.from_json(d) for d in docs]
        finally:
            t.close()

    @staticmethod
    def get(
        tag: str,
        *,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> SnapshotInfo:
        """One snapshot.

        Raises:
            NotFoundError: No snapshot has that tag.
        """
        t = SyncTransport(_endpoint(socket, url, token, DEFAULT_REQUEST_TIMEOUT))
        try:
            return SnapshotInfo.from_json(
                t.json(_api.Call("GET", f"/v1/snapshots/{_api.seg(tag, 'tag')}"))
            )
        finally:
            t.close()

    @staticmethod
    def delete(
        tag: str,
        *,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> None:
        """Delete a snapshot (children already started keep running).

        Raises:
            NotFoundError: No snapshot has that tag.
        """
        t = SyncTransport(_endpoint(socket, url, token, DEFAULT_REQUEST_TIMEOUT))
        try:
            t.send(_api.Call("DELETE", f"/v1/snapshots/{_api.seg(tag, 'tag')}"))
        finally:
            t.close()

    @staticmethod
    def spawn(
        tag: str,
        n: int = 1,
        *,
        memory_mib: int | None = None,
        vcpus: int | None = None,
        env: Mapping[str, str] | None = None,
        private_memory: bool = False,
        hugepages: bool = False,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> builtins.list[Sandbox]:
        """Start ``n`` children of a snapshot.

        Raises:
            NotFoundError: No snapshot has that tag.
            SandboxError: A child did not start (the ones that did are removed).
        """
        ep = _endpoint(socket, url, token, request_timeout)
        return _spawn(ep, tag, n, memory_mib, vcpus, env, private_memory, hugepages)
