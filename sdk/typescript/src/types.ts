/**
 * The public data types (camelCase) and their translation from the daemon's
 * JSON (snake_case, crates/proto/src/api.rs).
 *
 * @module
 */

/** Lifecycle state of a sandbox (`paused`: stored as a snapshot of itself, no VM). */
export type SandboxState = "booting" | "running" | "paused" | "stopping" | "dead";

/** What happens when a sandbox's lifetime runs out: it is removed, or paused. */
export type OnExpiry = "kill" | "pause";

/** How a branch captures memory: `copy` (stop, copy RAM, resume) or `live` (precopy, ~10-20 ms pause). */
export type BranchMode = "copy" | "live";

/** Persistence state of a snapshot. */
export type SnapshotStatus = "writing" | "ready" | "failed";

/** A sandbox as the daemon shows it. */
export interface SandboxInfo {
  /** Random, unguessable id. */
  id: string;
  /** Image name. */
  image: string;
  /** Lifecycle state. */
  state: SandboxState;
  /** Why it is dead, when it is. */
  reason: string | null;
  /** Guest RAM in MiB. */
  memoryMib: number;
  /** Virtual CPUs. */
  vcpus: number;
  /** Accelerator (`tcg` or `kvm`). */
  accel: string;
  /** QEMU's pid. */
  pid: number | null;
  /** Creation time, seconds since the Unix epoch. */
  createdAtUnix: number;
  /** Milliseconds from QEMU start to the agent's answer. */
  bootMs: number | null;
  /** When the daemon removes the sandbox, seconds since the Unix epoch. */
  expiresAtUnix: number | null;
  /** The snapshot it was spawned from. */
  snapshotTag: string | null;
  /** Guest memory: `own` or `cow` (copy-on-write over a snapshot). */
  memory: string | null;
  /** What the end of its lifetime does. */
  onExpiry: OnExpiry;
  /** Its labels (`Sandbox.list({ metadata })` finds it by them). */
  metadata: Record<string, string>;
  /** Its network when it has a card (the daemon's `--network nat`). */
  network: NetworkInfo | null;
  /** E2B's name for {@link id}. */
  sandboxId: string;
}

/** A sandbox's network. */
export interface NetworkInfo {
  /** The guest's address (the same in every sandbox, each in its own namespace). */
  address: string;
  /** Everything not denied is reachable. */
  internet: boolean;
  /** IPv4 CIDRs reachable even without `internet`. */
  allowOut: string[];
  /** IPv4 CIDRs never reachable (wins over `allowOut`). */
  denyOut: string[];
  /** Exposed guest ports and the `host:port` that reaches each. */
  ports: { port: number; host: string }[];
}

/**
 * What `Sandbox.list` returns: the sandboxes (one page when `limit` was
 * given) and the token of the next page.
 */
export type SandboxList = SandboxInfo[] & {
  /** Pass it as `nextToken` for the next page; `null` on the last. */
  readonly nextToken: string | null;
  /** Whether another page follows (E2B's paginator name). */
  readonly hasNext: boolean;
};

/** A snapshot as the daemon shows it. */
export interface SnapshotInfo {
  /** Tag. */
  tag: string;
  /** Image the lineage booted from. */
  image: string;
  /** Sandbox it was branched from. */
  branchedFrom: string | null;
  /** Capture mode. */
  mode: BranchMode;
  /** Persistence state (`writing` while `memory.bin` goes to disk). */
  status: SnapshotStatus;
  /** Guest RAM in MiB (children have the same). */
  memoryMib: number;
  /** Virtual CPUs. */
  vcpus: number;
  /** CPU model. */
  cpu: string;
  /** Accelerator. */
  accel: string;
  /** Memory is hugetlb-backed. */
  hugepages: boolean;
  /** How long the parent was paused, in ms. */
  pauseMs: number | null;
  /** Time spent copying RAM inside the pause, in ms. */
  copyMs: number | null;
  /** Guest RAM bytes captured. */
  memoryBytes: number;
  /** Device-state bytes. */
  vmstateBytes: number;
  /** Creation time, seconds since the Unix epoch. */
  createdAtUnix: number;
  /** A fallback or persistence problem worth knowing. */
  warning: string | null;
}

/** What `sandbox.eval` returns: Python evaluated in the sandbox's warm interpreter. */
export interface EvalResult {
  /** `repr` of the trailing expression, when there was one and it was not `None`. */
  result: string | null;
  /** The exception line (`ValueError: ...`) when the code raised. */
  error: string | null;
  /** The formatted traceback when the code raised. */
  traceback: string | null;
  /** What the code printed to stdout. */
  stdout: string;
  /** What the code printed to stderr. */
  stderr: string;
}

