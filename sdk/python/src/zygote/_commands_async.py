# unasync: async-only
# _commands_sync.py is generated from this file by scripts/unasync.py: run it
# after an edit; code that differs is marked `unasync:`.
# unasync: end
"""The asynchronous ``sandbox.commands`` (foreground and background commands)
and ``sandbox.pty`` (terminals)."""

from __future__ import annotations

import builtins
import inspect  # unasync: async-only
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from . import _api, _api_procs
from ._errors import CommandExitError, ConfigError, NotFoundError
from ._handles import AsyncCommandHandle
from ._models import CommandResult, ProcessInfo, PtySize

if TYPE_CHECKING:
    from ._async import AsyncSandbox

AsyncOutputCallback = Callable[[str], Any]
"""Called with each decoded chunk of output as it arrives; may be a coroutine function."""


def _envs(
    env: Mapping[str, str] | None, envs: Mapping[str, str] | None
) -> Mapping[str, str] | None:
    if env is not None and envs is not None:
        raise ConfigError("pass envs= (E2B's name) or env=, not both")
    return envs if envs is not None else env


def _gone(e: NotFoundError) -> bool:
    """A 404 about the process, not about the sandbox."""
    return "no sandbox with id" not in e.message


class AsyncCommands:
    """``sandbox.commands``: run processes in the guest, in the foreground or the
    background (E2B's names and arguments)."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sb = sandbox

    @overload
    async def run(
        self,
        cmd: str | Sequence[str],
        background: Literal[False] = False,
        *,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        stdin: str | bytes | bool | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = False,
        tag: str | None = None,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        cmd: str | Sequence[str],
        background: Literal[True],
        *,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        stdin: str | bytes | bool | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = False,
        tag: str | None = None,
    ) -> AsyncCommandHandle: ...

    async def run(
        self,
        cmd: str | Sequence[str],
        background: bool = False,
        *,
        envs: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        stdin: str | bytes | bool | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = False,
        tag: str | None = None,
    ) -> CommandResult | AsyncCommandHandle:
        """Run a command: wait for it to end, or with ``background=True`` start it
        and return a handle at once.

        Args:
            cmd: A shell command line (run with ``/bin/sh -c``) or an argument list
                (run directly, no shell).
            background: Return an :class:`AsyncCommandHandle` once it runs (it
                runs on when this client goes; its last 256 KiB of output are kept).
            envs: Extra environment variables (``env=`` is the same).
            user: Run as this guest user (default root).
            cwd: Working directory in the guest.
            on_stdout: Called with each chunk of stdout as it arrives (the
                foreground form then uses the streaming endpoint).
            on_stderr: Called with each chunk of stderr as it arrives.
            stdin: Foreground: text or bytes fed to stdin, then closed.
                Background: ``True`` keeps stdin open for ``send_stdin``; text
                or bytes are sent, then stdin is closed.
            timeout: Seconds after which the process group is killed (the
                result then has ``timed_out=True``). ``None``: no limit.
            check: Foreground: raise :class:`CommandExitError` unless it exits with 0.
            tag: Background: a label, shown by :meth:`list`.

        Returns:
            The :class:`CommandResult` (foreground), or the handle (background).

        Raises:
            NotFoundError: The sandbox is gone (or, foreground, the program or ``cwd``).
            BadRequestError: The daemon rejected an argument (e.g. a relative ``cwd``).
        """
        env = _envs(env, envs)
        if background:
            if check:
                raise ConfigError("check= is for the foreground: a handle's wait() raises already")
            return await self._start(cmd, env, user, cwd, stdin, timeout, tag, on_stdout, on_stderr)
        if isinstance(stdin, bool):
            raise ConfigError(
                "stdin=True keeps a background command's stdin open: pass background=True, "
                "or give the text or bytes to feed"
            )
        if tag is not None:
            raise ConfigError("tag= labels a background command: pass background=True")
        stream = on_stdout is not None or on_stderr is not None
        call = _api.exec_call(self._sb.id, cmd, env, cwd, timeout, stdin, stream, user)
        t = self._sb._transport
        if not stream:
            result = CommandResult.from_json(await t.json(call))
        else:
            dec = _api.ExecStream()
            async with t.stream(call) as resp:
                async for line in resp.aiter_lines():
                    for kind, text in dec.feed(line):
                        cb = on_stdout if kind == "stdout" else on_stderr
                        if cb is not None:
                            # unasync: async-only
                            r = cb(text)
                            if inspect.isawaitable(r):
                                await r
                            # unasync: sync-only
                            # cb(text)
                            # unasync: end
                    if dec.result is not None:
                        break
            result = dec.finish()
        if check and result.exit_code != 0:
            raise CommandExitError(result)
        return result

    async def _start(
        self,
        cmd: str | Sequence[str],
        env: Mapping[str, str] | None,
        user: str | None,
        cwd: str | None,
        stdin: str | bytes | bool | None,
        timeout: float | None,
        tag: str | None,
        on_stdout: AsyncOutputCallback | None,
        on_stderr: AsyncOutputCallback | None,
    ) -> AsyncCommandHandle:
        feed = None if isinstance(stdin, bool) or stdin is None else stdin
        keep_open = stdin is True or feed is not None
        call = _api_procs.start_process(
            self._sb.id, cmd, env, cwd, user, keep_open, timeout, tag=tag
        )
        info = ProcessInfo.from_json(await self._sb._transport.json(call))
        if feed is not None:
            await self._stdin(info.pid, feed, True)
        return await self._follow(info.pid, True, on_stdout, on_stderr)

    async def _follow(
        self,
        pid: int,
        replay: bool,
        on_stdout: AsyncOutputCallback | None,
        on_stderr: AsyncOutputCallback | None,
    ) -> AsyncCommandHandle:
        call = _api_procs.process_output(self._sb.id, pid, replay)
        t = self._sb._transport
        # unasync: async-only
        resp = await t.open_stream(call)
        # unasync: sync-only
        # resp = None  # the sync handle opens it when read
        # unasync: end
        return AsyncCommandHandle(
            self,
            t,
            pid,
            call,
            resp,
            on_stdout=on_stdout,
            on_stderr=on_stderr,
        )

    async def connect(
        self,
        pid: int,
        *,
        on_stdout: AsyncOutputCallback | None = None,
        on_stderr: AsyncOutputCallback | None = None,
        replay: bool = True,
    ) -> AsyncCommandHandle:
        """Follow a background command again (from this or another client): a
        new handle that first sees its kept output (its last 256 KiB; not with
        ``replay=False``), then what it prints, then its end.

        Raises:
            NotFoundError: No process (or sandbox) with that id.
        """
        return await self._follow(pid, replay, on_stdout, on_stderr)

    async def list(self, *, include_exited: bool = False) -> builtins.list[ProcessInfo]:
        """The background commands and terminals that run (with ``include_exited``,
        also those that ended and are still kept)."""
        docs = await self._sb._transport.json(_api_procs.list_processes(self._sb.id))
        procs = [ProcessInfo.from_json(d) for d in docs]
        return [p for p in procs if include_exited or p.running]

    async def kill(self, pid: int) -> bool:
        """SIGKILL to a background command's process group.

        Returns:
            ``True`` when it was signalled, ``False`` when no process has that pid.
        """
        return await self.signal(pid, _api_procs.SIGKILL)

    async def signal(self, pid: int, signal: int) -> bool:
        """A signal (e.g. 15, SIGTERM) to a background command's process group;
        ``False`` when no process has that pid."""
        try:
            await self._sb._transport.send(_api_procs.process_signal(self._sb.id, pid, signal))
        except NotFoundError as e:
            if _gone(e):
                return False
            raise
        return True

    async def send_stdin(self, pid: int, data: str | bytes) -> None:
        """Bytes (text as UTF-8) for a background command's stdin (started with
        ``stdin=True``) or a terminal."""
        await self._stdin(pid, data, False)

    async def close_stdin(self, pid: int) -> None:
        """Close a background command's stdin (it reads end-of-file; a terminal gets ^D)."""
        await self._stdin(pid, b"", True)

    async def _stdin(self, pid: int, data: str | bytes, eof: bool) -> None:
        await self._sb._transport.send(_api_procs.process_stdin(self._sb.id, pid, data, eof))


