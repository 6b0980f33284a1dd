"""Typed views of the daemon's answers (crates/proto/src/api.rs).

Parsing ignores fields it does not know, so a newer daemon does not break an
older SDK; a missing required field is a :class:`~zygote.ProtocolError`.
"""

from __future__ import annotations

import posixpath
import stat as statmod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import IO, Any, Literal, NotRequired, TypedDict

from ._errors import ProtocolError

SandboxState = Literal["booting", "running", "paused", "stopping", "dead"]
"""Lifecycle state of a sandbox (``paused``: stored as a snapshot of itself, no VM)."""
OnExpiry = Literal["kill", "pause"]
"""What happens when a sandbox's lifetime runs out: removed, or paused."""
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
        on_expiry: ``kill`` or ``pause``: what its lifetime's end does.
        metadata: Its labels (``Sandbox.list(metadata=...)`` finds it by them).
        network: Its network when it has a card: ``address``, ``internet``,
            ``allow_out``, ``deny_out`` and exposed ``ports``.
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
    on_expiry: OnExpiry = "kill"
    metadata: dict[str, str] = field(default_factory=dict)
    network: dict[str, Any] | None = None

    @property
    def sandbox_id(self) -> str:
        """E2B's name for :attr:`id`."""
        return self.id

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
            on_expiry=d.get("on_expiry") or "kill",
            metadata=dict(d.get("metadata") or {}),
            network=d.get("network"),
        )


class SandboxList(list[SandboxInfo]):
    """What ``Sandbox.list`` returns: a list of :class:`SandboxInfo` (one page when
    ``limit`` was given) and the token of the next page.

    Attributes:
        next_token: Pass it as ``next_token=`` for the next page; ``None`` on the last.
    """

    next_token: str | None = None

    @property
    def has_next(self) -> bool:
        """Whether another page follows (E2B's paginator name)."""
        return self.next_token is not None


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
        duration_ms: Wall time in milliseconds, measured by the daemon (for a
            followed background command: since following started).
        error: E2B's field; always ``None`` here (a failure is an exception).
    """

    stdout: str
    stderr: str
    exit_code: int | None
    signal: int | None = None
    timed_out: bool = False
    duration_ms: float = 0.0
    error: str | None = None

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


class FileType(StrEnum):
    """E2B's name for an entry's kind (equal to the ``kind`` strings)."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """One entry of ``sandbox.files.list`` (and ``get_info``, ``rename``).

    Attributes:
        name: Entry name.
        path: Full guest path.
        kind: ``file``, ``dir``, ``symlink`` or ``other``.
        size: Size in bytes.
        mode: ``st_mode`` (file type and permission bits).
        modified_time: Modification time (UTC).
        symlink_target: Where a symlink points.
    """

    name: str
    path: str
    kind: EntryKind
    size: int
    mode: int | None = None
    modified_time: datetime | None = None
    symlink_target: str | None = None

    @property
    def type(self) -> FileType:
        """E2B's name for :attr:`kind`."""
        return FileType(self.kind)

    @property
    def permissions(self) -> str | None:
        """The mode as ``ls -l`` prints it, e.g. ``-rw-r--r--``."""
        return None if self.mode is None else statmod.filemode(self.mode)

    @classmethod
    def from_walk(cls, doc: Any) -> EntryInfo:
        """Parse a ``WalkEntry`` object."""
        d = _obj(doc, "a directory entry")
        w = "entry"
        return cls(
            name=_req(d, "name", w),
            path=_req(d, "path", w),
            kind=_req(d, "kind", w),
            size=_req(d, "size", w),
            mode=d.get("mode"),
            modified_time=_time(d.get("mtime")),
            symlink_target=d.get("target"),
        )

    @classmethod
    def from_stat(cls, path: str, st: FileStat) -> EntryInfo:
        """The entry of ``path`` from its :class:`FileStat`."""
        return cls(
            name=posixpath.basename(path.rstrip("/")) or "/",
            path=path,
            kind=st.kind,
            size=st.size,
            mode=st.mode,
            modified_time=_time(st.mtime),
        )


