"""Sending a :class:`~zygote._api.Call` over httpx (sync and async) and turning
failures into the SDK's typed errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from ._api import Call, UseDefault
from ._config import Endpoint
from ._errors import ConnectError, ProtocolError, TransportError, api_error


def _timeout(ep: Endpoint, call: Call) -> httpx.Timeout:
    if call.timeout is UseDefault:
        return ep.timeout()
    t = call.timeout
    if t is not None and ep.request_timeout is not None:
        t = max(t, ep.request_timeout)
    return httpx.Timeout(t, connect=10.0)


def _wrap(ep: Endpoint, call: Call, e: httpx.HTTPError) -> Exception:
    if isinstance(e, httpx.ConnectError):
        return ConnectError(str(ep), e)
    if isinstance(e, httpx.TimeoutException):
        return TransportError(
            f"{call.method} {call.path} at {ep} got no answer in time ({type(e).__name__}): "
            "raise request_timeout= if the operation is legitimately slow"
        )
    return TransportError(f"{call.method} {call.path} at {ep} failed: {e}")


def _json(resp: httpx.Response, call: Call) -> Any:
    try:
        return resp.json()
    except ValueError as e:
        raise ProtocolError(f"{call.method} {call.path}: the answer is not JSON: {e}") from None


class SyncTransport:
    """One httpx.Client bound to an endpoint."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._http = self._open()

    def _open(self) -> httpx.Client:
        ep = self.endpoint
        return httpx.Client(
            base_url=ep.base_url,
            transport=ep.sync_transport(),
            headers=ep.headers(),
            timeout=ep.timeout(),
        )

    def _live(self) -> httpx.Client:
        """The client, reopened if :meth:`close` closed it."""
        if self._http.is_closed:
            self._http = self._open()
        return self._http

    def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        self._http.close()

    def _build(self, call: Call) -> httpx.Request:
        return self._live().build_request(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            content=call.content,
            headers=call.headers or None,
            timeout=_timeout(self.endpoint, call),
        )

    def send(self, call: Call) -> httpx.Response:
        """Send and read the whole answer; error statuses raise :class:`ApiError`."""
        try:
            resp = self._live().send(self._build(call))
        except httpx.HTTPError as e:
            raise _wrap(self.endpoint, call, e) from e
        if resp.is_error:
            raise api_error(resp.status_code, resp.content)
        return resp

    def json(self, call: Call) -> Any:
        """Send and decode the JSON answer."""
        return _json(self.send(call), call)

    def open_stream(self, call: Call) -> httpx.Response:
        """Send and return the response with its body unread, for a caller that
        keeps reading it beyond one block (a background command's handle, a
        watch); the caller closes it. Error statuses raise."""
        try:
            resp = self._live().send(self._build(call), stream=True)
        except httpx.HTTPError as e:
            raise _wrap(self.endpoint, call, e) from e
        if resp.is_error:
            try:
                body = resp.read()
            except httpx.HTTPError:
                body = b""
            finally:
                resp.close()
            raise api_error(resp.status_code, body)
        return resp

    def wrap(self, call: Call, e: httpx.HTTPError) -> Exception:
        """The SDK's error for an httpx failure while reading ``call``'s answer."""
        return _wrap(self.endpoint, call, e)

    @contextlib.contextmanager
    def stream(self, call: Call) -> Iterator[httpx.Response]:
        """Send and yield the response with its body unread (error statuses raise)."""
        try:
            resp = self._live().send(self._build(call), stream=True)
        except httpx.HTTPError as e:
            raise _wrap(self.endpoint, call, e) from e
        try:
            if resp.is_error:
                raise api_error(resp.status_code, resp.read())
            yield resp
        except httpx.HTTPError as e:
            raise _wrap(self.endpoint, call, e) from e
        finally:
            resp.close()


class AsyncTransport:
    """One httpx.AsyncClient bound to an endpoint."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._http = self._open()

    def _open(self) -> httpx.AsyncClient:
        ep = self.endpoint
        return httpx.AsyncClient(
            base_url=ep.base_url,
            transport=ep.async_transport(),
            headers=ep.headers(),
            timeout=ep.timeout(),
        )

    def _live(self) -> httpx.AsyncClient:
        """The client, reopened if :meth:`close` closed it."""
        if self._http.is_closed:
            self._http = self._open()
        return self._http

    async def close(self) -> None:
        """Close the connection pool (a later call opens a new one)."""
        await self._http.aclose()

    def _build(self, call: Call) -> httpx.Request:
        content: bytes | AsyncIterator[bytes] | None
        if call.content is None or isinstance(call.content, bytes):
            content = call.content
        else:
            content = _aiter(call.content)
        return self._live().build_request(
            call.method,
            call.path,
            params=call.params,
            json=call.json,
            content=content,
            headers=call.headers or None,
            timeout=_timeout(self.endpoint, call),
        )

    async def send(self, call: Call) -> httpx.Response:
        """Send and read the whole answer; error statuses raise :class:`ApiError`."""
        try:
            resp = await self._live().send(self._build(call))
        except httpx.HTTPError as e:
            raise _wrap(self.endpoint, call, e) from e
        if resp.is_error:
            raise api_error(resp.status_code, resp.content)
        return resp

    async def json(self, call: Call) -> Any:
        """Send and decode the JSON answer."""
        return _json(await self.send(call), call)

    async def open_stream(self, call: Call) -> httpx.Response:
        """Send and return the response with its body unread, for a caller that
        keeps reading it beyond one block (a background command's handle, a
        watch); the caller closes it. Error statuses raise."""
        try:
            resp = await self._live().send(self._build(call), stream=True)
        except httpx.HTTPError as e:
            raise _wrap(self.endpoint, call, e) from e
        if resp.is_error:
            try:
                body = await resp.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await resp.aclose()
            raise api_error(resp.status_code, body)
        return resp

    def wrap(self, call: Call, e: httpx.HTTPError) -> Exception:
        """The SDK's error for an httpx failure while reading ``call``'s answer."""
        return _wrap(self.endpoint, call, e)

    @contextlib.asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[httpx.Response]:
        """Send and yield the response with its body unread (error statuses raise)."""
        try:
            resp = await self._live().send(self._build(call), stream=True)
        except httpx.HTTPError as e:
            raise _wrap(self.endpoint, call, e) from e
        try:
            if resp.is_error:
                raise api_error(resp.status_code, await resp.aread())
            yield resp
        except httpx.HTTPError as e:
            raise _wrap(self.endpoint, call, e) from e
        finally:
            await resp.aclose()


async def _aiter(it: Any) -> AsyncIterator[bytes]:
    if hasattr(it, "__aiter__"):
        async for b in it:
            yield b
    else:
        for b in it:
            yield b
