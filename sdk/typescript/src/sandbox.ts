/**
 * `Sandbox`: one microVM, and the calls that create, fork and remove them.
 *
 * @module
 */

import { Client, type ConnectionOptions, encode } from "./client.js";
import { Commands } from "./commands.js";
import { BadRequestError, SpawnError, ZygoteError } from "./errors.js";
import { Files } from "./files.js";
import { Pty } from "./pty.js";
import {
  type BranchMode,
  type EvalResult,
  type OnExpiry,
  type SandboxInfo,
  type SandboxList,
  type SandboxState,
  type SnapshotInfo,
  type WireSandboxInfo,
  type WireSnapshotInfo,
  type WireSpawnResult,
  sandboxInfo,
  snapshotInfo,
} from "./types.js";
import { checkEnv, positiveInt, wholeSecondsFromMs } from "./validate.js";

/** The route that starts children of the snapshot `tag`. */
function spawnPath(tag: string): string {
  return `/v1/snapshots/${encode(tag)}/spawn`;
}

// Node 20 before 20.4 has no Symbol.asyncDispose; `await using` needs it.
(Symbol as { asyncDispose?: symbol }).asyncDispose ??= Symbol.for("Symbol.asyncDispose");

/** A sandbox's lifetime and labels, as create, spawn and fork take them. */
export interface LifeOptions {
  /**
   * Lifetime in milliseconds (rounded up to seconds): when it runs out the
   * sandbox is removed (or paused, with `onExpiry: "pause"`). Extend it with
   * `setTimeout`. Default: no limit.
   */
  timeoutMs?: number;
  /** What the end of the lifetime does: `kill` (default) or `pause`. */
  onExpiry?: OnExpiry;
  /** Labels that `Sandbox.list({ metadata })` filters on (a child gets its parent's under these). */
  metadata?: Record<string, string>;
}

function lifeBody(body: Record<string, unknown>, o: LifeOptions & { lifecycle?: { onTimeout: OnExpiry | { action: OnExpiry } } }): Record<string, unknown> {
  if (o.timeoutMs !== undefined) body.timeout_secs = wholeSecondsFromMs(o.timeoutMs, "timeoutMs");
  let on = o.onExpiry;
  if (o.lifecycle !== undefined) {
    if (on !== undefined) throw new BadRequestError("onExpiry and lifecycle were both given: pass one (lifecycle is E2B's form)");
    const t = o.lifecycle?.onTimeout;
    on = typeof t === "object" && t !== null ? t.action : t;
  }
  if (on !== undefined) {
    if (on !== "kill" && on !== "pause") throw new BadRequestError(`onExpiry \`${String(on)}\` is unknown: pass "kill" or "pause"`);
    body.on_expiry = on;
  }
  if (o.metadata !== undefined) body.metadata = checkEnv(o.metadata, "metadata");
  return body;
}

/** Where a sandbox's guest may connect (E2B's names). */
export interface NetworkOptions {
  /** `false`: cut it off the internet (only `network.allowOut` answers). Default `true`. */
  allowInternetAccess?: boolean;
  /**
   * IPv4 CIDRs: `allowOut` reachable even without internet, `denyOut` never
   * (wins). `{ enabled: false }`: no network card at all (a boot only).
   */
  network?: { allowOut?: string[]; denyOut?: string[]; enabled?: boolean };
}

function cidrs(v: unknown, what: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((c) => typeof c === "string")) {
    throw new BadRequestError(`${what} must be a list of IPv4 CIDR strings, e.g. ["198.18.0.0/15"]`);
  }
  return [...v];
}

/** The `network` of a create or spawn body, or undefined for the default. */
function netBody(o: NetworkOptions): Record<string, unknown> | undefined {
  if (o.network === undefined && o.allowInternetAccess === undefined) return undefined;
  const n = o.network ?? {};
  const unknown = Object.keys(n).filter((k) => !["allowOut", "denyOut", "enabled"].includes(k));
  if (unknown.length > 0) throw new BadRequestError(`network has unknown key(s) ${unknown.join(", ")}: use allowOut, denyOut or enabled`);
  if (n.enabled === false) {
    if (o.allowInternetAccess !== undefined || n.allowOut || n.denyOut) {
      throw new BadRequestError("network.enabled is false, which leaves nothing for other network options to apply to");
    }
    return { enabled: false };
  }
  const body: Record<string, unknown> = {};
  if (o.allowInternetAccess !== undefined) body.internet = o.allowInternetAccess;
  const allow = cidrs(n.allowOut, "network.allowOut");
  const deny = cidrs(n.denyOut, "network.denyOut");
  if (allow.length > 0) body.allow_out = allow;
  if (deny.length > 0) body.deny_out = deny;
  return body;
}

