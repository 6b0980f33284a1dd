/**
 * `Snapshot`: frozen sandboxes that children start from, and daemon-wide
 * look-ups (health, version, images).
 *
 * @module
 */

import { Client, type ConnectionOptions, encode } from "./client.js";
import { BadRequestError, ZygoteError } from "./errors.js";
import { type ImageInfo, type SnapshotInfo, type VersionInfo, type WireSnapshotInfo, snapshotInfo } from "./types.js";
import { positiveInt, wholeSecondsFromMs } from "./validate.js";

/** Options of {@link Snapshot.create}. */
export interface SnapshotCreateOptions extends ConnectionOptions {
  /** Tag (required). 1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit. */
  tag: string;
  /** Image to boot (default `python`). */
  image?: string;
  /** Python run in the warm interpreter before the snapshot, e.g. `import numpy`. */
  warmup?: string;
  /** A shell command started in the background before the snapshot (a server, a database); it runs on in every child. */
  warmupCmd?: string;
  /** A shell command retried until it exits 0 before the snapshot is taken. */
  readyCmd?: string;
  /** Or: a guest TCP port that must accept on 127.0.0.1 before the snapshot. */
  readyPort?: number;
  /** How long readiness may take, in milliseconds (default 60 s). */
  readyTimeoutMs?: number;
  /** Guest RAM in MiB (children have the same). */
  memoryMib?: number;
  /** Virtual CPUs. */
  vcpus?: number;
  /** Hugepage-backed snapshot memory. */
  hugepages?: boolean;
}

/**
 * Snapshots held by the daemon. Start children with
 * `Sandbox.create({ snapshot: tag })` or `Sandbox.spawn(tag, n)`.
 */
export class Snapshot {
  private constructor() {}

  /**
   * Boot the image, run `warmup` in its interpreter and `warmupCmd` in the
   * background, wait for readiness (`readyCmd` or `readyPort`), and snapshot
   * it (the booted sandbox is removed).
   *
   * @throws {ConflictError} The tag is taken.
   * @throws {BadRequestError} The tag or an option is invalid.
   */
  static async create(opts: SnapshotCreateOptions): Promise<SnapshotInfo> {
    const client = new Client(opts);
    const body: Record<string, unknown> = { tag: opts.tag };
    if (opts.image !== undefined) body.image = opts.image;
    if (opts.warmup !== undefined) body.warmup = opts.warmup;
    if (opts.warmupCmd !== undefined) body.warmup_cmd = opts.warmupCmd;
    if (opts.readyCmd !== undefined && opts.readyPort !== undefined) {
      throw new BadRequestError("readyCmd and readyPort were both given: pass one readiness check");
    }
    if (opts.readyCmd !== undefined) body.ready_cmd = opts.readyCmd;
    if (opts.readyPort !== undefined) {
      if (!Number.isInteger(opts.readyPort) || opts.readyPort < 1 || opts.readyPort > 65535) {
        throw new BadRequestError(`readyPort ${String(opts.readyPort)} is not a TCP port: pass 1-65535`);
      }
      body.ready_port = opts.readyPort;
    }
    if (opts.readyTimeoutMs !== undefined) body.ready_timeout_secs = wholeSecondsFromMs(opts.readyTimeoutMs, "readyTimeoutMs");
    if (opts.memoryMib !== undefined) body.memory_mib = positiveInt(opts.memoryMib, "memoryMib");
    if (opts.vcpus !== undefined) body.vcpus = positiveInt(opts.vcpus, "vcpus");
    if (opts.hugepages) body.hugepages = true;
    return snapshotInfo(await client.json<WireSnapshotInfo>({ method: "POST", path: "/v1/snapshots", json: body }));
  }

  /** Every snapshot, oldest first. */
  static async list(opts: ConnectionOptions = {}): Promise<SnapshotInfo[]> {
    const ws = await new Client(opts).json<WireSnapshotInfo[]>({ method: "GET", path: "/v1/snapshots" });
    return ws.map(snapshotInfo);
  }

  /**
   * One snapshot.
   *
   * @throws {NotFoundError} No snapshot has that tag.
   */
  static async get(tag: string, opts: ConnectionOptions = {}): Promise<SnapshotInfo> {
    const w = await new Client(opts).json<WireSnapshotInfo>({ method: "GET", path: `/v1/snapshots/${encode(tag)}` });
    return snapshotInfo(w);
  }

  /**
   * Delete a snapshot; its running children keep running.
   *
   * @returns `true` if it was deleted, `false` if no snapshot had that tag.
   */
  static async delete(tag: string, opts: ConnectionOptions = {}): Promise<boolean> {
    try {
      await new Client(opts).json<unknown>({ method: "DELETE", path: `/v1/snapshots/${encode(tag)}` });
      return true;
    } catch (e) {
      if (e instanceof ZygoteError && e.status === 404) return false;
      throw e;
    }
  }
}

/** `GET /healthz`: the daemon answers, and (with the token, or on the Unix socket) how many sandboxes it holds. */
export async function health(opts: ConnectionOptions = {}): Promise<{ ok: boolean; sandboxes?: number }> {
  return new Client(opts).json({ method: "GET", path: "/healthz" });
}

/** `GET /version`: versions of zygote, the API, the agent protocol and QEMU. */
export async function version(opts: ConnectionOptions = {}): Promise<VersionInfo> {
  const v = await new Client(opts).json<{ version: string; api: string; agent_protocol: number; qemu: string; accel: string }>({
    method: "GET",
    path: "/version",
  });
  return { version: v.version, api: v.api, agentProtocol: v.agent_protocol, qemu: v.qemu, accel: v.accel };
}

/** `GET /v1/images`: the images the daemon can boot. */
export async function listImages(opts: ConnectionOptions = {}): Promise<ImageInfo[]> {
  const ws = await new Client(opts).json<
    { name: string; id: string; kernel_version: string; release: string; rootfs_bytes: number; created_unix: number }[]
  >({ method: "GET", path: "/v1/images" });
  return ws.map((w) => ({
    name: w.name,
    id: w.id,
    kernelVersion: w.kernel_version,
    release: w.release,
    rootfsBytes: w.rootfs_bytes,
    createdUnix: w.created_unix,
  }));
}

