# unasync: async-only
# _files_sync.py is generated from this file by scripts/unasync.py: run it
# after an edit; code that differs is marked `unasync:`.
# unasync: end
"""The asynchronous ``sandbox.files``: moving files in and out, directory trees
and watches."""

from __future__ import annotations

import builtins
import contextlib
import os
import stat
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, overload

from . import _api, _api_procs
from ._errors import BadRequestError, ConfigError, NotFoundError, TransportError
from ._models import (
    EntryInfo,
    FileStat,
    FilesystemEvent,
    WriteEntry,
    WriteInfo,
    entries_from_walk,
    write_info_from_json,
)
from ._watch import AsyncWatchHandle

if TYPE_CHECKING:
    from ._async import AsyncSandbox


class AsyncFiles:
    """``sandbox.files``: the guest's filesystem. Paths are absolute guest paths."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sb = sandbox

    async def write(self, path: str, data: Any, *, mode: int | None = None) -> WriteInfo:
        """Write a file (created or replaced atomically; parent directories are created).

        Args:
            path: Absolute guest path.
            data: ``str`` (written as UTF-8), ``bytes``, a binary file object, or
                an iterable of ``bytes`` chunks (streamed).
            mode: Permission bits, e.g. ``0o755``.
        """
        call = _api.write_file(self._sb.id, path, data, mode)
        return write_info_from_json(await self._sb._transport.json(call))

    @overload
    async def read(self, path: str, *, format: Literal["text"] = "text") -> str: ...
    @overload
    async def read(self, path: str, *, format: Literal["bytes"]) -> bytes: ...

    async def read(self, path: str, *, format: Literal["text", "bytes"] = "text") -> str | bytes:
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
        resp = await self._sb._transport.send(call)
        data = resp.content
        return data if format == "bytes" else data.decode("utf-8", "replace")

    async def download(self, path: str, dest: str | os.PathLike[str] | BinaryIO) -> int:
        """Stream a guest file into a local file (a path, created or truncated, or a
        binary file object) without holding it in memory; returns the bytes written.

        Raises:
            NotFoundError: No such guest file.
            TransportError: The download ended early.
        """
        call = _api.files_call("GET", self._sb.id, path)
        call.timeout = None
        n = 0
        async with self._sb._transport.stream(call) as resp:
            expected = resp.headers.get("content-length")
            with contextlib.ExitStack() as stack:
                out: BinaryIO = (
                    stack.enter_context(open(dest, "wb"))
                    if isinstance(dest, (str, os.PathLike))
                    else dest
                )
                async for chunk in resp.aiter_bytes():
                    out.write(chunk)
                    n += len(chunk)
        if expected is not None and int(expected) != n:
            raise TransportError(f"download of {path} ended after {n} of {expected} bytes")
        return n

    async def upload(
        self, local: str | os.PathLike[str], path: str, *, mode: int | None = None
    ) -> WriteInfo:
        """Stream a local file into the guest (its permission bits too, unless ``mode``)."""
        with open(local, "rb") as f:
            if mode is None:
                mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            return await self.write(path, f, mode=mode)

    async def list(self, path: str, depth: int | None = 1) -> builtins.list[EntryInfo]:
        """List a directory: its entries (``depth=1``), or its tree down to
        ``depth`` levels (1-32), each directory right before its contents,
        sorted by path.

        Raises:
            NotFoundError: No such directory.
            BadRequestError: ``path`` is not a directory.
        """
        call = _api_procs.walk(self._sb.id, path, depth)
        return entries_from_walk(await self._sb._transport.json(call))

    async def get_info(self, path: str) -> EntryInfo:
        """Name, kind, size, mode and modification time of a path.

        Raises:
            NotFoundError: No such path.
        """
        return EntryInfo.from_stat(path, await self.stat(path))

    async def stat(self, path: str) -> FileStat:
        """Size, mode, kind and mtime of a path."""
        call = _api.files_call("GET", self._sb.id, path, "/stat")
        return FileStat.from_json(await self._sb._transport.json(call))

    async def exists(self, path: str) -> bool:
        """Whether a path exists (a 404 about the sandbox itself still raises)."""
        try:
            await self.stat(path)
        except NotFoundError as e:
            if "no sandbox with id" in e.message:
                raise
            return False
        return True

    async def make_dir(self, path: str) -> bool:
        """Create a directory and any missing parents.

        Returns:
            ``True`` when it was created, ``False`` when it already existed.

        Raises:
            BadRequestError: Something that is not a directory is in the way.
        """
        t = self._sb._transport
        try:
            await t.send(_api_procs.make_dir(self._sb.id, path, False))
        except NotFoundError:  # a parent is missing
            await t.send(_api_procs.make_dir(self._sb.id, path, True))
        except BadRequestError:
            with contextlib.suppress(NotFoundError):
                if (await self.stat(path)).kind == "dir":
                    return False
            raise
        return True

    async def rename(self, old_path: str, new_path: str) -> EntryInfo:
        """Rename (move) a file or directory; what is at ``new_path`` then.

        Raises:
            NotFoundError: ``old_path`` does not exist.
        """
        await self._sb._transport.send(_api_procs.rename(self._sb.id, old_path, new_path))
        return await self.get_info(new_path)

    async def write_files(self, files: Sequence[WriteEntry]) -> builtins.list[WriteInfo]:
        """Write several files in one request (each whole; at most 64 MiB in
        all), in order; parent directories are created.

        Args:
            files: ``[{"path": "/app/main.py", "data": "print(1)"}, ...]`` with
                ``str``, ``bytes`` or a binary file object as ``data`` and an
                optional ``mode`` (e.g. ``0o755``).
        """
        call = _api_procs.batch(self._sb.id, files)
        docs = await self._sb._transport.json(call)
        return [write_info_from_json(d) for d in docs]

    async def watch_dir(
        self,
        path: str,
        on_event: Callable[[FilesystemEvent], Any] | None = None,
        *,
        recursive: bool = False,
        on_exit: Callable[[BaseException | None], Any] | None = None,
    ) -> AsyncWatchHandle:
        """Watch a directory (inotify in the guest): once this returns, every
        create, write, remove, rename and chmod under it is a
        :class:`FilesystemEvent` for ``on_event`` and ``get_new_events()``,
        until ``stop()``.

        Args:
            path: Absolute guest path of a directory.
            on_event: Called with each event, from the handle's reader (a task, or
                a thread of its own in the sync API), may be a coroutine function.
            recursive: Watch subdirectories too (also ones created later).
            on_exit: Called once when the watch ends, with what ended it or
                ``None``, may be a coroutine function.

        Raises:
            NotFoundError: No such directory.
        """
        call = _api_procs.watch(self._sb.id, path, recursive)
        t = self._sb._transport
        resp = await t.open_stream(call)
        return AsyncWatchHandle(t, call, resp, path, on_event, on_exit)

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, or a directory (``recursive=True`` for a non-empty one)."""
        call = _api.files_call(
            "DELETE", self._sb.id, path, recursive="true" if recursive else "false"
        )
        await self._sb._transport.send(call)
