/**
 * TypeScript SDK for zygote: microVM sandboxes with fork, over the daemon's
 * REST API on a Unix socket or TCP with a bearer token.
 *
 * ```ts
 * import { Sandbox } from "@zygote/sdk";
 *
 * await using sandbox = await Sandbox.create({ memoryMib: 512 });
 * const r = await sandbox.commands.run("echo hello from $(uname -n)");
 * console.log(r.stdout, r.exitCode);
 * ```
 *
 * @module
 */

export { Sandbox, withSandbox } from "./sandbox.js";
export type {
  SandboxOptions,
  SpawnOptions,
  BranchOptions,
  ForkOptions,
  LifeOptions,
  NetworkOptions,
  VolumeMount,
  SandboxConnectOptions,
  SandboxListOptions,
} from "./sandbox.js";
export { Snapshot, health, version, listImages } from "./snapshot.js";
export type { SnapshotCreateOptions } from "./snapshot.js";
export { Commands } from "./commands.js";
export type { RunOptions, ConnectOptions } from "./commands.js";
export { CommandHandle } from "./handle.js";
export type { CommandOutput } from "./handle.js";
export { Pty } from "./pty.js";
export type { PtyCreateOptions } from "./pty.js";
export { Files } from "./files.js";
export type { WriteData, WriteOptions, ReadOptions, RemoveOptions, ListOptions, WatchOptions } from "./files.js";
export { WatchHandle } from "./watch.js";
export {
  DEFAULT_SOCKET,
  ENV_SOCKET,
  ENV_TOKEN,
  ENV_URL,
  closeConnections,
  describeEndpoint,
  resolveEndpoint,
} from "./client.js";
export type { ConnectionOptions, Endpoint } from "./client.js";
export {
  ZygoteError,
  BadRequestError,
  AuthenticationError,
  ForbiddenError,
  NotFoundError,
  ConflictError,
  PayloadTooLargeError,
  NotImplementedError,
  UnavailableError,
  TimeoutError,
  ConnectionError,
  SpawnError,
  CommandExitError,
} from "./errors.js";
export { FilesystemEventType } from "./types.js";
export type {
  SandboxInfo,
  NetworkInfo,
  SandboxState,
  SnapshotInfo,
  SnapshotStatus,
  BranchMode,
  EvalResult,
  CommandResult,
  EntryInfo,
  EntryKind,
  FileStat,
  WriteInfo,
  VersionInfo,
  ImageInfo,
  OnExpiry,
  SandboxList,
  PtySize,
  ProcessInfo,
  FilesystemEvent,
  WriteEntry,
} from "./types.js";