/** A volume to mount: a named one (`zygote volume create`) or a host directory. */
export interface VolumeMount {
  /** A named volume. */
  name?: string;
  /** A host directory under the daemon's `--volume-host-root` (read-only). */
  hostPath?: string;
  /** Where the guest sees it. */
  path: string;
  /** Mount it read-only (any number of sandboxes may). */
  readOnly?: boolean;
}

/** The `volumes` of a create or spawn body. */
function volBody(v: VolumeMount[] | undefined): Record<string, unknown>[] | undefined {
  if (v === undefined) return undefined;
  return v.map((m) => {
    if (typeof m.path !== "string" || (m.name === undefined) === (m.hostPath === undefined)) {
      throw new BadRequestError(`volume ${JSON.stringify(m)}: give a path and exactly one of name and hostPath`);
    }
    return {
      path: m.path,
      ...(m.name !== undefined ? { name: m.name } : { host_path: m.hostPath }),
      ...(m.readOnly ? { read_only: true } : {}),
    };
  });
}

/** Options of {@link Sandbox.create}: boot an image, or start a child of a snapshot. */
export interface SandboxOptions extends ConnectionOptions, LifeOptions, NetworkOptions {
  /** Volumes to mount (at most 4; a writable one by one sandbox at a time). */
  volumes?: VolumeMount[];
  /** Image to boot (default `python`). Not with `snapshot`. */
  image?: string;
  /** Start from this snapshot (copy-on-write, a fraction of a second) instead of booting. */
  snapshot?: string;
  /** Guest RAM in MiB (default 256; from a snapshot it must equal the snapshot's). */
  memoryMib?: number;
  /** Virtual CPUs (default 1; from a snapshot it must equal the snapshot's). */
  vcpus?: number;
  /** Environment applied to every command in the sandbox. */
  env?: Record<string, string>;
  /** Same as `env` (E2B's name). */
  envs?: Record<string, string>;
  /** E2B's form of `onExpiry`: `{ onTimeout: "pause" }`. */
  lifecycle?: { onTimeout: OnExpiry | { action: OnExpiry } };
  /** With `snapshot`: the child gets its own memory (so it can be branched in `copy` mode) instead of copy-on-write. */
  privateMemory?: boolean;
  /** With `snapshot` and `privateMemory`: back the child's memory with 2 MiB hugepages. */
  hugepages?: boolean;
}

/** Options of {@link Sandbox.spawn}. */
export interface SpawnOptions extends ConnectionOptions, LifeOptions, NetworkOptions {
  /** Volumes to mount in each child (writable ones only with one child). */
  volumes?: VolumeMount[];
  /** Each child gets its own memory instead of copy-on-write over the snapshot. */
  privateMemory?: boolean;
  /** With `privateMemory`: hugepage-backed child memory. */
  hugepages?: boolean;
  /** Environment for every command in each child. */
  env?: Record<string, string>;
}

/** Options of {@link Sandbox.branch}. */
export interface BranchOptions {
  /** Snapshot tag (default: generated). 1-64 of `A-Z a-z 0-9 . _ -`. */
  tag?: string;
  /** `copy` or `live` (default: what suits the sandbox's memory). */
  mode?: BranchMode;
  /** Back the snapshot memory with 2 MiB hugepages. */
  hugepages?: boolean;
  /** Answer only once the snapshot's memory is on disk (`status: "ready"`). */
  wait?: boolean;
  /** `live` mode: QEMU's downtime limit in milliseconds (default 20). */
  downtimeLimitMs?: number;
}

/** Options of {@link Sandbox.connect}. */
export interface SandboxConnectOptions extends ConnectionOptions {
  /** A new lifetime from now, in milliseconds (`setTimeout`). */
  timeoutMs?: number;
  /** `false`: leave a paused sandbox paused (zygote's addition; default: resume it, as E2B). */
  resume?: boolean;
}

