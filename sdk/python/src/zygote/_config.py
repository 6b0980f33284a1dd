"""Where the daemon is: arguments first, then the environment, like the CLI.

* ``url=`` (or ``ZYGOTE_URL``): a daemon on TCP, ``http://HOST:PORT`` or
  ``https://HOST:PORT``, with the bearer token from ``token=`` (or
  ``ZYGOTE_TOKEN``); ``https://`` trusts the system's roots, or only the CA in
  the PEM file ``ZYGOTE_CA`` names (a private CA).
* ``socket=`` (or ``ZYGOTE_SOCKET``): a Unix socket path, default
  ``/run/zygote/zygote.sock``.

An explicit argument beats the environment; between the two environment
variables ``ZYGOTE_URL`` wins, as in the CLI. Unlike the CLI the SDK never
starts a daemon itself.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from ._errors import ConfigError

ENV_SOCKET = "ZYGOTE_SOCKET"
"""Unix socket of the daemon."""
ENV_URL = "ZYGOTE_URL"
"""Base URL of a daemon on TCP, e.g. ``http://127.0.0.1:8889``."""
ENV_TOKEN = "ZYGOTE_TOKEN"
"""Bearer token sent with ``ZYGOTE_URL``."""
ENV_CA = "ZYGOTE_CA"
"""PEM file of the CA an ``https://`` daemon's certificate is checked against."""
DEFAULT_SOCKET = "/run/zygote/zygote.sock"
"""Socket used when nothing else is configured."""
DEFAULT_REQUEST_TIMEOUT = 600.0
"""Seconds any one API call may take (creating a sandbox under TCG takes a few)."""

_UNIX_BASE = "http://zygote"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A resolved daemon address.

    Attributes:
        socket: Unix socket path, when the daemon is reached over a socket.
        url: Base URL, when over TCP.
        token: Bearer token (TCP only).
        request_timeout: Seconds one API call may take (``None``: no limit).
        ca: PEM file of the CA an ``https://`` daemon is checked against
            (``None``: the system's roots).
    """

    socket: str | None = None
    url: str | None = None
    token: str | None = None
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT
    ca: str | None = None

    def __str__(self) -> str:
        return f"unix:{self.socket}" if self.socket is not None else str(self.url)

    @property
    def base_url(self) -> str:
        """The base URL httpx sends requests to."""
        return _UNIX_BASE if self.socket is not None else str(self.url)

    def headers(self) -> dict[str, str]:
        """Headers sent with every request (the bearer token over TCP)."""
        if self.url is not None and self.token:
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def timeout(self) -> httpx.Timeout:
        """The default httpx timeout of this endpoint."""
        return httpx.Timeout(self.request_timeout, connect=10.0)

    def tls(self) -> ssl.SSLContext:
        """How an ``https://`` daemon is checked: the system's roots, or the CA
        file (one context per CA file, made once: loading roots takes tens of
        milliseconds, and every new client needs one)."""
        try:
            return _ssl_context(self.ca)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"{ENV_CA}={self.ca!r} is not a readable PEM CA file ({e}): "
                "point it at the CA certificate that signed the daemon's --tls-cert"
            ) from e

    def sync_transport(self) -> httpx.HTTPTransport:
        """A sync transport (over the Unix socket when there is one)."""
        if self.socket is not None:
            return httpx.HTTPTransport(uds=self.socket)
        return httpx.HTTPTransport(verify=self.tls())

    def async_transport(self) -> httpx.AsyncHTTPTransport:
        """An async transport (over the Unix socket when there is one)."""
        if self.socket is not None:
            return httpx.AsyncHTTPTransport(uds=self.socket)
        return httpx.AsyncHTTPTransport(verify=self.tls())


@functools.lru_cache(maxsize=16)
def _ssl_context(ca: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


def check_url(url: str) -> str:
    """Validate a daemon base URL; returns it without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"`{url}` is not an http:// or https:// URL: pass e.g. url='http://127.0.0.1:8889' "
            f"(or set {ENV_URL})"
        )
    if not parts.hostname or parts.port is None:
        raise ConfigError(f"`{url}` needs a host and a port: pass e.g. url='http://127.0.0.1:8889'")
    if parts.query or parts.fragment:
        raise ConfigError(f"`{url}` has a query or fragment: pass only scheme://host:port")
    return url.rstrip("/")


def resolve(
    socket: str | os.PathLike[str] | None = None,
    url: str | None = None,
    token: str | None = None,
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
) -> Endpoint:
    """Resolve the endpoint from arguments, then the environment.

    Args:
        socket: Unix socket path of the daemon.
        url: Base URL of a daemon on TCP (``http://HOST:PORT``).
        token: Bearer token for ``url`` (default ``ZYGOTE_TOKEN``).
        request_timeout: Seconds one API call may take (``None``: no limit).

    Raises:
        ConfigError: both ``socket`` and ``url`` were given, or the URL is unusable.
    """
    if socket is not None and url is not None:
        raise ConfigError("pass either socket= or url=, not both")
    if request_timeout is not None and request_timeout <= 0:
        raise ConfigError(f"request_timeout={request_timeout!r} must be positive (or None)")
    if socket is not None:
        path = os.fspath(socket)
        if not path:
            raise ConfigError("socket='' is empty: pass the daemon's socket path")
        return Endpoint(socket=path, request_timeout=request_timeout)
    if url is None:
        url = os.environ.get(ENV_URL) or None
        if url is None:
            path = os.environ.get(ENV_SOCKET) or DEFAULT_SOCKET
            return Endpoint(socket=path, request_timeout=request_timeout)
    if token is None:
        token = os.environ.get(ENV_TOKEN) or None
    ca = os.environ.get(ENV_CA) or None
    return Endpoint(url=check_url(url), token=token, request_timeout=request_timeout, ca=ca)
