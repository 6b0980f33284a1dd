/**
 * Finding the daemon and talking HTTP to it: a Unix socket (undici `Agent`
 * with `connect.socketPath`) or TCP with a bearer token, configured like the
 * CLI. Nothing above this module knows about undici.
 *
 * @module
 */

import { Readable } from "node:stream";

import { readFileSync } from "node:fs";

import { Agent, type Dispatcher } from "undici";

import { BadRequestError, ConnectionError, ZygoteError, errorForStatus } from "./errors.js";

/** Environment variable naming the daemon's Unix socket (as for the CLI). */
export const ENV_SOCKET = "ZYGOTE_SOCKET";
/** Environment variable with the base URL of a daemon on TCP (as for the CLI). */
export const ENV_URL = "ZYGOTE_URL";
/** Environment variable with the bearer token sent with {@link ENV_URL}. */
export const ENV_TOKEN = "ZYGOTE_TOKEN";
/** Environment variable naming the PEM file of the CA an `https://` daemon is checked against. */
export const ENV_CA = "ZYGOTE_CA";
/** The daemon's default Unix socket. */
export const DEFAULT_SOCKET = "/run/zygote/zygote.sock";

/**
 * Where the daemon is. Resolved in this order: `url` (with `token`, else
 * `ZYGOTE_TOKEN`), `socket`, then the environment `ZYGOTE_URL` (with
 * `ZYGOTE_TOKEN`), `ZYGOTE_SOCKET`, and finally `/run/zygote/zygote.sock`.
 */
export interface ConnectionOptions {
  /** Path of the daemon's Unix socket. */
  socket?: string;
  /** Base URL of a daemon listening on TCP, e.g. `http://127.0.0.1:8889`. */
  url?: string;
  /** Bearer token for `url` (the daemon's `--token-file`). */
  token?: string;
  /**
   * PEM file of the CA an `https://` daemon's certificate must chain to (a
   * private CA; default `ZYGOTE_CA`, else Node's roots).
   */
  ca?: string;
  /**
   * Abort any single HTTP request after this many milliseconds. Default: no
   * limit (a command runs as long as its own `timeoutMs` allows).
   */
  requestTimeoutMs?: number;
}

/** A resolved endpoint. */
export type Endpoint =
  | { kind: "unix"; socket: string }
  | { kind: "tcp"; origin: string; token: string | undefined; ca?: string };

/** Resolve options and environment into an endpoint (see {@link ConnectionOptions}). */
export function resolveEndpoint(opts: ConnectionOptions = {}): Endpoint {
  const env = process.env;
  const envToken = env[ENV_TOKEN] ? env[ENV_TOKEN] : undefined;
  const ca = opts.ca ?? (env[ENV_CA] ? env[ENV_CA] : undefined);
  if (opts.url !== undefined) {
    return { kind: "tcp", origin: parseUrl(opts.url, "url"), token: opts.token ?? envToken, ...(ca !== undefined ? { ca } : {}) };
  }
  if (opts.socket !== undefined) {
    return { kind: "unix", socket: checkSocket(opts.socket, "socket") };
  }
  if (env[ENV_URL]) {
    return { kind: "tcp", origin: parseUrl(env[ENV_URL], ENV_URL), token: opts.token ?? envToken, ...(ca !== undefined ? { ca } : {}) };
  }
  if (env[ENV_SOCKET]) {
    return { kind: "unix", socket: checkSocket(env[ENV_SOCKET], ENV_SOCKET) };
  }
  return { kind: "unix", socket: DEFAULT_SOCKET };
}

function checkSocket(path: string, what: string): string {
  if (path === "") {
    throw new BadRequestError(`${what} is empty: pass the daemon's socket path, e.g. ${DEFAULT_SOCKET}`);
  }
  return path;
}

function parseUrl(url: string, what: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new BadRequestError(`${what} \`${url}\` is not a URL: pass e.g. http://127.0.0.1:8889`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new BadRequestError(
      `${what} \`${url}\` is not an http:// URL: pass e.g. http://127.0.0.1:8889`,
    );
  }
  if ((u.pathname !== "/" && u.pathname !== "") || u.search || u.hash || u.username) {
    throw new BadRequestError(
      `${what} \`${url}\` must be only a scheme, host and port: pass e.g. http://127.0.0.1:8889`,
    );
  }
  return u.origin;
}

/** Text form of an endpoint, as in error messages. */
export function describeEndpoint(e: Endpoint): string {
  return e.kind === "unix" ? `unix:${e.socket}` : e.origin;
}

// One connection pool per endpoint, shared by every Sandbox on it.
const agents = new Map<string, Agent>();

function caOf(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new BadRequestError(
      `${ENV_CA} / ca \`${path}\` cannot be read (${String(err)}): point it at the PEM CA certificate that signed the daemon's --tls-cert`,
    );
  }
}

function agentFor(e: Endpoint): Agent {
  const key = e.kind === "unix" ? `unix:${e.socket}` : `${e.origin} ${e.ca ?? ""}`;
  let a = agents.get(key);
  if (!a) {
    const connect =
      e.kind === "unix" ? { socketPath: e.socket } : e.ca !== undefined ? { ca: caOf(e.ca) } : undefined;
    a = new Agent({
      // A buffered exec answers only when the command ends, and streams may be
      // silent for as long as the command is: no idle limits of undici's own.
      headersTimeout: 0,
      bodyTimeout: 0,
      ...(connect ? { connect } : {}),
    });
    agents.set(key, a);
  }
  return a;
}