/** Options of {@link Sandbox.list}. */
export interface SandboxListOptions extends ConnectionOptions {
  /** Only sandboxes with all these labels. */
  metadata?: Record<string, string>;
  /** Only sandboxes in this state. */
  state?: SandboxState;
  /** At most this many (1-1000); `nextToken` of the result then names the next page. */
  limit?: number;
  /** The page after the one that gave this token. */
  nextToken?: string;
}

/** Options of {@link Sandbox.fork}. */
export interface ForkOptions extends LifeOptions {
  /** Branch mode of the intermediate snapshot. */
  mode?: BranchMode;
  /** Tag of the intermediate snapshot (default: generated). */
  tag?: string;
  /** Children get private memory instead of copy-on-write. */
  privateMemory?: boolean;
  /** Hugepages for the snapshot and private children. */
  hugepages?: boolean;
}

/**
 * A running microVM. Create one with {@link Sandbox.create}, attach to an
 * existing one with {@link Sandbox.connect}. Remove it with {@link kill}, or
 * let `await using` or {@link withSandbox} do that:
 *
 * ```ts
 * await using sandbox = await Sandbox.create({ memoryMib: 512 });
 * const r = await sandbox.commands.run("python3 -c 'print(6 * 7)'");
 * ```
 */
export class Sandbox {
  /** The sandbox id. */
  readonly id: string;
  /** The last known state; refresh with {@link getInfo}. */
  info: SandboxInfo;
  /** Run commands. */
  readonly commands: Commands;
  /** Read, write, list, watch and remove files. */
  readonly files: Files;
  /** Terminals. */
  readonly pty: Pty;
  /** @internal */
  readonly client: Client;

  /** @internal Use {@link Sandbox.create} or {@link Sandbox.connect}. */
  constructor(client: Client, info: SandboxInfo) {
    this.client = client;
    this.id = info.id;
    this.info = info;
    this.commands = new Commands(client, info.id);
    this.files = new Files(client, info.id);
    this.pty = new Pty(client, info.id, this.commands);
  }

  /**
   * Create a sandbox: boot an image (about 4 s under TCG), or start a child of
   * a snapshot (`snapshot: tag`, a fraction of a second).
   *
   * @param opts What to start, its size and environment, and where the daemon is.
   * @throws {BadRequestError} An option is invalid (the message names it).
   * @throws {NotFoundError} No such image or snapshot.
   * @throws {ConnectionError} No daemon answers.
   */
  static async create(opts: SandboxOptions = {}): Promise<Sandbox> {
    const client = new Client(opts);
    if (opts.snapshot !== undefined) {
      if (opts.image !== undefined) {
        throw new BadRequestError(
          `image \`${opts.image}\` and snapshot \`${opts.snapshot}\` were both given: a child of a snapshot runs the snapshot's image (drop image)`,
        );
      }
      const body: Record<string, unknown> = lifeBody({ n: 1 }, opts);
      const net = netBody(opts);
      if (net !== undefined) body.network = net;
      const vols = volBody(opts.volumes);
      if (vols !== undefined) body.volumes = vols;
      if (opts.memoryMib !== undefined) body.memory_mib = positiveInt(opts.memoryMib, "memoryMib");
      if (opts.vcpus !== undefined) body.vcpus = positiveInt(opts.vcpus, "vcpus");
      const env = envOf(opts);
      if (env !== undefined) body.env = env;
      if (opts.privateMemory) body.private_memory = true;
      if (opts.hugepages) body.hugepages = true;
      const results = await client.json<WireSpawnResult[]>({ method: "POST", path: spawnPath(opts.snapshot), json: body });
      const [child] = await children(client, results);
      if (!child) throw new ZygoteError("the daemon started no child");
      return child;
    }
    if (opts.privateMemory || opts.hugepages) {
      throw new BadRequestError("privateMemory and hugepages apply to children of a snapshot: pass snapshot too");
    }
    const body: Record<string, unknown> = lifeBody({}, opts);
    const net = netBody(opts);
    if (net !== undefined) body.network = net;
    const vols = volBody(opts.volumes);
    if (vols !== undefined) body.volumes = vols;
    if (opts.image !== undefined) body.image = opts.image;
    if (opts.memoryMib !== undefined) body.memory_mib = positiveInt(opts.memoryMib, "memoryMib");
    if (opts.vcpus !== undefined) body.vcpus = positiveInt(opts.vcpus, "vcpus");
    const env = envOf(opts);
    if (env !== undefined) body.env = env;
    const w = await client.json<WireSandboxInfo>({ method: "POST", path: "/v1/sandboxes", json: body });
    return new Sandbox(client, sandboxInfo(w));
  }

