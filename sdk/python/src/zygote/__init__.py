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

from ._async import AsyncCommands, AsyncFiles, AsyncSandbox, AsyncSnapshot, PendingSandbox
from ._config import DEFAULT_SOCKET, ENV_SOCKET, ENV_TOKEN, ENV_URL, Endpoint, resolve
from ._errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    CommandExitError,
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
from ._models import (
    BranchMode,
    CommandResult,
    EntryInfo,
    EvalResult,
    FileStat,
    ImageInfo,
    SandboxInfo,
    SandboxState,
    SnapshotInfo,
    SnapshotStatus,
    WriteInfo,
)
from ._sync import Commands, Files, Sandbox, Snapshot

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncCommands",
    "AsyncFiles",
    "AsyncSandbox",
    "AsyncSnapshot",
    "AuthenticationError",
    "BadRequestError",
    "BranchMode",
    "CommandExitError",
    "CommandResult",
    "Commands",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "DEFAULT_SOCKET",
    "ENV_SOCKET",
    "ENV_TOKEN",
    "ENV_URL",
    "Endpoint",
    "EntryInfo",
    "EvalResult",
    "FileStat",
    "Files",
    "ForbiddenError",
    "GatewayTimeoutError",
    "ImageInfo",
    "NotFoundError",
    "NotSupportedError",
    "PayloadTooLargeError",
    "PendingSandbox",
    "ProtocolError",
    "Sandbox",
    "SandboxError",
    "SandboxInfo",
    "SandboxState",
    "ServerError",
    "Snapshot",
    "SnapshotInfo",
    "SnapshotStatus",
    "TransportError",
    "UnavailableError",
    "WriteInfo",
    "ZygoteError",
    "resolve",
]
