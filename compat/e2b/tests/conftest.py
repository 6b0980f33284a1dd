"""E2B's own SDK (``e2b``, ``e2b-code-interpreter`` from PyPI, unmodified)
against a private zygote daemon serving E2B's API on loopback.

One daemon per session with ``--e2b-listen`` and a key file; the two
environment variables E2B's SDKs read (``E2B_API_URL``, ``E2B_SANDBOX_URL``)
and the key (``E2B_API_KEY``) point at it. A warm snapshot ``e2b-warm``
(made with zygote's own SDK) is the template most tests start from, so a
sandbox starts copy-on-write in milliseconds instead of booting."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from zygote import Snapshot
from zygote.testing import TestDaemon, e2e_unavailable, free_port, strict

TEMPLATE = "e2b-warm"
"""The snapshot the tests start sandboxes from."""


@pytest.fixture(scope="session")
def daemon() -> Iterator[TestDaemon]:
    why = e2e_unavailable()
    if why is not None:
        if strict():
            pytest.fail(f"ZYGOTE_E2E=1 but end-to-end tests cannot run: {why}")
        pytest.skip(f"end-to-end test: {why}")
    key = "e2b_" + secrets.token_hex(20)
    port = free_port()
    keys = f"/tmp/zyg-e2b-keys-{os.getpid()}"
    fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    d = TestDaemon(extra_args=["--e2b-listen", f"127.0.0.1:{port}", "--e2b-api-keys", keys])
    url = f"http://127.0.0.1:{port}"
    os.environ.update(
        {"E2B_API_URL": url, "E2B_SANDBOX_URL": url, "E2B_API_KEY": key, "E2B_DOMAIN": "zygote.test"}
    )
    try:
        yield d
    finally:
        d.stop()
        os.unlink(keys)


@pytest.fixture(scope="session")
def template(daemon: TestDaemon) -> str:
    try:
        Snapshot.create(TEMPLATE, warmup="import json", socket=daemon.socket)
    except Exception as e:
        pytest.fail(f"Snapshot.create failed: {e}\n--- daemon log ---\n{daemon.log()}")
    return TEMPLATE


@pytest.fixture
def sbx(template: str, daemon: TestDaemon):
    from e2b import Sandbox

    try:
        sb = Sandbox.create(template=template, timeout=600, metadata={"suite": "e2b"})
    except Exception as e:
        pytest.fail(f"Sandbox.create failed: {e}\n--- daemon log ---\n{daemon.log()}")
    try:
        yield sb
    finally:
        try:
            sb.kill()
        except Exception:
            pass