  /**
   * Start `n` children of a snapshot at once.
   *
   * @throws {SpawnError} Some children did not start (those that did were removed).
   */
  static async spawn(snapshot: string, n: number, opts: SpawnOptions = {}): Promise<Sandbox[]> {
    const client = new Client(opts);
    const body: Record<string, unknown> = lifeBody({ n: positiveInt(n, "n") }, opts);
    const net = netBody(opts);
    if (net !== undefined) body.network = net;
    const vols = volBody(opts.volumes);
    if (vols !== undefined) body.volumes = vols;
    if (opts.env !== undefined) body.env = checkEnv(opts.env, "env");
    if (opts.privateMemory) body.private_memory = true;
    if (opts.hugepages) body.hugepages = true;
    const results = await client.json<WireSpawnResult[]>({ method: "POST", path: spawnPath(snapshot), json: body });
    return children(client, results);
  }

  /**
   * Attach to an existing sandbox by id; a paused one is resumed first (as
   * E2B's `connect`), under the same id with its processes, memory and files.
   *
   * @throws {NotFoundError} No sandbox has that id.
   */
  static async connect(id: string, opts: SandboxConnectOptions = {}): Promise<Sandbox> {
    const client = new Client(opts);
    const w = await client.json<WireSandboxInfo>({ method: "GET", path: `/v1/sandboxes/${encode(id)}` });
    const sb = new Sandbox(client, sandboxInfo(w));
    if ((opts.resume ?? true) && sb.info.state === "paused") await sb.resume();
    if (opts.timeoutMs !== undefined) await sb.setTimeout(opts.timeoutMs);
    return sb;
  }

  /**
   * The sandboxes the daemon holds, oldest first: all of them, or those with
   * every label of `metadata` and in `state`; a page of at most `limit`.
   *
   * @returns The sandboxes, with `nextToken` (`null` on the last page).
   */
  static async list(opts: SandboxListOptions = {}): Promise<SandboxList> {
    const client = new Client(opts);
    const query: Record<string, string> = {};
    for (const [k, v] of Object.entries(checkEnv(opts.metadata ?? {}, "metadata"))) query[`metadata.${k}`] = v;
    if (opts.state !== undefined) query.state = opts.state;
    if (opts.limit !== undefined) query.limit = String(positiveInt(opts.limit, "limit"));
    if (opts.nextToken !== undefined) query.next_token = opts.nextToken;
    const resp = await client.send({ method: "GET", path: "/v1/sandboxes", query });
    let ws: WireSandboxInfo[];
    try {
      ws = (await resp.body.json()) as WireSandboxInfo[];
    } catch (e) {
      throw client.wrap(e, "unreadable JSON answer from the daemon");
    }
    const h = resp.headers["x-next-token"];
    const next = (Array.isArray(h) ? h[0] : h) || null;
    const out = ws.map(sandboxInfo);
    Object.defineProperty(out, "nextToken", { value: next, enumerable: false });
    Object.defineProperty(out, "hasNext", { value: next !== null, enumerable: false });
    return out as SandboxList;
  }

  /**
   * Remove a sandbox by id.
   *
   * @returns `true` if it was removed, `false` if no sandbox had that id.
   */
  static async kill(id: string, opts: ConnectionOptions = {}): Promise<boolean> {
    return killById(new Client(opts), id);
  }

  /** Fetch the current state. */
  async getInfo(): Promise<SandboxInfo> {
    const w = await this.client.json<WireSandboxInfo>({ method: "GET", path: `/v1/sandboxes/${encode(this.id)}` });
    this.info = sandboxInfo(w);
    return this.info;
  }

  /** Whether the sandbox exists and is running. */
  async isRunning(): Promise<boolean> {
    try {
      return (await this.getInfo()).state === "running";
    } catch (e) {
      if (e instanceof ZygoteError && e.status === 404) return false;
      throw e;
    }
  }