/** The outcome of `sandbox.commands.run`. */
export interface CommandResult {
  /** Standard output (UTF-8; invalid bytes replaced). */
  stdout: string;
  /** Standard error (UTF-8; invalid bytes replaced). */
  stderr: string;
  /** Exit code; `null` when a signal ended the process. */
  exitCode: number | null;
  /** The signal that ended the process, if one did. */
  signal: number | null;
  /** The command's `timeoutMs` ran out and its process group was killed. */
  timedOut: boolean;
  /** Wall time in milliseconds, as the daemon measured it (a followed background command: since following started). */
  durationMs: number;
  /** E2B's field; always undefined here (a failure is an error). */
  error?: string;
}

/** Kind of a directory entry. */
export type EntryKind = "file" | "dir" | "symlink" | "other";

/** One entry of `sandbox.files.list` (and `getInfo`, `rename`). */
export interface EntryInfo {
  /** Entry name. */
  name: string;
  /** Absolute guest path. */
  path: string;
  /** `file`, `dir`, `symlink` or `other`. */
  kind: EntryKind;
  /** E2B's name for {@link kind}. */
  type: EntryKind;
  /** Size in bytes. */
  size: number;
  /** `st_mode`: file type and permission bits. */
  mode: number;
  /** Modification time. */
  modifiedTime: Date;
  /** Where a symlink points. */
  symlinkTarget?: string;
}

/** A terminal's size. */
export interface PtySize {
  /** Rows (1-1000). */
  rows: number;
  /** Columns (1-1000). */
  cols: number;
}

/** A background command or terminal, as `sandbox.commands.list()` shows it. */
export interface ProcessInfo {
  /** Guest pid (what `kill`, `sendStdin` and `connect` take). */
  pid: number;
  /** The command line. */
  cmd: string;
  /** Its label (`warmup` for a snapshot's warm-up server). */
  tag: string | null;
  /** It runs on a terminal. */
  pty: boolean;
  /** Its stdin takes input. */
  stdin: boolean;
  /** Start time, seconds since the Unix epoch (guest clock). */
  startedUnix: number;
  /** It has not ended. */
  running: boolean;
  /** Its exit code once it ended (`null` while it runs or after a signal). */
  exitCode: number | null;
  /** The signal that ended it. */
  signal: number | null;
}

/** What happened to a watched path (E2B's names). */
export enum FilesystemEventType {
  CHMOD = "chmod",
  CREATE = "create",
  REMOVE = "remove",
  RENAME = "rename",
  WRITE = "write",
}

/** One event of `sandbox.files.watchDir`. */
export interface FilesystemEvent {
  /** The path relative to the watched directory (E2B's field). */
  name: string;
  /** What happened. */
  type: FilesystemEventType;
  /** The absolute guest path. */
  path: string;
}

/** One file of `sandbox.files.write([...])` / `writeFiles`. */
export interface WriteEntry {
  /** Absolute guest path (parents are created). */
  path: string;
  /** Text (written as UTF-8) or bytes. */
  data: string | Uint8Array | ArrayBuffer;
  /** Permission bits, e.g. `0o755`. */
  mode?: number;
}

/** What `sandbox.files.stat` returns. */
export interface FileStat {
  /** Size in bytes. */
  size: number;
  /** Permission bits and file type (`st_mode`). */
  mode: number;
  /** `file`, `dir`, `symlink` or `other`. */
  kind: EntryKind;
  /** Modification time, seconds since the Unix epoch. */
  mtime: number;
}

/** What `sandbox.files.write` returns. */
export interface WriteInfo {
  /** Guest path written. */
  path: string;
  /** Bytes written. */
  bytes: number;
}

/** `GET /version`. */
export interface VersionInfo {
  /** zygote version. */
  version: string;
  /** API version (`v1`). */
  api: string;
  /** Agent protocol version. */
  agentProtocol: number;
  /** QEMU version in use. */
  qemu: string;
  /** Accelerator in use. */
  accel: string;
}

/** An image the daemon can boot. */
export interface ImageInfo {
  /** Image name. */
  name: string;
  /** Content hash of this generation. */
  id: string;
  /** Guest kernel version. */
  kernelVersion: string;
  /** Debian release. */
  release: string;
  /** Root filesystem size in bytes. */
  rootfsBytes: number;
  /** Build time, seconds since the Unix epoch. */
  createdUnix: number;
}

