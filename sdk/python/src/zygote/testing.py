"""A private ``zygote daemon`` for tests (the Python twin of
crates/tests/src/lib.rs).

:class:`TestDaemon` starts ``zygote daemon --socket <tmp>/d.sock --home <tmp>/home``
with ``<tmp>/home/images`` linked to ``$ZYGOTE_TEST_HOME/images`` (default
``/var/lib/zygote-test``), optionally also on TCP with a bearer token, and stops it
with SIGTERM (which makes the daemon stop every QEMU it started) and removes the
temp dir. :func:`e2e_unavailable` says why end-to-end tests cannot run here.

Environment: ``ZYGOTE_BIN`` (the ``zygote`` binary; default
``<repo>/target/release/zygote`` when run from a checkout, else ``zygote`` on PATH),
``ZYGOTE_TEST_HOME``, ``ZYGOTE_E2E=1`` (a test that cannot run is a failure).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket as socketlib
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

ENV_BIN = "ZYGOTE_BIN"
ENV_TEST_HOME = "ZYGOTE_TEST_HOME"
ENV_E2E = "ZYGOTE_E2E"
DEFAULT_TEST_HOME = "/var/lib/zygote-test"
PR_SET_PDEATHSIG = 1


def strict() -> bool:
    """True when ``ZYGOTE_E2E=1``: a test that cannot run must fail, not skip."""
    return os.environ.get(ENV_E2E) == "1"


def image_home() -> Path:
    """Where the test image was built (``$ZYGOTE_TEST_HOME``)."""
    return Path(os.environ.get(ENV_TEST_HOME) or DEFAULT_TEST_HOME)


def zygote_bin() -> Path:
    """The ``zygote`` binary the tests run."""
    env = os.environ.get(ENV_BIN)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "target" / "release" / "zygote"
        if (parent / "Cargo.toml").exists() and cand.exists():
            return cand
    found = shutil.which("zygote")
    return Path(found) if found else Path("target/release/zygote")


def e2e_unavailable() -> str | None:
    """Why end-to-end tests cannot run here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "not root (the daemon needs root to run QEMU with its memfds)"
    img = image_home() / "images" / "python" / "current"
    if not img.exists():
        return f"no image at {img} (scripts/test.sh builds it; or set {ENV_TEST_HOME})"
    b = zygote_bin()
    if not (b.is_file() and os.access(b, os.X_OK)):
        return f"no zygote binary at {b} (cargo build --release -p zygote-cli, or set {ENV_BIN})"
    return None


def _term_with_parent() -> None:
    """In the daemon's child before exec: SIGTERM it when the test process dies,
    so a killed test run does not leave the daemon and its QEMUs behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestDaemon:
    """A daemon on a private socket and home; use as a context manager.

    Attributes:
        dir: The temp dir (socket, home, log, token file).
        socket: The Unix socket path.
        url: ``http://127.0.0.1:PORT`` when started with ``tcp=True``.
        token: The bearer token when started with ``tcp=True``.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        tcp: bool = False,
        tls: bool = False,
        startup_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="zyg", dir="/tmp"))
        self.home = self.dir / "home"
        self.socket = str(self.dir / "d.sock")
        self.log_path = self.dir / "daemon.log"
        self.url: str | None = None
        self.token: str | None = None
        self.ca: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._extra = list(extra_args)
        try:
            self._start(tcp or tls, tls, startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _tls_files(self) -> list[str]:
        """A private CA (``self.ca``) and a certificate for 127.0.0.1 it signed,
        made with ``openssl``; the daemon's ``--tls-cert/--tls-key`` arguments."""
        d = self.dir

        def run(*a: str) -> None:
            subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=zygote test CA")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
            "-out", "srv.csr", "-subj", "/CN=127.0.0.1")
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "san.ext")
        self.ca = str(d / "ca.pem")
        return ["--tls-cert", str(d / "cert.pem"), "--tls-key", str(d / "key.pem")]

    def _start(self, tcp: bool, tls: bool, startup_timeout: float) -> None:
        self.home.mkdir()
        (self.home / "images").symlink_to(image_home() / "images")
        args = [str(zygote_bin()), "daemon", "--socket", self.socket, "--home", str(self.home)]
        if tcp:
            self.token = secrets.token_urlsafe(32)
            tf = self.dir / "token"
            fd = os.open(tf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.token + "\n")
            port = free_port()
            self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
            args += ["--listen", f"127.0.0.1:{port}", "--token-file", str(tf)]
            if tls:
                args += self._tls_files()
        args += self._extra
        env = dict(os.environ)
        env.setdefault("ZYGOTE_LOG", "info,zygote_engine=debug")
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                preexec_fn=_term_with_parent,
            )
        deadline = time.monotonic() + startup_timeout
        transport = httpx.HTTPTransport(uds=self.socket)
        with httpx.Client(transport=transport, base_url="http://zygote", timeout=2.0) as c:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"the daemon exited with {self._proc.returncode}:\n{self.log()}"
                    )
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the daemon did not come up in {startup_timeout} s:\n{self.log()}"
                    )
                time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        """The daemon's pid while it runs."""
        return self._proc.pid if self._proc else None

    def log(self, lines: int = 80) -> str:
        """The tail of the daemon's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the daemon, wait for it (SIGKILL and raise after ``timeout``),
        remove the temp dir."""
        p, self._proc = self._proc, None
        try:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    raise RuntimeError(
                        f"the daemon did not stop within {timeout} s of SIGTERM:\n{self.log()}"
                    ) from None
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TestDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