  /** Round trip to the guest agent, in milliseconds. */
  async ping(): Promise<number> {
    const r = await this.client.json<{ ok: boolean; agent_rtt_ms: number }>({
      method: "POST",
      path: `/v1/sandboxes/${encode(this.id)}/ping`,
    });
    return r.agent_rtt_ms;
  }

  /**
   * Evaluate Python in the sandbox's warm interpreter; state (variables,
   * imports) persists between calls. An exception is reported in `error` and
   * `traceback`, not thrown.
   *
   * ```ts
   * await sandbox.eval("x = 41");
   * (await sandbox.eval("x + 1")).result; // "42"
   * ```
   */
  async eval(code: string): Promise<EvalResult> {
    if (typeof code !== "string") throw new BadRequestError("code must be a string of Python");
    return this.client.json<EvalResult>({
      method: "POST",
      path: `/v1/sandboxes/${encode(this.id)}/eval`,
      json: { code },
    });
  }

  /**
   * Snapshot the running sandbox (it keeps running). Children of the
   * snapshot start from exactly this moment: `Sandbox.create({ snapshot: info.tag })`.
   *
   * @returns The snapshot; `status` is `writing` until its memory is on disk (unless `wait`).
   * @throws {ConflictError} The tag is taken, or the mode does not suit the sandbox.
   */
  async branch(opts: BranchOptions = {}): Promise<SnapshotInfo> {
    const body: Record<string, unknown> = {};
    if (opts.tag !== undefined) body.tag = opts.tag;
    if (opts.mode !== undefined) body.mode = opts.mode;
    if (opts.hugepages) body.hugepages = true;
    if (opts.wait) body.wait = true;
    if (opts.downtimeLimitMs !== undefined) body.downtime_limit_ms = positiveInt(opts.downtimeLimitMs, "downtimeLimitMs");
    const w = await this.client.json<WireSnapshotInfo>({
      method: "POST",
      path: `/v1/sandboxes/${encode(this.id)}/branch`,
      json: body,
    });
    return snapshotInfo(w);
  }

  /**
   * Branch the sandbox and start `n` children from that moment; each sees
   * the parent's files, processes and interpreter state, then diverges. The
   * intermediate snapshot stays (its tag is each child's `info.snapshotTag`).
   *
   * @throws {SpawnError} Some children did not start (those that did were removed).
   */
  async fork(n = 1, opts: ForkOptions = {}): Promise<Sandbox[]> {
    const body: Record<string, unknown> = lifeBody({ n: positiveInt(n, "n") }, opts);
    if (opts.mode !== undefined) body.mode = opts.mode;
    if (opts.tag !== undefined) body.tag = opts.tag;
    if (opts.privateMemory) body.private_memory = true;
    if (opts.hugepages) body.hugepages = true;
    const r = await this.client.json<{ snapshot: WireSnapshotInfo; children: WireSpawnResult[] }>({
      method: "POST",
      path: `/v1/sandboxes/${encode(this.id)}/fork`,
      json: body,
    });
    return children(this.client, r.children);
  }

  /**
   * Pause the sandbox: store it as a snapshot of itself (memory, devices,
   * disk), stop its VM and free its memory. It stays listed, `paused`,
   * across daemon restarts; {@link resume} (or `Sandbox.connect`) brings it
   * back under the same id.
   *
   * @returns `true` when it was paused, `false` when it already was.
   */
  async pause(): Promise<boolean> {
    return this.lifecycle("pause", "paused");
  }

  /**
   * Resume a paused sandbox under the same id (processes, interpreter state
   * and files as they were).
   *
   * @returns `true` when it was resumed, `false` when it was running already.
   */
  async resume(): Promise<boolean> {
    return this.lifecycle("resume", "running");
  }

  private async lifecycle(verb: "pause" | "resume", already: SandboxState): Promise<boolean> {
    try {
      const w = await this.client.json<WireSandboxInfo>({ method: "POST", path: `/v1/sandboxes/${encode(this.id)}/${verb}` });
      this.info = sandboxInfo(w);
      return true;
    } catch (e) {
      if (e instanceof ZygoteError && e.status === 409 && (await this.getInfo()).state === already) return false;
      throw e;
    }
  }