// ---- wire forms (snake_case) and their translation ----

/** @internal */
export interface WireSandboxInfo {
  id: string;
  image: string;
  state: SandboxState;
  reason?: string | null;
  memory_mib: number;
  vcpus: number;
  accel: string;
  pid?: number | null;
  created_at_unix: number;
  boot_ms?: number | null;
  expires_at_unix?: number | null;
  snapshot_tag?: string | null;
  memory?: string | null;
  on_expiry?: OnExpiry;
  metadata?: Record<string, string>;
  network?: { address: string; internet: boolean; allow_out?: string[]; deny_out?: string[]; ports?: { port: number; host: string }[] } | null;
}

/** @internal */
export interface WireProcInfo {
  pid: number;
  cmd: string;
  tag?: string | null;
  pty: boolean;
  stdin: boolean;
  started_unix: number;
  exit?: { code: number | null; signal: number | null; timed_out: boolean } | null;
}

/** @internal */
export interface WireWalkEntry {
  path: string;
  name: string;
  kind: EntryKind;
  size: number;
  mode: number;
  mtime: number;
  target?: string | null;
}

/** @internal */
export interface WireSnapshotInfo {
  tag: string;
  image: string;
  branched_from?: string | null;
  mode: BranchMode;
  status: SnapshotStatus;
  memory_mib: number;
  vcpus: number;
  cpu: string;
  accel: string;
  hugepages: boolean;
  pause_ms?: number | null;
  copy_ms?: number | null;
  memory_bytes: number;
  vmstate_bytes: number;
  created_at_unix: number;
  warning?: string | null;
}

/** @internal */
export interface WireSpawnResult {
  sandbox?: WireSandboxInfo | null;
  error?: string | null;
  running_ms?: number | null;
  ready_ms?: number | null;
}

/** @internal */
export function sandboxInfo(w: WireSandboxInfo): SandboxInfo {
  return {
    id: w.id,
    image: w.image,
    state: w.state,
    reason: w.reason ?? null,
    memoryMib: w.memory_mib,
    vcpus: w.vcpus,
    accel: w.accel,
    pid: w.pid ?? null,
    createdAtUnix: w.created_at_unix,
    bootMs: w.boot_ms ?? null,
    expiresAtUnix: w.expires_at_unix ?? null,
    snapshotTag: w.snapshot_tag ?? null,
    memory: w.memory ?? null,
    onExpiry: w.on_expiry ?? "kill",
    metadata: { ...(w.metadata ?? {}) },
    network: w.network
      ? {
          address: w.network.address,
          internet: w.network.internet,
          allowOut: [...(w.network.allow_out ?? [])],
          denyOut: [...(w.network.deny_out ?? [])],
          ports: [...(w.network.ports ?? [])],
        }
      : null,
    sandboxId: w.id,
  };
}

/** @internal */
export function procInfo(w: WireProcInfo): ProcessInfo {
  return {
    pid: w.pid,
    cmd: w.cmd,
    tag: w.tag ?? null,
    pty: w.pty,
    stdin: w.stdin,
    startedUnix: w.started_unix,
    running: !w.exit,
    exitCode: w.exit?.code ?? null,
    signal: w.exit?.signal ?? null,
  };
}

/** @internal */
export function walkEntry(w: WireWalkEntry): EntryInfo {
  const e: EntryInfo = {
    name: w.name,
    path: w.path,
    kind: w.kind,
    type: w.kind,
    size: w.size,
    mode: w.mode,
    modifiedTime: new Date(w.mtime * 1000),
  };
  if (w.target) e.symlinkTarget = w.target;
  return e;
}

/** @internal */
export function snapshotInfo(w: WireSnapshotInfo): SnapshotInfo {
  return {
    tag: w.tag,
    image: w.image,
    branchedFrom: w.branched_from ?? null,
    mode: w.mode,
    status: w.status,
    memoryMib: w.memory_mib,
    vcpus: w.vcpus,
    cpu: w.cpu,
    accel: w.accel,
    hugepages: w.hugepages,
    pauseMs: w.pause_ms ?? null,
    copyMs: w.copy_ms ?? null,
    memoryBytes: w.memory_bytes,
    vmstateBytes: w.vmstate_bytes,
    createdAtUnix: w.created_at_unix,
    warning: w.warning ?? null,
  };
}
