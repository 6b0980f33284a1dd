"""Fixtures: one private daemon per test session (Unix socket + TCP with a
token), one shared sandbox, booted once, for the tests that only need a
running guest, and one warm snapshot (Python warmed up and a small TCP server
started by its warm-up command) whose children start in a fraction of a
second. Without root, an image or the binary the tests skip with the reason,
unless ZYGOTE_E2E=1, where that is a failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from zygote import NotFoundError, Sandbox, Snapshot, SnapshotInfo
from zygote.testing import TestDaemon, e2e_unavailable, strict

WARM_PORT = 7777
"""Where the warm snapshot's server listens in the guest."""
# A database-like server: it answers each client with how many it has served.
WARM_SERVER = (
    'python3 -u -c "import socket; s=socket.socket(); '
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
    f"s.bind(('127.0.0.1', {WARM_PORT})); s.listen(); n=0\n"
    "while True:\n c,_=s.accept(); n+=1; c.sendall(b'pg-like %d\\n' % n); c.close()\""
)
ASK_WARM = (
    'python3 -c "import socket; '
    f"print(socket.create_connection(('127.0.0.1', {WARM_PORT})).recv(64).decode().strip())\""
)


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
    d = TestDaemon(tcp=True)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="session")
def sandbox(daemon: TestDaemon) -> Iterator[Sandbox]:
    try:
        sb = Sandbox.create(
            socket=daemon.socket,
            env={"SB_LEVEL": "from-create"},
            metadata={"suite": "py-session"},
        )
    except Exception as e:
        pytest.fail(f"create failed: {e}\n--- daemon log ---\n{daemon.log()}")
    with sb:
        yield sb


@pytest.fixture(scope="session")
def warm(daemon: TestDaemon) -> Iterator[SnapshotInfo]:
    """The snapshot ``py-warm``: ``warm`` set by Python warm-up, and the server
    above running (the snapshot was taken once its port accepted)."""
    try:
        info = Snapshot.create(
            "py-warm",
            warmup="import json\nwarm = json.dumps({'a': 1})",
            warmup_cmd=WARM_SERVER,
            ready_port=WARM_PORT,
            socket=daemon.socket,
        )
    except Exception as e:
        pytest.fail(f"Snapshot.create failed: {e}\n--- daemon log ---\n{daemon.log()}")
    yield info
    try:
        Snapshot.delete("py-warm", socket=daemon.socket)
    except NotFoundError:
        pass