  /**
   * A new lifetime, `timeoutMs` from now (rounded up to seconds; it replaces
   * the old one); then the sandbox is removed, or paused (`onExpiry:
   * "pause"`; default: what it was). `info.expiresAtUnix` shows the new end.
   */
  /**
   * Expose the guest's TCP `port` on the daemon's host; returns the
   * `host:port` that reaches it (the same on every call; it goes away with
   * the sandbox). E2B's name.
   */
  async getHost(port: number): Promise<string> {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new BadRequestError(`port ${port} is out of range: pass a guest TCP port from 1 to 65535`);
    }
    const w = await this.client.json<{ port: number; host: string }>({
      method: "POST",
      path: `/v1/sandboxes/${encode(this.id)}/ports`,
      json: { port },
    });
    return w.host;
  }

  /**
   * Replace the egress policy; new connections follow it at once. `denyOut`
   * wins over `allowOut`; `internet: false` lets only `allowOut` through.
   */
  async setNetwork(p: { internet?: boolean; allowOut?: string[]; denyOut?: string[] } = {}): Promise<void> {
    const w = await this.client.json<WireSandboxInfo>({
      method: "PATCH",
      path: `/v1/sandboxes/${encode(this.id)}/network`,
      json: {
        internet: p.internet ?? true,
        allow_out: cidrs(p.allowOut, "allowOut"),
        deny_out: cidrs(p.denyOut, "denyOut"),
      },
    });
    this.info = sandboxInfo(w);
  }

  async setTimeout(timeoutMs: number, opts: { onExpiry?: OnExpiry } = {}): Promise<void> {
    const body = lifeBody({}, { timeoutMs, ...(opts.onExpiry ? { onExpiry: opts.onExpiry } : {}) });
    const w = await this.client.json<WireSandboxInfo>({ method: "POST", path: `/v1/sandboxes/${encode(this.id)}/timeout`, json: body });
    this.info = sandboxInfo(w);
  }

  /**
   * Remove the sandbox (its QEMU is killed).
   *
   * @returns `true` if it was removed, `false` if it was already gone.
   */
  async kill(): Promise<boolean> {
    return killById(this.client, this.id);
  }

  /** `await using sandbox = await Sandbox.create()` removes it at the end of the scope. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }
}

function envOf(opts: { env?: Record<string, string>; envs?: Record<string, string> }): Record<string, string> | undefined {
  if (opts.env !== undefined && opts.envs !== undefined) {
    throw new BadRequestError("env and envs were both given: pass one (envs is E2B's name for env)");
  }
  if (opts.envs !== undefined) return checkEnv(opts.envs, "envs");
  if (opts.env !== undefined) return checkEnv(opts.env, "env");
  return undefined;
}

async function killById(client: Client, id: string): Promise<boolean> {
  try {
    await client.json<unknown>({ method: "DELETE", path: `/v1/sandboxes/${encode(id)}` });
    return true;
  } catch (e) {
    if (e instanceof ZygoteError && e.status === 404) return false;
    throw e;
  }
}

/** Sandboxes of a spawn answer; on any failure remove the started ones and throw. */
async function children(client: Client, results: WireSpawnResult[]): Promise<Sandbox[]> {
  const ok = results.filter((r) => r.sandbox).map((r) => new Sandbox(client, sandboxInfo(r.sandbox!)));
  const errors = results.filter((r) => !r.sandbox).map((r) => r.error ?? "no reason given");
  if (errors.length > 0) {
    await Promise.allSettled(ok.map((s) => s.kill()));
    throw new SpawnError(errors, ok.length);
  }
  return ok;
}

/**
 * Create a sandbox, hand it to `fn`, and remove it when `fn` settles, even
 * if it throws.
 *
 * ```ts
 * const out = await withSandbox({}, async (sb) => (await sb.commands.run("uname -r")).stdout);
 * ```
 *
 * @returns What `fn` returns.
 */
export async function withSandbox<T>(opts: SandboxOptions | undefined, fn: (sandbox: Sandbox) => Promise<T> | T): Promise<T> {
  const sandbox = await Sandbox.create(opts ?? {});
  let result: T;
  try {
    result = await fn(sandbox);
  } catch (e) {
    await sandbox.kill().catch(() => undefined);
    throw e;
  }
  await sandbox.kill();
  return result;
}
