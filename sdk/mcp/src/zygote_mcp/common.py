"""What the tools share: argument types (their JSON schema and descriptions) and
the shaping of answers."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Annotated, Any, Literal

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, ConfigDict, Field

import zygote
from zygote import ZygoteError

MAX_OUTPUT_CHARS = 50_000
"""Per stream: longer command output keeps its last this many characters."""

SandboxId = Annotated[
    str, Field(description="Id of the sandbox, as create_sandbox or list_sandboxes returns it.")
]
GuestPath = Annotated[
    str, Field(description="Absolute path inside the sandbox, e.g. /root/app/main.py.")
]
Env = Annotated[
    dict[str, str] | None,
    Field(description='Extra environment variables, e.g. {"DEBUG": "1"}.'),
]
Pid = Annotated[
    int, Field(ge=1, description="Process id, as start_process or list_processes returns it.")
]
Metadata = Annotated[
    dict[str, str] | None,
    Field(description='Labels, e.g. {"task": "42"}; list_sandboxes filters on them.'),
]
OnExpiryArg = Annotated[
    Literal["kill", "pause"] | None,
    Field(description="What the end of the lifetime does: 'kill' (default) or 'pause'."),
]


class FileToWrite(BaseModel):
    """One file of write_files."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Absolute path inside the sandbox.")
    content: str = Field(description="Text, or base64 with encoding='base64'.")
    encoding: Literal["text", "base64"] = Field(
        default="text", description="'text' (written as UTF-8) or 'base64' (binary)."
    )
    mode: int | None = Field(
        default=None, ge=0, le=0o7777, description="Permission bits, e.g. 493 for 0755."
    )


Mode = Annotated[
    Literal["copy", "live"] | None,
    Field(
        description="How memory is captured: 'copy' (brief pause, copies touched RAM) or "
        "'live' (precopy while the guest runs; pause of a few ms). Default: what suits the sandbox."
    ),
]


def _dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def _tail(s: str, limit: int) -> tuple[str, bool]:
    if len(s) <= limit:
        return s, False
    return s[-limit:], True


def _fail(e: ZygoteError) -> ToolError:
    return ToolError(str(e))


def _b64(content: str, what: str) -> bytes:
    try:
        return base64.b64decode(content, validate=True)
    except binascii.Error as e:
        raise ToolError(
            f"content of {what} is not valid base64 ({e}): encode the bytes, "
            "or pass encoding='text'"
        ) from e


def _entry(e: zygote.EntryInfo) -> dict[str, Any]:
    mtime = e.modified_time
    return {
        "path": e.path,
        "name": e.name,
        "kind": e.kind,
        "size": e.size,
        "mode": e.mode,
        "mtime": int(mtime.timestamp()) if mtime is not None else None,
        "symlink_target": e.symlink_target,
    }
