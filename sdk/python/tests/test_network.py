"""Networking from the SDK against a real daemon (``--network nat``): a guest
server reached through ``get_host``, the egress policy on create and on a
running sandbox. No traffic leaves the machine: the only connections are to
the exposed port on loopback."""

from __future__ import annotations

import socket
import time

import pytest

from zygote import ConfigError, Sandbox, SnapshotInfo
from zygote.testing import TestDaemon


def _get(host: str, timeout: float = 30.0) -> str:
    """GET / through ``host:port``, retrying until the guest server answers."""
    addr, port = host.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((addr, int(port)), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
            if b"200 OK" in out:
                return out.decode(errors="replace")
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer through {host}")
        time.sleep(0.2)


def test_get_host_reaches_a_guest_server_and_the_policy_changes(
    daemon: TestDaemon, warm: SnapshotInfo
) -> None:
    sb = Sandbox.create(snapshot=warm.tag, socket=daemon.socket)
    try:
        assert sb.info.network is not None and sb.info.network["address"] == "10.0.2.2"
        sb.files.write("/tmp/www/index.html", "from-the-guest")
        sb.commands.run("python3 -m http.server 8000 --directory /tmp/www", background=True)
        host = sb.get_host(8000)
        assert host.startswith("127.0.0.1:")
        assert sb.get_host(8000) == host
        assert "from-the-guest" in _get(host)
        sb.set_network(internet=False, allow_out=["198.18.0.2/32"], deny_out=["10.0.0.0/8"])
        net = sb.info.network
        assert net is not None
        assert (net["internet"], net["allow_out"], net["deny_out"]) == (
            False,
            ["198.18.0.2/32"],
            ["10.0.0.0/8"],
        )
        ports = sb.get_info().network["ports"]  # type: ignore[index]
        assert ports == [{"port": 8000, "host": host}]
    finally:
        sb.kill()
    with pytest.raises(OSError):
        socket.create_connection(tuple(host.rsplit(":", 1)), timeout=2)  # type: ignore[arg-type]


def test_bad_network_options_are_named(daemon: TestDaemon, warm: SnapshotInfo) -> None:
    with pytest.raises(ConfigError, match="allow_out"):
        Sandbox.create(snapshot=warm.tag, network={"allow_out": "1.2.3.4"}, socket=daemon.socket)
    with pytest.raises(ConfigError, match="unknown key"):
        Sandbox.create(snapshot=warm.tag, network={"alow_out": []}, socket=daemon.socket)
    sb = Sandbox.create(
        snapshot=warm.tag, allow_internet_access=False, socket=daemon.socket
    )
    try:
        assert sb.info.network is not None and sb.info.network["internet"] is False
        with pytest.raises(ConfigError, match="port"):
            sb.get_host(70000)
    finally:
        sb.kill()
