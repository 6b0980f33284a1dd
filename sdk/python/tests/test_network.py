"""Networking and volumes from the SDK against a real daemon (``--network nat``): a guest
server reached through ``get_host``, the egress policy on create and on a
running sandbox. No traffic leaves the machine: the only connections are to
the exposed port on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
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


def test_a_volume_outlives_the_sandbox_that_wrote_it(
    daemon: TestDaemon, warm: SnapshotInfo
) -> None:
    from zygote.testing import zygote_bin

    name = f"pyvol{os.getpid()}"
    subprocess.run(
        [str(zygote_bin()), "volume", "create", name, "--size", "32M", "--socket", daemon.socket],
        check=True,
        capture_output=True,
    )
    try:
        vol = [{"name": name, "path": "/data"}]
        a = Sandbox.create(snapshot=warm.tag, volumes=vol, socket=daemon.socket)
        try:
            a.files.write("/data/note.txt", "kept")
            a.commands.run("sync")
        finally:
            a.kill()
        b = Sandbox.create(
            snapshot=warm.tag,
            volumes=[{"name": name, "path": "/mnt/v", "read_only": True}],
            socket=daemon.socket,
        )
        try:
            assert b.files.read("/mnt/v/note.txt") == "kept"
        finally:
            b.kill()
        with pytest.raises(ConfigError, match="exactly one of name and host_path"):
            Sandbox.create(snapshot=warm.tag, volumes=[{"path": "/x"}], socket=daemon.socket)
    finally:
        subprocess.run(
            [str(zygote_bin()), "volume", "rm", name, "--socket", daemon.socket],
            capture_output=True,
        )