/**
 * Close every pooled connection to every daemon. Not needed for a process to
 * exit (idle connections do not keep it alive); useful in long-lived programs
 * that are done with zygote.
 */
export async function closeConnections(): Promise<void> {
  const all = [...agents.values()];
  agents.clear();
  await Promise.all(all.map((a) => a.close()));
}

/** What a request sends. */
export interface RequestSpec {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  path: string;
  query?: Record<string, string | undefined>;
  json?: unknown;
  body?: Uint8Array | string | AsyncIterable<Uint8Array>;
  signal?: AbortSignal;
}

/** An answer with a success status; the body is not read yet. */
export type OkResponse = Dispatcher.ResponseData;

/** Percent-encode one path segment or query value (keeping `/` readable in paths). */
export function encode(v: string, keepSlash = false): string {
  const s = encodeURIComponent(v);
  return keepSlash ? s.replace(/%2F/g, "/") : s;
}

/** The daemon's HTTP API at one endpoint. Used by every public class. */
export class Client {
  /** Where it talks to. */
  readonly endpoint: Endpoint;
  private readonly requestTimeoutMs: number | undefined;

  /** A client for the endpoint these options resolve to. */
  constructor(opts: ConnectionOptions = {}) {
    this.endpoint = resolveEndpoint(opts);
    if (
      opts.requestTimeoutMs !== undefined &&
      !(Number.isFinite(opts.requestTimeoutMs) && opts.requestTimeoutMs > 0)
    ) {
      throw new BadRequestError(
        `requestTimeoutMs ${opts.requestTimeoutMs} is not a positive number of milliseconds`,
      );
    }
    this.requestTimeoutMs = opts.requestTimeoutMs;
  }

  /** Send a request; error statuses become {@link ZygoteError}s with the daemon's message. */
  async send(spec: RequestSpec): Promise<OkResponse> {
    const e = this.endpoint;
    const headers: Record<string, string> = {};
    if (e.kind === "tcp" && e.token) headers["authorization"] = `Bearer ${e.token}`;
    let body: RequestSpec["body"] | undefined = spec.body;
    if (spec.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(spec.json);
    } else if (spec.body !== undefined) {
      headers["content-type"] = "application/octet-stream";
    }
    let path = spec.path;
    const q = Object.entries(spec.query ?? {}).filter(
      (kv): kv is [string, string] => kv[1] !== undefined,
    );
    if (q.length > 0) {
      path += "?" + q.map(([k, v]) => `${encode(k)}=${encode(v, true)}`).join("&");
    }
    let signal = spec.signal;
    if (this.requestTimeoutMs !== undefined) {
      const t = AbortSignal.timeout(this.requestTimeoutMs);
      signal = signal ? AbortSignal.any([signal, t]) : t;
    }
    let resp: Dispatcher.ResponseData;
    try {
      resp = await agentFor(e).request({
        origin: e.kind === "unix" ? "http://localhost" : e.origin,
        path,
        method: spec.method,
        headers,
        body:
          body === undefined || typeof body === "string" || body instanceof Uint8Array
            ? (body ?? null)
            : Readable.from(body, { objectMode: false }),
        signal: signal ?? null,
      });
    } catch (err) {
      throw this.wrap(err);
    }
    if (resp.statusCode >= 200 && resp.statusCode < 300) return resp;
    let text = "";
    try {
      text = await resp.body.text();
    } catch {
      // the status alone still says what happened
    }
    let message = text;
    try {
      const parsed = JSON.parse(text) as { error?: unknown };
      if (typeof parsed.error === "string") message = parsed.error;
    } catch {
      // not JSON: keep the raw text
    }
    if (message === "") message = `HTTP ${resp.statusCode}`;
    throw errorForStatus(resp.statusCode, message);
  }

  /** Send a request and parse the JSON answer. */
  async json<T>(spec: RequestSpec): Promise<T> {
    const resp = await this.send(spec);
    try {
      return (await resp.body.json()) as T;
    } catch (err) {
      throw this.wrap(err, "unreadable JSON answer from the daemon");
    }
  }

  /** Turn a transport failure into a {@link ZygoteError}. */
  wrap(err: unknown, what = "HTTP exchange with the daemon failed"): ZygoteError {
    if (err instanceof ZygoteError) return err;
    const code = (err as { code?: string } | undefined)?.code ?? "";
    const name = (err as { name?: string } | undefined)?.name ?? "";
    if (
      ["ECONNREFUSED", "ENOENT", "EACCES", "ENOTSOCK", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL"].includes(code) ||
      code === "UND_ERR_CONNECT_TIMEOUT"
    ) {
      return new ConnectionError(describeEndpoint(this.endpoint), err);
    }
    if (name === "AbortError" || name === "TimeoutError" || code === "UND_ERR_ABORTED") {
      return new ZygoteError(`request to ${describeEndpoint(this.endpoint)} aborted: ${errText(err)}`, undefined, {
        cause: err,
      });
    }
    return new ZygoteError(`${what} (${describeEndpoint(this.endpoint)}): ${errText(err)}`, undefined, {
      cause: err,
    });
  }
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
