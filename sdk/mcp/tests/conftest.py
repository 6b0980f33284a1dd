"""Fixtures: a private daemon for the session (see zygote.testing). Without root,
an image or the binary the tests skip with the reason, unless ZYGOTE_E2E=1, where
that is a failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zygote.testing import TestDaemon, e2e_unavailable, strict


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def daemon() -> Iterator[TestDaemon]:
    why = e2e_unavailable()
    if why is not None:
        if strict():
            pytest.fail(f"ZYGOTE_E2E=1 but end-to-end tests cannot run: {why}")
        pytest.skip(f"end-to-end test: {why}")
    d = TestDaemon()
    try:
        yield d
    finally:
        d.stop()
