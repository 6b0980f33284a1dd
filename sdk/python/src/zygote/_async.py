# unasync: async-only
# _sync.py is generated from this file by scripts/unasync.py: run it after an
# edit (its docstring lists what it renames); code that differs is marked `unasync:`.
# unasync: end
"""The asynchronous API: :class:`AsyncSandbox` (its ``commands``, ``pty`` and
``files`` are in ``_commands_async.py`` and ``_files_async.py``) and
:class:`AsyncSnapshot`."""

from __future__ import annotations

import builtins
import os
from collections.abc import Coroutine, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from . import _api
from ._commands_async import AsyncCommands, AsyncPty
from ._config import DEFAULT_REQUEST_TIMEOUT, Endpoint, resolve
from ._errors import (
    ConfigError,
    ConflictError,
    NotFoundError,
    ProtocolError,
    SandboxError,
    ZygoteError,
)
from ._files_async import AsyncFiles
from ._models import (
    EvalResult,
    ImageInfo,
    OnExpiry,
    SandboxInfo,
    SandboxList,
    SnapshotInfo,
)
from ._transport import AsyncTransport


def _endpoint(
    socket: str | os.PathLike[str] | None,
    url: str | None,
    token: str | None,
    request_timeout: float | None,
) -> Endpoint:
    return resolve(socket=socket, url=url, token=token, request_timeout=request_timeout)


def _on_expiry(on_expiry: str | None, lifecycle: Mapping[str, Any] | None) -> str | None:
    """``on_expiry``, or E2B's ``lifecycle={"on_timeout": "kill"|"pause"}``."""
    if lifecycle is None:
        return on_expiry
    if on_expiry is not None:
        raise ConfigError("pass on_expiry= or lifecycle= (E2B's form), not both")
    on = lifecycle.get("on_timeout") if isinstance(lifecycle, Mapping) else None
    if isinstance(on, Mapping):
        on = on.get("action")
    if on is None:
        raise ConfigError(f"lifecycle={lifecycle!r}: pass {{'on_timeout': 'kill' or 'pause'}}")
    return _api.expiry(on)


async def _children(
    transport: AsyncTransport,
    results: Any,
    endpoint: Endpoint,
) -> builtins.list[AsyncSandbox]:
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
                await transport.send(
                    _api.Call("DELETE", f"/v1/sandboxes/{_api.seg(info.id, 'id')}"),
                )
            except NotFoundError:
                pass
        raise SandboxError(
            f"{len(errors)} of {len(ok) + len(errors)} children did not start "
            f"(the others were removed): " + "; ".join(errors)
        )
    return [AsyncSandbox(info, AsyncTransport(endpoint)) for info in ok]


async def _spawn(
    ep: Endpoint,
    tag: str,
    n: int,
    memory_mib: int | None,
    vcpus: int | None,
    env: Mapping[str, str] | None,
    private_memory: bool,
    hugepages: bool,
    life: _api.Life,
) -> builtins.list[AsyncSandbox]:
    t = AsyncTransport(ep)
    try:
        call = _api.spawn(tag, n, memory_mib, vcpus, env, private_memory, hugepages, life)
        return await _children(t, await t.json(call), ep)
    finally:
        await t.close()


# unasync: async-only
class PendingSandbox:
    """What :meth:`AsyncSandbox.create` returns: await it for the sandbox, or
    ``async with`` it to have the sandbox removed at the end of the block."""

    def __init__(self, coro: Coroutine[Any, Any, AsyncSandbox]) -> None:
        self._coro = coro
        self._sb: AsyncSandbox | None = None

    def __await__(self) -> Generator[Any, None, AsyncSandbox]:
        return self._coro.__await__()

    async def __aenter__(self) -> AsyncSandbox:
        self._sb = await self._coro
        return self._sb

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sb is not None:
            await self._sb.__aexit__(exc_type, exc, tb)


# unasync: end


