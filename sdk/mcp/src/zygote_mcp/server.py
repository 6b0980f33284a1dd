"""The zygote MCP server: sandbox tools over stdio, built on the ``zygote`` SDK.

Every tool is stateless on the server side: it names its sandbox by id and the
daemon holds the state, so several agents (or a restarted server) see the same
sandboxes. The daemon is found like the CLI finds it (``--socket`` / ``--url``
or ``ZYGOTE_SOCKET``, ``ZYGOTE_URL`` + ``ZYGOTE_TOKEN``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import os
import re
import sys
import time
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

import zygote
from zygote import AsyncSandbox, AsyncSnapshot, NotFoundError, ZygoteError

from .common import (
    MAX_OUTPUT_CHARS,
    Env,
    GuestPath,
    Metadata,
    Mode,
    OnExpiryArg,
    SandboxId,
    _dict,
    _fail,
    _tail,
)
from .procs import MoreTools

MAX_READ_BYTES = 10 * 1024 * 1024
"""The most ``read_file`` returns in one call."""

INSTRUCTIONS = """\
Tools for zygote sandboxes: isolated Linux microVMs (Debian with Python 3) that boot
in seconds and can be branched (snapshotted while running) and forked into
copy-on-write children in well under a second. Create a sandbox, run commands and
Python in it, move files, then kill it when done. Start servers and long jobs with
start_process and come back to them with process_output. Fork a sandbox to try
several futures from the same state; each child starts with the parent's files,
processes and Python variables. Pause a sandbox you will need later (it frees its
memory; resume_sandbox brings it back as it was), or give it a lifetime
(set_timeout). Sandboxes are not removed when this server exits: kill them.
"""


class Tools(MoreTools):
    """The tool implementations, bound to one daemon endpoint (those of processes,
    trees and lifetimes come from :class:`MoreTools`)."""

    async def create_sandbox(
        self,
        image: Annotated[
            str | None, Field(description="Image to boot (default 'python'). Not with snapshot.")
        ] = None,
        snapshot: Annotated[
            str | None,
            Field(description="Tag of a snapshot to start from instead of booting (much faster)."),
        ] = None,
        memory_mib: Annotated[
            int | None, Field(ge=64, le=65536, description="Guest RAM in MiB (default 256).")
        ] = None,
        vcpus: Annotated[
            int | None, Field(ge=1, le=64, description="Virtual CPUs (default 1).")
        ] = None,
        env: Env = None,
        timeout_secs: Annotated[
            int | None,
            Field(
                ge=1,
                description="Lifetime in seconds; after it the sandbox is removed (or "
                "paused, with on_expiry='pause'). Extend it with set_timeout.",
            ),
        ] = None,
        on_expiry: OnExpiryArg = None,
        metadata: Metadata = None,
    ) -> dict[str, Any]:
        """Create a sandbox: boot a fresh Linux microVM from an image (a few seconds), or
        start one from a snapshot (a fraction of a second). Returns its id and details.
        Kill it with kill_sandbox when done, or give it a lifetime."""
        try:
            sb = await AsyncSandbox.create(
                image,
                snapshot=snapshot,
                memory_mib=memory_mib,
                vcpus=vcpus,
                env=env,
                timeout=timeout_secs,
                on_expiry=on_expiry,
                metadata=metadata,
                **self._conn(),
            )
        except ZygoteError as e:
            raise _fail(e) from e
        await sb.close()
        return _dict(sb.info)

    async def run_command(
        self,
        sandbox_id: SandboxId,
        command: Annotated[str, Field(description="Shell command line, run with /bin/sh -c.")],
        cwd: Annotated[str | None, Field(description="Absolute working directory.")] = None,
        env: Env = None,
        timeout_secs: Annotated[
            float, Field(gt=0, le=3600, description="Kill the command after this many seconds.")
        ] = 60,
        stdin: Annotated[str | None, Field(description="Text fed to the command's stdin.")] = None,
    ) -> dict[str, Any]:
        """Run a shell command in a sandbox and wait for it. Returns exit_code (null when
        killed by a signal), stdout, stderr, timed_out and duration_ms. Output longer than
        50,000 characters per stream keeps its end (stdout_truncated / stderr_truncated)."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                r = await sb.commands.run(
                    command, cwd=cwd, env=env, timeout=timeout_secs, stdin=stdin
                )
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        out = _dict(r)
        out["stdout"], out["stdout_truncated"] = _tail(r.stdout, MAX_OUTPUT_CHARS)
        out["stderr"], out["stderr_truncated"] = _tail(r.stderr, MAX_OUTPUT_CHARS)
        return out

    async def write_file(
        self,
        sandbox_id: SandboxId,
        path: GuestPath,
        content: Annotated[
            str, Field(description="The file's content: text, or base64 with encoding='base64'.")
        ],
        encoding: Annotated[
            Literal["text", "base64"],
            Field(description="'text' (written as UTF-8) or 'base64' (binary)."),
        ] = "text",
        mode: Annotated[
            int | None,
            Field(ge=0, le=0o7777, description="Permission bits as a number, e.g. 493 for 0755."),
        ] = None,
    ) -> dict[str, Any]:
        """Write a file in a sandbox (replaced atomically; parent directories are created).
        Returns the path and the bytes written."""
        if encoding == "base64":
            try:
                data: bytes | str = base64.b64decode(content, validate=True)
            except binascii.Error as e:
                raise ToolError(
                    f"content is not valid base64 ({e}): encode the bytes, or pass encoding='text'"
                ) from e
        else:
            data = content
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                w = await sb.files.write(path, data, mode=mode)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return _dict(w)

    async def read_file(
        self,
        sandbox_id: SandboxId,
        path: GuestPath,
        encoding: Annotated[
            Literal["text", "base64"],
            Field(description="'text' (UTF-8, invalid bytes replaced) or 'base64' (exact bytes)."),
        ] = "text",
        max_bytes: Annotated[
            int,
            Field(
                ge=1,
                le=MAX_READ_BYTES,
                description="Return at most this many bytes (from the start).",
            ),
        ] = 1_000_000,
    ) -> dict[str, Any]:
        """Read a file from a sandbox. Returns content, encoding, size (the whole file's)
        and truncated (true when the file is longer than max_bytes)."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                data = await sb.files.read(path, format="bytes")
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        size = len(data)
        part = data[:max_bytes]
        content = (
            base64.b64encode(part).decode()
            if encoding == "base64"
            else part.decode("utf-8", "replace")
        )
        return {
            "path": path,
            "content": content,
            "encoding": encoding,
            "size": size,
            "truncated": size > max_bytes,
        }

    async def eval(
        self,
        sandbox_id: SandboxId,
        code: Annotated[
            str, Field(description="Python source. The value of a trailing expression is returned.")
        ],
    ) -> dict[str, Any]:
        """Run Python in the sandbox's warm interpreter (state persists across calls, like a
        notebook). Returns result (repr of the trailing expression), stdout, stderr, and
        error + traceback when the code raised."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                r = await sb.eval(code)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return _dict(r)

    async def branch_sandbox(
        self,
        sandbox_id: SandboxId,
        tag: Annotated[
            str | None, Field(description="Name of the snapshot (default: generated).")
        ] = None,
        mode: Mode = None,
    ) -> dict[str, Any]:
        """Snapshot a running sandbox (memory, processes, disk) under a tag; the sandbox keeps
        running. Start children from it with create_sandbox(snapshot=tag). Returns the snapshot."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                s = await sb.branch(tag, mode=mode)
            finally:
                await sb.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return _dict(s)

    async def fork_sandbox(
        self,
        sandbox_id: SandboxId,
        n: Annotated[int, Field(ge=1, le=32, description="How many children to start.")] = 1,
        mode: Mode = None,
    ) -> dict[str, Any]:
        """Fork a running sandbox into n children: each starts with the parent's exact state
        (files, processes, Python variables) and then diverges. Returns snapshot_tag (the
        intermediate snapshot) and children (their ids and details)."""
        try:
            sb = await self._sandbox(sandbox_id)
            try:
                kids = await sb.fork(n, mode=mode)
            finally:
                await sb.close()
            for k in kids:
                await k.close()
        except ZygoteError as e:
            raise _fail(e) from e
        return {
            "snapshot_tag": kids[0].info.snapshot_tag,
            "children": [_dict(k.info) for k in kids],
        }

    async def list_sandboxes(
        self,
        metadata: Annotated[
            dict[str, str] | None,
            Field(description="Only sandboxes with all these labels."),
        ] = None,
        state: Annotated[
            Literal["running", "paused", "booting", "stopping", "dead"] | None,
            Field(description="Only sandboxes in this state."),
        ] = None,
    ) -> dict[str, Any]:
        """List the sandboxes the daemon holds (all, or those with the given labels and
        state), with state, image, memory, labels, lifetime and age."""
        try:
            found = await AsyncSandbox.list(metadata=metadata, state=state, **self._conn())
            return {"sandboxes": [_dict(s) for s in found]}
        except ZygoteError as e:
            raise _fail(e) from e

    async def kill_sandbox(self, sandbox_id: SandboxId) -> dict[str, Any]:
        """Remove a sandbox: stop its VM and delete its disk. removed is false when it was
        already gone."""
        try:
            sb = await self._sandbox(sandbox_id, resume=False)
        except NotFoundError:
            return {"id": sandbox_id, "removed": False}
        except ZygoteError as e:
            raise _fail(e) from e
        try:
            removed = await sb.kill()
        except ZygoteError as e:
            raise _fail(e) from e
        finally:
            await sb.close()
        return {"id": sandbox_id, "removed": removed}

    async def create_snapshot(
        self,
        tag: Annotated[str, Field(description="Name of the snapshot.")],
        image: Annotated[str | None, Field(description="Image to boot (default 'python').")] = None,
        warmup: Annotated[
            str | None,
            Field(
                description="Python run before the snapshot, e.g. 'import json, sqlite3', "
                "so children start warm."
            ),
        ] = None,
        memory_mib: Annotated[
            int | None, Field(ge=64, le=65536, description="Guest RAM in MiB.")
        ] = None,
        warmup_cmd: Annotated[
            str | None,
            Field(
                description="Shell command started in the background before the snapshot, "
                "e.g. a database or dev server; it runs on in every child."
            ),
        ] = None,
        ready_port: Annotated[
            int | None,
            Field(ge=1, le=65535, description="Snapshot only once this guest TCP port accepts."),
        ] = None,
        ready_cmd: Annotated[
            str | None,
            Field(description="Snapshot only once this shell command exits 0 (retried)."),
        ] = None,
    ) -> dict[str, Any]:
        """Create a reusable snapshot: boot a sandbox, run warmup in its interpreter and
        warmup_cmd in the background, wait until it is ready, freeze it, remove the booted
        sandbox. Children start from it with create_sandbox(snapshot=tag)."""
        try:
            s = await AsyncSnapshot.create(
                tag,
                image=image,
                warmup=warmup,
                warmup_cmd=warmup_cmd,
                ready_port=ready_port,
                ready_cmd=ready_cmd,
                memory_mib=memory_mib,
                **self._conn(),
            )
        except ZygoteError as e:
            raise _fail(e) from e
        return _dict(s)

    async def list_snapshots(self) -> dict[str, Any]:
        """List every snapshot (tag, image, memory size, how it was taken, status)."""
        try:
            return {"snapshots": [_dict(s) for s in await AsyncSnapshot.list(**self._conn())]}
        except ZygoteError as e:
            raise _fail(e) from e

    async def wait_for_text(
        self,
        sandbox_id: SandboxId,
        text: Annotated[
            str,
            Field(
                min_length=1,
                description="Text to wait for (a Python regular expression with regex=true).",
            ),
        ],
        command: Annotated[
            str | None,
            Field(
                description="Shell command whose stdout+stderr is searched on each poll, "
                "e.g. 'curl -s localhost:8000/health'."
            ),
        ] = None,
        path: Annotated[
            str | None,
            Field(
                description="Absolute path of a file whose content is searched on each poll, "
                "e.g. a log file. A missing file counts as not yet."
            ),
        ] = None,
        timeout_secs: Annotated[
            float, Field(gt=0, le=3600, description="Give up after this many seconds.")
        ] = 30,
        interval_secs: Annotated[
            float, Field(ge=0.1, le=60, description="Seconds between polls.")
        ] = 1.0,
        regex: Annotated[bool, Field(description="Treat text as a regular expression.")] = False,
    ) -> dict[str, Any]:
        """Wait until a text appears in a command's output or in a file of a sandbox.

        Give exactly one of command or path. Every interval_secs the command is run (its
        stdout and stderr together are searched; its exit code does not matter) or the file
        is read, until the text is found or timeout_secs pass. Returns found (false on
        timeout, which is not an error), match (the matched text), polls, elapsed_ms and
        output_tail (the end of the last output seen). Errors only for a bad sandbox or
        bad arguments."""
        if (command is None) == (path is None):
            raise ToolError(
                "give exactly one of command= (a shell command to poll) or path= (a file to poll)"
            )
        try:
            pattern = re.compile(text if regex else re.escape(text))
        except re.error as e:
            raise ToolError(
                f"text is not a valid regular expression ({e}): fix it, or pass regex=false"
            ) from e
        t0 = time.monotonic()
        deadline = t0 + timeout_secs
        polls = 0
        last = ""
        try:
            sb = await self._sandbox(sandbox_id)
        except ZygoteError as e:
            raise _fail(e) from e
        try:
            while True:
                polls += 1
                if command is not None:
                    left = max(1.0, deadline - time.monotonic())
                    r = await sb.commands.run(command, timeout=left)
                    last = r.stdout + r.stderr
                else:
                    try:
                        last = await sb.files.read(path)  # type: ignore[arg-type]
                    except NotFoundError:
                        last = ""
                m = pattern.search(last)
                now = time.monotonic()
                if m or now + interval_secs > deadline:
                    return {
                        "found": bool(m),
                        "match": m.group(0) if m else None,
                        "polls": polls,
                        "elapsed_ms": round((now - t0) * 1000, 1),
                        "output_tail": last[-2000:],
                    }
                await asyncio.sleep(interval_secs)
        except ZygoteError as e:
            raise _fail(e) from e
        finally:
            await sb.close()


TOOL_NAMES = (
    "create_sandbox",
    "run_command",
    "write_file",
    "read_file",
    "eval",
    "branch_sandbox",
    "fork_sandbox",
    "list_sandboxes",
    "kill_sandbox",
    "create_snapshot",
    "list_snapshots",
    "wait_for_text",
    "start_process",
    "list_processes",
    "process_output",
    "send_stdin",
    "kill_process",
    "make_dir",
    "list_files",
    "write_files",
    "pause_sandbox",
    "resume_sandbox",
    "set_timeout",
    "expose_port",
    "set_network",
)


_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_ANNOTATIONS = {
    "list_sandboxes": _READ_ONLY,
    "list_snapshots": _READ_ONLY,
    "read_file": _READ_ONLY,
    "list_processes": _READ_ONLY,
    "process_output": _READ_ONLY,
    "list_files": _READ_ONLY,
    "wait_for_text": ToolAnnotations(read_only_hint=False, open_world_hint=False),
    "kill_sandbox": ToolAnnotations(
        destructive_hint=True, idempotent_hint=True, open_world_hint=False
    ),
    "write_file": ToolAnnotations(
        destructive_hint=True, idempotent_hint=True, open_world_hint=False
    ),
    "write_files": ToolAnnotations(
        destructive_hint=True, idempotent_hint=True, open_world_hint=False
    ),
    "kill_process": ToolAnnotations(destructive_hint=True, open_world_hint=False),
}


def build_server(endpoint: zygote.Endpoint | None = None) -> MCPServer:
    """An MCP server with every zygote tool, talking to ``endpoint`` (default: the
    environment, see :func:`zygote.resolve`)."""
    tools = Tools(endpoint or zygote.resolve())
    server = MCPServer(name="zygote", instructions=INSTRUCTIONS, version=zygote.__version__)
    for name in TOOL_NAMES:
        fn = getattr(tools, name)
        server.add_tool(
            fn,
            name=name,
            description=" ".join((fn.__doc__ or "").split()),
            annotations=_ANNOTATIONS.get(name, ToolAnnotations(open_world_hint=False)),
        )
    return server


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``zygote-mcp``: serve the tools over stdio."""
    p = argparse.ArgumentParser(
        prog="zygote-mcp",
        description="MCP server (stdio) for zygote sandboxes. The daemon is found with "
        "--socket / --url, else ZYGOTE_URL (+ ZYGOTE_TOKEN), else ZYGOTE_SOCKET, "
        f"else {zygote.DEFAULT_SOCKET}.",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--socket", help="Unix socket of the daemon")
    g.add_argument("--url", help="daemon on TCP, http://HOST:PORT (token from ZYGOTE_TOKEN)")
    a = p.parse_args(argv)
    try:
        ep = zygote.resolve(
            socket=a.socket, url=a.url, token=os.environ.get(zygote.ENV_TOKEN) or None
        )
    except zygote.ConfigError as e:
        print(f"zygote-mcp: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    build_server(ep).run("stdio")


if __name__ == "__main__":
    main()
