"""Errors raised by the SDK.

Every failure is a :class:`ZygoteError`. When the daemon answered with an error
status (its body is ``{"error": "..."}``) the exception is an :class:`ApiError`
subclass chosen by the status, carrying ``status`` and the daemon's ``message``.
"""

from __future__ import annotations

from typing import Any

import httpx


class ZygoteError(Exception):
    """Base class of every error this SDK raises."""


class ConfigError(ZygoteError, ValueError):
    """The SDK was configured with an unusable value (URL, socket, argument)."""


class ConnectError(ZygoteError):
    """No daemon answers at the endpoint."""

    def __init__(self, endpoint: str, cause: BaseException | None = None) -> None:
        self.endpoint = endpoint
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f"no zygote daemon answers at {endpoint}{detail}: start one with "
            "`zygote daemon` (as root), or point ZYGOTE_SOCKET / ZYGOTE_URL at a running one"
        )


class TransportError(ZygoteError):
    """The HTTP exchange with the daemon failed mid-way, or timed out on our side."""


class ProtocolError(ZygoteError):
    """The daemon's answer was not what the API promises."""


class ApiError(ZygoteError):
    """The daemon answered with an error status.

    Attributes:
        status: The HTTP status code (4xx or 5xx).
        message: The daemon's message (``{"error": message}``), which names the
            bad value and what to do.
    """

    status: int
    message: str

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{message} (HTTP {status})")


class BadRequestError(ApiError):
    """400: the request was malformed or a value was invalid."""


class AuthenticationError(ApiError):
    """401: missing or wrong bearer token (TCP)."""


class ForbiddenError(ApiError):
    """403: the operation is not allowed (e.g. a guest path outside the sandbox's reach)."""


class NotFoundError(ApiError):
    """404: no such sandbox, snapshot, file or route."""


class ConflictError(ApiError):
    """409: the object is in the wrong state, or the name is taken."""


class PayloadTooLargeError(ApiError):
    """413: a body or file exceeded a limit."""


class ServerError(ApiError):
    """500 and any other 5xx without a class of its own."""


class NotSupportedError(ApiError):
    """501: the daemon does not implement this (on this host)."""


class UnavailableError(ApiError):
    """503: the sandbox (or daemon) cannot take work now, e.g. it is dead or stopping."""


class GatewayTimeoutError(ApiError):
    """504: the guest did not answer in time."""


class SandboxError(ZygoteError):
    """A sandbox-side failure reported inside a successful answer.

    Raised when a child of a snapshot did not start (the daemon lists it with an
    ``error`` instead of a sandbox), or when a stream ends with an error event
    that carries no status (one with a status raises that status's
    :class:`ApiError` subclass, as the same failure outside a stream would).
    """


class CommandExitError(ZygoteError):
    """A command did not exit with 0: ``commands.run(..., check=True)``, or
    ``wait()`` on a background command's handle (as E2B's ``CommandExitException``,
    also importable under that name).

    Attributes:
        result: The :class:`~zygote.CommandResult`.
    """

    def __init__(self, result: Any) -> None:
        self.result = result
        how = (
            "timed out"
            if result.timed_out
            else f"exited with {result.exit_code}"
            if result.exit_code is not None
            else f"was killed by signal {result.signal}"
        )
        tail = result.stderr.strip()[-500:]
        super().__init__(f"the command {how}" + (f": {tail}" if tail else ""))

    @property
    def exit_code(self) -> int | None:
        """The exit code (``None`` when a signal ended the command)."""
        return self.result.exit_code

    @property
    def stdout(self) -> str:
        """What the command printed to stdout."""
        return self.result.stdout

    @property
    def stderr(self) -> str:
        """What the command printed to stderr."""
        return self.result.stderr

    @property
    def error(self) -> str | None:
        """Why it failed, in words (E2B's field)."""
        return str(self)


CommandExitException = CommandExitError
"""E2B's name for :class:`CommandExitError`."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    501: NotSupportedError,
    503: UnavailableError,
    504: GatewayTimeoutError,
}


def error_for_status(status: int, message: str) -> ApiError:
    """The :class:`ApiError` subclass for ``status`` (also for the ``status`` of
    an error event inside a stream, so a streamed failure raises the same class)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ApiError
    return cls(status, message)


def api_error(status: int, body: bytes) -> ApiError:
    """Build the :class:`ApiError` subclass for an error answer."""
    message = ""
    try:
        import json

        doc = json.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            message = doc["error"]
    except ValueError:
        pass
    if not message:
        message = body.decode("utf-8", "replace").strip() or httpx.codes.get_reason_phrase(status)
    return error_for_status(status, message)