class AsyncPty:
    """``sandbox.pty``: terminals (a process on a pseudo-terminal), as E2B's."""

    def __init__(self, sandbox: AsyncSandbox, commands: AsyncCommands) -> None:
        self._sb = sandbox
        self._cmds = commands

    async def create(
        self,
        size: PtySize,
        on_data: Callable[[bytes], Any] | None = None,
        *,
        user: str | None = None,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        timeout: float | None = None,
        cmd: str | Sequence[str] | None = None,
    ) -> AsyncCommandHandle:
        """Start a terminal: ``/bin/bash -i -l`` (or ``cmd``) on a terminal of
        ``size``, with ``TERM=xterm-256color`` and a UTF-8 locale unless ``envs``
        says otherwise. Its output (bytes, as the terminal shows them) goes to
        ``on_data`` and to the handle; type into it with :meth:`send_stdin`.

        Args:
            size: Rows and columns.
            on_data: Called with each chunk of terminal output, may be a coroutine function.
            user: Run as this guest user (default root).
            cwd: Working directory.
            envs: Environment variables.
            timeout: Seconds after which it is killed. ``None``: no limit.
            cmd: What to run instead of the shell (zygote's addition).
        """
        program = _api_procs.PTY_SHELL if cmd is None else cmd
        env = _api_procs.pty_env(envs)
        call = _api_procs.start_process(
            self._sb.id, program, env, cwd, user, True, timeout, pty=size
        )
        info = ProcessInfo.from_json(await self._sb._transport.json(call))
        return await self._follow(info.pid, True, on_data)

    async def connect(
        self, pid: int, on_data: Callable[[bytes], Any] | None = None, *, replay: bool = True
    ) -> AsyncCommandHandle:
        """Follow a terminal again: its kept output first (unless ``replay=False``)."""
        return await self._follow(pid, replay, on_data)

    async def _follow(
        self, pid: int, replay: bool, on_data: Callable[[bytes], Any] | None
    ) -> AsyncCommandHandle:
        call = _api_procs.process_output(self._sb.id, pid, replay)
        t = self._sb._transport
        # unasync: async-only
        resp = await t.open_stream(call)
        # unasync: sync-only
        # resp = None  # the sync handle opens it when read
        # unasync: end
        return AsyncCommandHandle(self, t, pid, call, resp, pty=True, on_pty=on_data)

    async def send_stdin(self, pid: int, data: str | bytes) -> None:
        """Keystrokes for a terminal (bytes, or text as UTF-8), e.g. ``b"ls\\n"``."""
        await self._cmds.send_stdin(pid, data)

    async def close_stdin(self, pid: int) -> None:
        """End of input for a terminal (^D)."""
        await self._cmds.close_stdin(pid)

    async def resize(self, pid: int, size: PtySize) -> None:
        """A new size for a terminal (its program gets SIGWINCH)."""
        await self._sb._transport.send(_api_procs.process_resize(self._sb.id, pid, size))

    async def kill(self, pid: int) -> bool:
        """SIGKILL to a terminal's process group; ``False`` when no process has that pid."""
        return await self._cmds.kill(pid)
