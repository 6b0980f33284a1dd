"""Python SDK for zygote: Linux microVM sandboxes that boot, run, branch and fork.

Sync::

    from zygote import Sandbox

    with Sandbox.create(memory_mib=512) as sb:
        r = sb.commands.run("echo hi; echo oops >&2; exit 3")
        print(r.stdout, r.stderr, r.exit_code)

Async::

    from zygote import AsyncSandbox

    async with AsyncSandbox.create() as sb:
        print((await sb.eval("6 * 7")).result)

The daemon is found like the CLI finds it: ``socket=`` / ``url=`` + ``token=``
arguments, else ``ZYGOTE_URL`` (+ ``ZYGOTE_TOKEN``), else ``ZYGOTE_SOCKET``,
else ``/run/zygote/zygote.sock``.
"""

from ._async import AsyncSandbox, AsyncSnapshot, PendingSandbox
from ._commands_async import AsyncCommands, AsyncPty
from ._commands_sync import Commands, Pty
from ._config import DEFAULT_SOCKET, ENV_SOCKET, ENV_TOKEN, ENV_URL, Endpoint, resolve
from ._errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    CommandExitError,
    CommandExitException,
    ConfigError,
    ConflictError,
    ConnectError,
    ForbiddenError,
    GatewayTimeoutError,
    NotFoundError,
    NotSupportedError,
    PayloadTooLargeError,
    ProtocolError,
    SandboxError,
    ServerError,
    TransportError,
    UnavailableError,
    ZygoteError,
)
from ._files_async import AsyncFiles
from ._files_sync import Files
from ._handles import AsyncCommandHandle, CommandHandle
from ._models import (
    BranchMode,
    CommandResult,
    EntryInfo,
    EvalResult,
    FileStat,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    ImageInfo,
    OnExpiry,
    ProcessInfo,
    PtySize,
    SandboxInfo,
    SandboxList,
    SandboxState,
    SnapshotInfo,
    SnapshotStatus,
    WriteEntry,
    WriteInfo,
)
from ._sync import Sandbox, Snapshot
from ._watch import AsyncWatchHandle, WatchHandle

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncCommandHandle",
    "AsyncCommands",
    "AsyncFiles",
    "AsyncPty",
    "AsyncSandbox",
    "AsyncSnapshot",
    "AsyncWatchHandle",
    "AuthenticationError",
    "BadRequestError",
    "BranchMode",
    "CommandExitError",
    "CommandExitException",
    "CommandHandle",
    "CommandResult",
    "Commands",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "DEFAULT_SOCKET",
    "Endpoint",
    "EntryInfo",
    "ENV_SOCKET",
    "ENV_TOKEN",
    "ENV_URL",
    "EvalResult",
    "Files",
    "FileStat",
    "FilesystemEvent",
    "FilesystemEventType",
    "FileType",
    "ForbiddenError",
    "GatewayTimeoutError",
    "ImageInfo",
    "NotFoundError",
    "NotSupportedError",
    "OnExpiry",
    "PayloadTooLargeError",
    "PendingSandbox",
    "ProcessInfo",
    "ProtocolError",
    "Pty",
    "PtySize",
    "resolve",
    "Sandbox",
    "SandboxError",
    "SandboxInfo",
    "SandboxList",
    "SandboxState",
    "ServerError",
    "Snapshot",
    "SnapshotInfo",
    "SnapshotStatus",
    "TransportError",
    "UnavailableError",
    "WatchHandle",
    "WriteEntry",
    "WriteInfo",
    "ZygoteError",
]
