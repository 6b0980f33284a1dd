"""Typed views of the daemon's answers (crates/proto/src/api.rs).

Parsing ignores fields it does not know, so a newer daemon does not break an
older SDK; a missing required field is a :class:`~zygote.ProtocolError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import ProtocolError

SandboxState = Literal["booting", "running", "stopping", "dead"]
"""Lifecycle state of a sandbox."""
BranchMode = Literal["copy", "live"]
"""How a branch captures memory: ``copy`` (stop, copy touched RAM, resume) or
``live`` (precopy while the guest runs; pause of a few ms)."""
SnapshotStatus = Literal["writing", "ready", "failed"]
"""Persistence state of a snapshot."""
EntryKind = Literal["file", "dir", "symlink", "other"]
"""Kind of a directory entry."""


def _obj(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ProtocolError(f"expected a JSON object for {what}, got {type(doc).__name__}")
    return doc


def _req(doc: dict[str, Any], key: str, what: str) -> Any:
    try:
        return doc[key]
    except KeyError:
        raise ProtocolError(f"the daemon's {what} has no `{key}`: {doc!r}") from None


@dataclass(frozen=True, slots=True)
class SandboxInfo:
    """A sandbox as the daemon shows it (``GET /v1/sandboxes/{id}``).

    Attributes:
        id: Random, unguessable id.
        image: Image name.
        state: ``booting``, ``running``, ``stopping`` or ``dead``.
        reason: Why it is dead, when it is.
        memory_mib: Guest RAM in MiB.
        vcpus: Virtual CPUs.
        accel: ``tcg`` or ``kvm``.
        pid: QEMU's pid on the host.
        created_at_unix: Creation time (seconds since the epoch).
        boot_ms: Milliseconds from QEMU start to the agent's answer.
        expires_at_unix: When the daemon removes it (its ``timeout``).
        snapshot_tag: The snapshot it was started from (children).
        memory: ``own`` or ``cow`` (copy-on-write over a snapshot).
    """

    id: str
    image: str
    state: SandboxState
    memory_mib: int
    vcpus: int
    accel: str
    created_at_unix: int
    reason: str | None = None
    pid: int | None = None
    boot_ms: int | None = None
    expires_at_unix: int | None = None
    snapshot_tag: str | None = None
    memory: str | None = None

    @classmethod
    def from_json(cls, doc: Any) -> SandboxInfo:
        """Parse a ``SandboxInfo`` object."""
        d = _obj(doc, "a sandbox")
        w = "sandbox"
        return cls(
            id=_req(d, "id", w),
            image=_req(d, "image", w),
            state=_req(d, "state", w),
            memory_mib=_req(d, "memory_mib", w),
            vcpus=_req(d, "vcpus", w),
            accel=_req(d, "accel", w),
            created_at_unix=_req(d, "created_at_unix", w),
            reason=d.get("reason"),
            pid=d.get("pid"),
            boot_ms=d.get("boot_ms"),
            expires_at_unix=d.get("expires_at_unix"),
            snapshot_tag=d.get("snapshot_tag"),
            memory=d.get("memory"),
        )


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A snapshot (``GET /v1/snapshots/{tag}``): frozen RAM, device state and disk.

    Attributes:
        tag: Its name.
        image: Image the lineage booted from.
        branched_from: Sandbox id it was taken from.
        mode: ``copy`` or ``live``.
        status: ``writing`` (``memory.bin`` still being written), ``ready`` or ``failed``.
        memory_mib: Guest RAM in MiB (children get the same).
        vcpus: vCPUs.
        cpu: CPU model.
        accel: Accelerator.
        hugepages: Memory is hugetlb-backed.
        pause_ms: How long the parent was paused (STOP to RESUME).
        copy_ms: Time spent copying RAM inside the pause.
        memory_bytes: Guest RAM bytes captured.
        vmstate_bytes: Device-state bytes.
        created_at_unix: Creation time.
        warning: A fallback or persistence problem worth knowing.
    """

    tag: str
    image: str
    mode: BranchMode
    status: SnapshotStatus
    memory_mib: int
    vcpus: int
    cpu: str
    accel: str
    hugepages: bool
    memory_bytes: int
    vmstate_bytes: int
    created_at_unix: int
    branched_from: str | None = None
    pause_ms: float | None = None
    copy_ms: float | None = None
    warning: str | None = None

    @classmethod
    def from_json(cls, doc: Any) -> SnapshotInfo:
        """Parse a ``SnapshotInfo`` object."""
        d = _obj(doc, "a snapshot")
        w = "snapshot"
        return cls(
            tag=_req(d, "tag", w),
            image=_req(d, "image", w),
            mode=_req(d, "mode", w),
            status=_req(d, "status", w),
            memory_mib=_req(d, "memory_mib", w),
            vcpus=_req(d, "vcpus", w),
            cpu=_req(d, "cpu", w),
            accel=_req(d, "accel", w),
            hugepages=_req(d, "hugepages", w),
            memory_bytes=_req(d, "memory_bytes", w),
            vmstate_bytes=_req(d, "vmstate_bytes", w),
            created_at_unix=_req(d, "created_at_unix", w),
            branched_from=d.get("branched_from"),
            pause_ms=d.get("pause_ms"),
            copy_ms=d.get("copy_ms"),
            warning=d.get("warning"),
        )


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The outcome of ``sandbox.commands.run``.

    Attributes:
        stdout: Standard output (UTF-8; invalid bytes replaced).
        stderr: Standard error (UTF-8; invalid bytes replaced).
        exit_code: Exit code; ``None`` when a signal ended the process.
        signal: The signal that ended the process, if one did.
        timed_out: The command's ``timeout`` fired (the process group was killed).
        duration_ms: Wall time in milliseconds, measured by the daemon.
    """

    stdout: str
    stderr: str
    exit_code: int | None
    signal: int | None = None
    timed_out: bool = False
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the command exited with 0."""
        return self.exit_code == 0

    @classmethod
    def from_json(cls, doc: Any) -> CommandResult:
        """Parse an ``ExecResult`` object."""
        d = _obj(doc, "an exec result")
        w = "exec result"
        return cls(
            stdout=_req(d, "stdout", w),
            stderr=_req(d, "stderr", w),
            exit_code=d.get("exit_code"),
            signal=d.get("signal"),
            timed_out=bool(d.get("timed_out", False)),
            duration_ms=float(d.get("duration_ms", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class EvalResult:
    """The outcome of ``sandbox.eval`` in the sandbox's warm Python interpreter.

    Attributes:
        result: ``repr`` of the trailing expression, when there was one and it was not None.
        error: The exception line (``ValueError: ...``) when the code raised.
        traceback: The formatted traceback when the code raised.
        stdout: What the code printed.
        stderr: What the code wrote to stderr.
    """

    result: str | None
    error: str | None
    traceback: str | None
    stdout: str
    stderr: str

    @classmethod
    def from_json(cls, doc: Any) -> EvalResult:
        """Parse an ``EvalResult`` object."""
        d = _obj(doc, "an eval result")
        return cls(
            result=d.get("result"),
            error=d.get("error"),
            traceback=d.get("traceback"),
            stdout=d.get("stdout", ""),
            stderr=d.get("stderr", ""),
        )


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """One entry of ``sandbox.files.list``.

    Attributes:
        name: Entry name.
        path: Full guest path (the listed directory joined with ``name``).
        kind: ``file``, ``dir``, ``symlink`` or ``other``.
        size: Size in bytes.
    """

    name: str
    path: str
    kind: EntryKind
    size: int


@dataclass(frozen=True, slots=True)
class FileStat:
    """``sandbox.files.stat``.

    Attributes:
        size: Size in bytes.
        mode: ``st_mode`` (permission bits and file type).
        kind: ``file``, ``dir``, ``symlink`` or ``other``.
        mtime: Modification time, seconds since the epoch.
    """

    size: int
    mode: int
    kind: EntryKind
    mtime: int

    @classmethod
    def from_json(cls, doc: Any) -> FileStat:
        """Parse a ``FileStat`` object."""
        d = _obj(doc, "a file stat")
        w = "file stat"
        return cls(
            size=_req(d, "size", w),
            mode=_req(d, "mode", w),
            kind=_req(d, "kind", w),
            mtime=_req(d, "mtime", w),
        )


@dataclass(frozen=True, slots=True)
class WriteInfo:
    """Answer of ``sandbox.files.write``.

    Attributes:
        path: Guest path written.
        bytes: Bytes written.
    """

    path: str
    bytes: int


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """An image the daemon can boot (``GET /v1/images``).

    Attributes:
        name: Image name.
        id: Content hash of this generation.
        kernel_version: Guest kernel version.
        release: Debian release.
        rootfs_bytes: Root filesystem size in bytes.
        created_unix: Build time, seconds since the epoch.
        extra: Fields this SDK does not know yet.
    """

    name: str
    id: str
    kernel_version: str
    release: str
    rootfs_bytes: int
    created_unix: int
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: Any) -> ImageInfo:
        """Parse an ``ImageSummary`` object."""
        d = _obj(doc, "an image")
        w = "image"
        keys = ("name", "id", "kernel_version", "release", "rootfs_bytes", "created_unix")
        return cls(
            name=_req(d, "name", w),
            id=_req(d, "id", w),
            kernel_version=_req(d, "kernel_version", w),
            release=_req(d, "release", w),
            rootfs_bytes=_req(d, "rootfs_bytes", w),
            created_unix=_req(d, "created_unix", w),
            extra={k: v for k, v in d.items() if k not in keys},
        )


def entries_from_json(doc: Any) -> list[EntryInfo]:
    """Parse a ``ListResult`` object into entries with full paths."""
    d = _obj(doc, "a directory listing")
    base = str(_req(d, "path", "listing"))
    out = []
    for e in _req(d, "entries", "listing"):
        e = _obj(e, "a directory entry")
        name = _req(e, "name", "entry")
        path = base.rstrip("/") + "/" + name if base != "/" else "/" + name
        out.append(
            EntryInfo(
                name=name, path=path, kind=_req(e, "kind", "entry"), size=_req(e, "size", "entry")
            )
        )
    return out


def write_info_from_json(doc: Any) -> WriteInfo:
    """Parse a ``WriteFileResult`` object."""
    d = _obj(doc, "a write result")
    return WriteInfo(path=_req(d, "path", "write result"), bytes=_req(d, "bytes", "write result"))
