"""The tools of background processes, directory trees, pause/resume and
lifetimes (the rest are in ``server.py``)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from pydantic import Field

import zygote
from zygote import AsyncSandbox, CommandExitError, ZygoteError

from .common import (
    MAX_OUTPUT_CHARS,
    Env,
    FileToWrite,
    GuestPath,
    OnExpiryArg,
    Pid,
    SandboxId,
    _b64,
    _dict,
    _entry,
    _fail,
    _tail,
)


class MoreTools:
    """Tool implementations bound to one daemon endpoint."""

    def __init__(self, endpoint: zygote.Endpoint) -> None:
        self.ep = endpoint

    def _conn(self) -> dict[str, Any]:
        if self.ep.socket is not None:
            return {"socket": self.ep.socket}
        return {"url": self.ep.url, "token": self.ep.token}

    async def _sandbox(self, sandbox_id: str, resume: bool = True) -> AsyncSandbox:
        """The sandbox; a paused one is resumed unless ``resume=False``."""
        return await AsyncSandbox.connect(sandbox_id, resume=resume, **self._conn())

    async def start_process(
        self,
        sandbox_id: SandboxId,
        command: Annotated[str, Field(description="Shell command line, run with /bin/sh -c.")],
        cwd: Annotated[str | None, Field(description="Absolute working directory.")] = None,
        env: Env = None,
        user: Annotated[str | None, Field(description="Guest user (default root).")] = None,
        stdin: Annotated[bool, Field(description="Keep its stdin open for send_stdin.")] = False,
        tag: Annotated[str | None, Field(description="A label shown by list_processes.")] = None,
        timeout_secs: Annotated[
            float | None, Field(gt=0, description="Kill it after this many seconds.")
        ] = None,
    ) -> dict[str, Any]:
        """Start a command in the background (a server, a REPL, a long job) and return its
        pid at once. It runs on after this call; read its output with process_output
        (its last 256 KiB are kept), feed it with send_stdin, stop it with kill_process."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                h = await sb.commands.run(
                    command,
                    background=True,
                    cwd=cwd,
                    envs=env,
                    user=user,
                    stdin=stdin,
                    tag=tag,
                    timeout=timeout_secs,
                )
                await h.disconnect()
                procs = await sb.commands.list(include_exited=True)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        found = [p for p in procs if p.pid == h.pid]
        return _dict(found[0]) if found else {"pid": h.pid, "cmd": command, "running": False}

    async def list_processes(
        self,
        sandbox_id: SandboxId,
        include_exited: Annotated[
            bool, Field(description="Also list processes that ended (and are still kept).")
        ] = False,
    ) -> dict[str, Any]:
        """List a sandbox's background processes and terminals: pid, command, tag, whether
        it runs, and how it ended (exit_code, signal)."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                procs = await sb.commands.list(include_exited=include_exited)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return {"processes": [_dict(p) for p in procs]}

    async def process_output(
        self,
        sandbox_id: SandboxId,
        pid: Pid,
        wait_secs: Annotated[
            float,
            Field(
                ge=0,
                le=600,
                description="Follow new output for up to this many seconds, or until the "
                "process ends (0: only what it printed so far).",
            ),
        ] = 1.0,
    ) -> dict[str, Any]:
        """Read a background process's output: what it printed so far (its last 256 KiB),
        then new output for up to wait_secs or until it ends. Returns stdout, stderr,
        running, and exit_code / signal once it ended. Output longer than 50,000
        characters per stream keeps its end."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                h = await sb.commands.connect(pid)
                ended = None
                try:
                    ended = await asyncio.wait_for(h.wait(), max(wait_secs, 0.2))
                except CommandExitError as e:
                    ended = e.result
                except TimeoutError:
                    pass
                finally:
                    await h.disconnect()
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        out: dict[str, Any] = {"pid": pid, "running": ended is None}
        out["stdout"], out["stdout_truncated"] = _tail(h.stdout, MAX_OUTPUT_CHARS)
        out["stderr"], out["stderr_truncated"] = _tail(h.stderr, MAX_OUTPUT_CHARS)
        out["exit_code"] = ended.exit_code if ended else None
        out["signal"] = ended.signal if ended else None
        return out

    async def send_stdin(
        self,
        sandbox_id: SandboxId,
        pid: Pid,
        data: Annotated[str, Field(description="Text for its stdin (add \\n for a line).")],
        close: Annotated[bool, Field(description="Close its stdin afterwards (EOF).")] = False,
    ) -> dict[str, Any]:
        """Send text to the stdin of a background process started with stdin=true (or a
        terminal), optionally closing it afterwards."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                if data:
                    await sb.commands.send_stdin(pid, data)
                if close:
                    await sb.commands.close_stdin(pid)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return {"pid": pid, "bytes": len(data.encode()), "closed": close}

    async def kill_process(
        self,
        sandbox_id: SandboxId,
        pid: Pid,
        signal: Annotated[
            int, Field(ge=1, le=64, description="Signal number: 9 SIGKILL, 15 SIGTERM, 2 SIGINT.")
        ] = 9,
    ) -> dict[str, Any]:
        """Send a signal (default SIGKILL) to a background process's process group.
        killed is false when no process has that pid."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                ok = await sb.commands.signal(pid, signal)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return {"pid": pid, "signal": signal, "killed": ok}

    async def make_dir(self, sandbox_id: SandboxId, path: GuestPath) -> dict[str, Any]:
        """Create a directory and any missing parents. created is false when it existed."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                created = await sb.files.make_dir(path)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return {"path": path, "created": created}

    async def list_files(
        self,
        sandbox_id: SandboxId,
        path: GuestPath,
        depth: Annotated[
            int, Field(ge=1, le=32, description="Levels to descend (1: the directory's entries).")
        ] = 1,
    ) -> dict[str, Any]:
        """List a directory, or its tree down to depth levels: each entry's path, name,
        kind (file, dir, symlink, other), size, mode and mtime, each directory right
        before its contents."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                entries = await sb.files.list(path, depth=depth)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return {"path": path, "depth": depth, "entries": [_entry(e) for e in entries]}

    async def write_files(
        self,
        sandbox_id: SandboxId,
        files: Annotated[
            list[FileToWrite],
            Field(min_length=1, description="The files: path, content, encoding, mode."),
        ],
    ) -> dict[str, Any]:
        """Write several files in one call (at most 64 MiB in all), in order; parent
        directories are created. Returns each path and the bytes written."""
        entries: list[zygote.WriteEntry] = []
        for f in files:
            data: bytes | str = _b64(f.content, f.path) if f.encoding == "base64" else f.content
            e: zygote.WriteEntry = {"path": f.path, "data": data}
            if f.mode is not None:
                e["mode"] = f.mode
            entries.append(e)
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                written = await sb.files.write_files(entries)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return {"files": [_dict(w) for w in written]}

    async def pause_sandbox(self, sandbox_id: SandboxId) -> dict[str, Any]:
        """Pause a sandbox: store it (memory, processes, files) and free its memory and VM.
        It stays listed as paused, also across daemon restarts; resume_sandbox brings it
        back as it was. paused is false when it already was."""
        try:
            sb = await self._sandbox(sandbox_id, resume=False)
            try:
                paused = await sb.pause()
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return {"paused": paused, "sandbox": _dict(sb.info)}

    async def resume_sandbox(self, sandbox_id: SandboxId) -> dict[str, Any]:
        """Resume a paused sandbox under the same id, with its processes, Python state
        and files as they were (any other tool used on a paused sandbox resumes it too).
        resumed is false when it was running."""
        try:
            sb = await self._sandbox(sandbox_id, resume=False)
            try:
                resumed = await sb.resume()
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return {"resumed": resumed, "sandbox": _dict(sb.info)}

    async def set_timeout(
        self,
        sandbox_id: SandboxId,
        timeout_secs: Annotated[int, Field(ge=1, description="Seconds from now.")],
        on_expiry: OnExpiryArg = None,
    ) -> dict[str, Any]:
        """Give a sandbox a new lifetime from now (replacing the old one); when it runs out
        the sandbox is removed, or paused with on_expiry='pause'."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                await sb.set_timeout(timeout_secs, on_expiry=on_expiry)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return _dict(sb.info)

    async def expose_port(
        self,
        sandbox_id: SandboxId,
        port: Annotated[int, Field(ge=1, le=65535, description="The guest's TCP port.")],
    ) -> dict[str, Any]:
        """Expose a TCP port of a server running in the sandbox on the daemon's host and
        return the host:port that reaches it (the same on every call; it goes away with
        the sandbox). Start the server first, e.g. with start_process."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                host = await sb.get_host(port)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return {"port": port, "host": host}

    async def set_network(
        self,
        sandbox_id: SandboxId,
        internet: Annotated[
            bool, Field(description="False: only allow_out destinations answer.")
        ] = True,
        allow_out: Annotated[
            list[str] | None,
            Field(description="IPv4 CIDRs reachable even without internet."),
        ] = None,
        deny_out: Annotated[
            list[str] | None,
            Field(description="IPv4 CIDRs never reachable (wins over allow_out)."),
        ] = None,
    ) -> dict[str, Any]:
        """Replace a running sandbox's egress policy; new connections follow it at once
        (a refused one gets a reset, it does not hang)."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                await sb.set_network(internet=internet, allow_out=allow_out, deny_out=deny_out)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return _dict(sb.info)