class AsyncSandbox:
    """A running sandbox: a Linux microVM with a warm Python interpreter.

    Create one with :meth:`create` (or reattach with :meth:`connect`); use it as a
    context manager to have it removed at the end::

        async with AsyncSandbox.create() as sb:
            r = await sb.commands.run("uname -r")
            print(r.stdout)

    Attributes:
        id: The sandbox id.
        info: The :class:`SandboxInfo` as last fetched (see :meth:`get_info`).
        commands: :class:`Commands` of this sandbox (foreground and background).
        pty: :class:`Pty`, its terminals.
        files: :class:`Files` of this sandbox.
    """

    def __init__(self, info: SandboxInfo, transport: AsyncTransport) -> None:
        self.info = info
        self.id = info.id
        self._transport = transport
        self.commands = AsyncCommands(self)
        self.pty = AsyncPty(self, self.commands)
        self.files = AsyncFiles(self)

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
        metadata: Mapping[str, str] | None = None,
        on_expiry: OnExpiry | None = None,
        private_memory: bool = False,
        hugepages: bool = False,
        envs: Mapping[str, str] | None = None,
        lifecycle: Mapping[str, Any] | None = None,
        network: Mapping[str, Any] | None = None,
        allow_internet_access: bool | None = None,
        volumes: Sequence[Mapping[str, Any]] | None = None,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> PendingSandbox:
        """Boot a sandbox from an image, or start one from a snapshot.

        The sandbox: ``sb = await AsyncSandbox.create()``, or as a context manager
        that removes it at the end of the block: ``async with AsyncSandbox.create() as sb:``.

        Args:
            image: Image to boot (default ``python``). Not with ``snapshot``.
            snapshot: Tag of a snapshot to start from (copy-on-write, a fraction
                of a second instead of a boot).
            memory_mib: Guest RAM in MiB (default 256; a snapshot's child must match it).
            vcpus: Virtual CPUs (default 1).
            env: Environment applied to every command in the sandbox (``envs=``,
                E2B's name, is the same).
            timeout: Lifetime in seconds (whole, rounded up); when it runs out the
                daemon removes the sandbox (or pauses it: ``on_expiry="pause"``).
                Extend it with :meth:`set_timeout`. Default: no limit.
            metadata: Labels (string to string) that :meth:`list` filters on; a
                child of a snapshot has its snapshot's labels under these.
            on_expiry: ``"kill"`` (default) or ``"pause"``.
            lifecycle: E2B's form of ``on_expiry``: ``{"on_timeout": "pause"}``.
            network: Egress policy (E2B's names): ``{"allow_out": [CIDR...],
                "deny_out": [CIDR...]}``; deny wins. ``{"enabled": False}``: no
                network card at all (a boot only). Default: the daemon's.
            allow_internet_access: ``False`` cuts the sandbox off the internet
                (only ``allow_out`` answers). Default ``True``.
            volumes: Volumes to mount: ``[{"name": "data", "path": "/data"}]``
                (``read_only``; ``host_path`` for a host directory under the
                daemon's ``--volume-host-root``). Create one with ``zygote volume create`` or ``POST /v1/volumes``.
            private_memory: With ``snapshot``: the child gets its own memory
                (can then be branched in ``copy`` mode) instead of copy-on-write.
            hugepages: With ``private_memory``: back it with 2 MiB hugepages.
            socket: Daemon socket (default ``ZYGOTE_SOCKET``, then ``/run/zygote/zygote.sock``).
            url: Daemon URL on TCP (default ``ZYGOTE_URL``).
            token: Bearer token for ``url`` (default ``ZYGOTE_TOKEN``).
            request_timeout: Seconds one API call may take.
        """
        if env is not None and envs is not None:
            raise ConfigError("pass envs= (E2B's name) or env=, not both")
        life = _api.Life(
            timeout,
            _on_expiry(on_expiry, lifecycle),
            metadata,
            _api.network_body(network, allow_internet_access),
            _api.volume_mounts(volumes),
        )
        created = cls._create(
            image,
            snapshot,
            memory_mib,
            vcpus,
            envs if envs is not None else env,
            life,
            private_memory,
            hugepages,
            _endpoint(socket, url, token, request_timeout),
        )
        # unasync: async-only
        return PendingSandbox(created)
        # unasync: sync-only
        # return created
        # unasync: end

    @classmethod
    async def _create(
        cls,
        image: str | None,
        snapshot: str | None,
        memory_mib: int | None,
        vcpus: int | None,
        env: Mapping[str, str] | None,
        life: _api.Life,
        private_memory: bool,
        hugepages: bool,
        ep: Endpoint,
    ) -> AsyncSandbox:
        if snapshot is not None:
            if image is not None:
                raise ConfigError(
                    "pass image= or snapshot=, not both: a child has its snapshot's image"
                )
            kids = await _spawn(
                ep,
                snapshot,
                1,
                memory_mib,
                vcpus,
                env,
                private_memory,
                hugepages,
                life,
            )
            return kids[0]
        if private_memory or hugepages:
            raise ConfigError("private_memory= and hugepages= apply to snapshot= children only")
        t = AsyncTransport(ep)
        try:
            doc = await t.json(_api.create_sandbox(image, memory_mib, vcpus, env, life))
        except BaseException:
            await t.close()
            raise
        return cls(SandboxInfo.from_json(doc), t)

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        *,
        timeout: float | None = None,
        resume: bool = True,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> AsyncSandbox:
        """Attach to an existing sandbox by id; a paused one is resumed first
        (as E2B's ``connect``), under the same id with its processes, memory and
        files.

        Args:
            timeout: A new lifetime in seconds from now (:meth:`set_timeout`).
            resume: ``False``: leave a paused sandbox paused (zygote's addition).

        Raises:
            NotFoundError: No sandbox has that id.
        """
        t = AsyncTransport(_endpoint(socket, url, token, request_timeout))
        try:
            sb = cls(SandboxInfo.from_json(await t.json(_api.sandbox_call("GET", sandbox_id))), t)
            if resume and sb.info.state == "paused":
                await sb.resume()
            if timeout is not None:
                await sb.set_timeout(timeout)
        except BaseException:
            await t.close()
            raise
        return sb

    @staticmethod
    async def list(
        *,
        metadata: Mapping[str, str] | None = None,
        state: str | None = None,
        limit: int | None = None,
        next_token: str | None = None,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> SandboxList:
        """The sandboxes the daemon holds, oldest first: all of them, or those with
        every label of ``metadata`` and in ``state``; a page of at most ``limit``.

        Args:
            metadata: Labels a sandbox must all have, e.g. ``{"run": "7"}``.
            state: Only sandboxes in this state (``running``, ``paused``, ...).
            limit: At most this many (1-1000); the result's ``next_token`` then
                names the next page (``None`` on the last).
            next_token: The page after the one that gave this token.
        """
        t = AsyncTransport(_endpoint(socket, url, token, request_timeout))
        try:
            resp = await t.send(_api.list_sandboxes(metadata, state, limit, next_token))
        finally:
            await t.close()
        try:
            docs = resp.json()
        except ValueError as e:
            raise ProtocolError(f"GET /v1/sandboxes: the answer is not JSON: {e}") from None
        out = SandboxList(SandboxInfo.from_json(d) for d in docs)
        out.next_token = resp.headers.get("x-next-token") or None
        return out

    @staticmethod
    async def images(
        *,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> builtins.list[ImageInfo]:
        """The images the daemon can boot."""
        t = AsyncTransport(_endpoint(socket, url, token, DEFAULT_REQUEST_TIMEOUT))
        try:
            return [ImageInfo.from_json(d) for d in await t.json(_api.Call("GET", "/v1/images"))]
        finally:
            await t.close()

    async def get_info(self) -> SandboxInfo:
        """Fetch the sandbox's current state (also stored in :attr:`info`)."""
        doc = await self._transport.json(
            _api.Call("GET", f"/v1/sandboxes/{_api.seg(self.id, 'id')}"),
        )
        self.info = SandboxInfo.from_json(doc)
        return self.info

    async def is_running(self) -> bool:
        """True while the daemon has the sandbox in state ``running``."""
        try:
            info = await self.get_info()
            return info.state == "running"
        except NotFoundError:
            return False

    async def ping(self) -> float:
        """Round trip daemon-to-agent in milliseconds."""
        doc = await self._transport.json(
            _api.Call("POST", f"/v1/sandboxes/{_api.seg(self.id, 'id')}/ping")
        )
        return float(doc["agent_rtt_ms"])

    async def eval(self, code: str) -> EvalResult:
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
        return EvalResult.from_json(await self._transport.json(call))

    async def branch(
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
        return SnapshotInfo.from_json(await self._transport.json(call))

    async def fork(
        self,
        n: int = 1,
        *,
        mode: Literal["copy", "live"] | None = None,
        tag: str | None = None,
        private_memory: bool = False,
        hugepages: bool = False,
        timeout: float | None = None,
        on_expiry: OnExpiry | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> builtins.list[AsyncSandbox]:
        """Branch this sandbox and start ``n`` children from the snapshot.

        Each child starts with this sandbox's memory, processes and files as they
        were at the branch, then goes its own way. The intermediate snapshot's
        tag is in each child's ``info.snapshot_tag``. ``timeout``, ``on_expiry``
        and ``metadata`` are each child's (labels over this sandbox's).

        Raises:
            SandboxError: A child did not start (the ones that did are removed).
        """
        life = _api.Life(timeout, on_expiry, metadata)
        call = _api.fork(self.id, n, mode, tag, private_memory, hugepages, life)
        doc = await self._transport.json(call)
        return await _children(self._transport, doc.get("children"), self._transport.endpoint)

    async def pause(self) -> bool:
        """Pause the sandbox: store it as a snapshot of itself (memory, devices,
        disk), stop its VM and free its memory. It stays listed, ``paused``,
        across daemon restarts; :meth:`resume` (or ``Sandbox.connect``) brings
        it back under the same id.

        Returns:
            ``True`` when it was paused, ``False`` when it already was.
        """
        try:
            doc = await self._transport.json(_api.sandbox_call("POST", self.id, "/pause"))
        except ConflictError:
            if (await self.get_info()).state == "paused":
                return False
            raise
        self.info = SandboxInfo.from_json(doc)
        return True

    async def resume(self) -> bool:
        """Resume a paused sandbox under the same id (processes, interpreter
        state and files as they were).

        Returns:
            ``True`` when it was resumed, ``False`` when it was running already.
        """
        try:
            doc = await self._transport.json(_api.sandbox_call("POST", self.id, "/resume"))
        except ConflictError:
            if (await self.get_info()).state == "running":
                return False
            raise
        self.info = SandboxInfo.from_json(doc)
        return True

    async def get_host(self, port: int) -> str:
        """Expose the guest's TCP ``port`` on the daemon's host and return the
        ``host:port`` that reaches it (the same one on every call; it goes away
        with the sandbox). E2B's name."""
        doc = await self._transport.json(_api.expose_port(self.id, port))
        return str(doc["host"])

    async def set_network(
        self,
        *,
        internet: bool = True,
        allow_out: list[str] | None = None,
        deny_out: list[str] | None = None,
    ) -> None:
        """Replace the egress policy; new connections follow it at once.
        ``deny_out`` wins over ``allow_out``; ``internet=False`` lets only
        ``allow_out`` through. ``info.network`` shows the new policy."""
        doc = await self._transport.json(_api.set_network(self.id, internet, allow_out, deny_out))
        self.info = SandboxInfo.from_json(doc)

    async def set_timeout(self, timeout: float, *, on_expiry: OnExpiry | None = None) -> None:
        """A new lifetime, ``timeout`` seconds from now (it replaces the old one);
        then the sandbox is removed, or paused (``on_expiry="pause"``; default:
        what it was). ``info.expires_at_unix`` shows the new end."""
        doc = await self._transport.json(_api.set_timeout(self.id, timeout, on_expiry))
        self.info = SandboxInfo.from_json(doc)

    async def kill(self) -> bool:
        """Remove the sandbox (stops its VM, deletes its disk). False if it was already gone."""
        try:
            await self._transport.send(
                _api.Call("DELETE", f"/v1/sandboxes/{_api.seg(self.id, 'id')}"),
            )
        except NotFoundError:
            return False
        return True

    async def close(self) -> None:
        """Close this object's connections to the daemon (the sandbox keeps running;
        a later call reconnects)."""
        await self._transport.close()

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.kill()
        except ZygoteError:
            if exc is None:
                raise
            # The block's own exception matters more than a failed cleanup.
        finally:
            await self.close()


class AsyncSnapshot:
    """Snapshots held by the daemon: create (boot, warm up, freeze), list, get,
    delete, and start children from one."""

    @staticmethod
    async def create(
        tag: str,
        *,
        image: str | None = None,
        warmup: str | None = None,
        warmup_cmd: str | None = None,
        ready_cmd: str | None = None,
        ready_port: int | None = None,
        ready_timeout: float | None = None,
        memory_mib: int | None = None,
        vcpus: int | None = None,
        hugepages: bool = False,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> SnapshotInfo:
        """Boot a sandbox, warm it up, snapshot it, remove it.

        Args:
            tag: The snapshot's name.
            image: Image to boot (default ``python``).
            warmup: Python run before the snapshot (e.g. ``"import json, math"``).
            warmup_cmd: A shell command started in the background before the
                snapshot (a server, a database); it runs on in every child.
            ready_cmd: A shell command retried until it exits 0 before the snapshot.
            ready_port: Or: a guest TCP port that must accept on 127.0.0.1 first.
            ready_timeout: Seconds readiness may take (default 60).
            memory_mib: Guest RAM in MiB.
            vcpus: vCPUs.
            hugepages: Hugepage-backed snapshot memory.

        Raises:
            ConflictError: The tag is taken.
        """
        t = AsyncTransport(_endpoint(socket, url, token, request_timeout))
        try:
            warm = _api.Warmup(warmup, warmup_cmd, ready_cmd, ready_port, ready_timeout)
            call = _api.create_snapshot(tag, image, warm, memory_mib, vcpus, hugepages)
            return SnapshotInfo.from_json(await t.json(call))
        finally:
            await t.close()

    @staticmethod
    async def list(
        *,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
    ) -> builtins.list[SnapshotInfo]:
        """Every snapshot."""
        t = AsyncTransport(_endpoint(socket, url, token, DEFAULT_REQUEST_TIMEOUT))
        try:
            docs = await t.json(_api.Call("GET", "/v1/snapshots"))
            return [SnapshotInfo.from_json(d) for d in docs]
        finally:
            await t.close()

    @staticmethod
    async def get(
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
        t = AsyncTransport(_endpoint(socket, url, token, DEFAULT_REQUEST_TIMEOUT))
        try:
            return SnapshotInfo.from_json(
                await t.json(_api.Call("GET", f"/v1/snapshots/{_api.seg(tag, 'tag')}"))
            )
        finally:
            await t.close()

    @staticmethod
    async def delete(
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
        t = AsyncTransport(_endpoint(socket, url, token, DEFAULT_REQUEST_TIMEOUT))
        try:
            await t.send(_api.Call("DELETE", f"/v1/snapshots/{_api.seg(tag, 'tag')}"))
        finally:
            await t.close()

    @staticmethod
    async def spawn(
        tag: str,
        n: int = 1,
        *,
        memory_mib: int | None = None,
        vcpus: int | None = None,
        env: Mapping[str, str] | None = None,
        private_memory: bool = False,
        hugepages: bool = False,
        timeout: float | None = None,
        on_expiry: OnExpiry | None = None,
        metadata: Mapping[str, str] | None = None,
        socket: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> builtins.list[AsyncSandbox]:
        """Start ``n`` children of a snapshot; ``timeout`` (seconds), ``on_expiry``
        and ``metadata`` (over the snapshot's labels) are each child's.

        Raises:
            NotFoundError: No snapshot has that tag.
            SandboxError: A child did not start (the ones that did are removed).
        """
        ep = _endpoint(socket, url, token, request_timeout)
        life = _api.Life(timeout, on_expiry, metadata)
        return await _spawn(ep, tag, n, memory_mib, vcpus, env, private_memory, hugepages, life)