def _time(t: Any) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


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


class WriteEntry(TypedDict):
    """One file of ``sandbox.files.write_files`` (E2B's shape).

    Keys: ``path`` (absolute guest path), ``data`` (``str`` written as UTF-8,
    ``bytes``, or a binary file object, read whole), ``mode`` (optional
    permission bits, e.g. ``0o755``).
    """

    path: str
    data: str | bytes | IO[bytes]
    mode: NotRequired[int]


@dataclass(frozen=True, slots=True)
class PtySize:
    """A terminal's size.

    Attributes:
        rows: Rows (1-1000).
        cols: Columns (1-1000).
    """

    rows: int
    cols: int


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A background command or terminal (``sandbox.commands.list``).

    Attributes:
        pid: Guest pid (what ``kill``, ``send_stdin`` and ``connect`` take).
        cmd: The command line.
        tag: Its label (``warmup`` for a snapshot's warm-up server).
        pty: It runs on a terminal.
        stdin: Its stdin takes input.
        started_unix: Start time, seconds since the epoch (guest clock).
        exit_code: How it ended, once it has (``None`` while it runs or after a signal).
        signal: The signal that ended it.
        timed_out: Its ``timeout`` fired.
        running: It has not ended.
    """

    pid: int
    cmd: str
    tag: str | None
    pty: bool
    stdin: bool
    started_unix: int
    running: bool
    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False

    @classmethod
    def from_json(cls, doc: Any) -> ProcessInfo:
        """Parse a ``ProcInfo`` object."""
        d = _obj(doc, "a process")
        w = "process"
        x = d.get("exit")
        x = _obj(x, "an exit status") if x is not None else {}
        return cls(
            pid=_req(d, "pid", w),
            cmd=_req(d, "cmd", w),
            tag=d.get("tag"),
            pty=bool(d.get("pty", False)),
            stdin=bool(d.get("stdin", False)),
            started_unix=d.get("started_unix", 0),
            running=d.get("exit") is None,
            exit_code=x.get("code"),
            signal=x.get("signal"),
            timed_out=bool(x.get("timed_out", False)),
        )


class FilesystemEventType(StrEnum):
    """What happened to a watched path (E2B's names; equal to the strings)."""

    CHMOD = "chmod"
    CREATE = "create"
    REMOVE = "remove"
    RENAME = "rename"
    WRITE = "write"


@dataclass(frozen=True, slots=True)
class FilesystemEvent:
    """One event of ``sandbox.files.watch_dir``.

    Attributes:
        name: The path relative to the watched directory (E2B's field).
        type: What happened.
        path: The absolute guest path.
    """

    name: str
    type: FilesystemEventType
    path: str

    @classmethod
    def from_json(cls, doc: Any, base: str) -> FilesystemEvent:
        """Parse an ``FsEvent`` object seen under the watched directory ``base``."""
        d = _obj(doc, "a filesystem event")
        path = str(_req(d, "path", "filesystem event"))
        kind = _req(d, "kind", "filesystem event")
        try:
            t = FilesystemEventType(kind)
        except ValueError:
            raise ProtocolError(f"unknown filesystem event kind {kind!r}") from None
        root = base.rstrip("/") + "/"
        name = path[len(root) :] if path.startswith(root) else path
        return cls(name=name, type=t, path=path)


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


def entries_from_walk(doc: Any) -> list[EntryInfo]:
    """Parse a ``WalkResult`` object."""
    d = _obj(doc, "a directory walk")
    return [EntryInfo.from_walk(e) for e in _req(d, "entries", "walk")]


def write_info_from_json(doc: Any) -> WriteInfo:
    """Parse a ``WriteFileResult`` object."""
    d = _obj(doc, "a write result")
    return WriteInfo(path=_req(d, "path", "write result"), bytes=_req(d, "bytes", "write result"))
