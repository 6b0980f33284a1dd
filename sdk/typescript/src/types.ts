/**
 * The public data types (camelCase) and their translation from the daemon's
 * JSON (snake_case, crates/proto/src/api.rs).
 *
 * @module
 */

/** Lifecycle state of a sandbox. */
export type SandboxState = "booting" | "running" | "stopping" | "dead";

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
}

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
  /** Wall time in milliseconds, as the daemon measured it. */
  durationMs: number;
}

/** Kind of a directory entry. */
export type EntryKind = "file" | "dir" | "symlink" | "other";

/** One entry of `sandbox.files.list`. */
export interface EntryInfo {
  /** Entry name. */
  name: string;
  /** Absolute guest path (the listed directory joined with `name`). */
  path: string;
  /** `file`, `dir`, `symlink` or `other`. */
  kind: EntryKind;
  /** Size in bytes. */
  size: number;
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
  };
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
