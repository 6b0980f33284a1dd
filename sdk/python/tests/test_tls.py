"""``https://`` from the SDK: a daemon on its own TLS listener with a private CA
(made here with openssl), trusted through ``ZYGOTE_CA``; without it the
connection is refused. Nothing boots: listing is enough to prove the channel."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zygote import AsyncSandbox, ConfigError, Sandbox, ZygoteError
from zygote.testing import TestDaemon


@pytest.fixture(scope="module")
def tls_daemon() -> Iterator[TestDaemon]:
    d = TestDaemon(tls=True)
    try:
        yield d
    finally:
        d.stop()


def test_https_with_a_private_ca(tls_daemon: TestDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tls_daemon
    assert d.url is not None and d.url.startswith("https://") and d.ca
    monkeypatch.setenv("ZYGOTE_CA", d.ca)
    assert list(Sandbox.list(url=d.url, token=d.token)) == []
    # A wrong token is still refused over TLS.
    with pytest.raises(ZygoteError) as e:
        Sandbox.list(url=d.url, token="not-the-token-0123456789")
    assert "401" in str(e.value) or "token" in str(e.value).lower()


@pytest.mark.anyio
async def test_https_async(tls_daemon: TestDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tls_daemon
    monkeypatch.setenv("ZYGOTE_CA", d.ca or "")
    assert list(await AsyncSandbox.list(url=d.url, token=d.token)) == []


def test_an_unknown_ca_or_a_bad_ca_file_is_refused(
    tls_daemon: TestDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tls_daemon
    monkeypatch.delenv("ZYGOTE_CA", raising=False)
    with pytest.raises(ZygoteError):
        Sandbox.list(url=d.url, token=d.token)
    monkeypatch.setenv("ZYGOTE_CA", "/no/such/ca.pem")
    with pytest.raises(ConfigError, match="ZYGOTE_CA"):
        Sandbox.list(url=d.url, token=d.token)
