/**
 * `sandbox.commands`: running processes in the guest, in the foreground
 * (`POST /v1/sandboxes/{id}/exec`, or `/exec/stream` for NDJSON events) or in
 * the background (`POST /v1/sandboxes/{id}/processes`, followed through
 * `GET .../processes/{pid}/output`), with E2B's names.
 *
 * @module
 */

import { Client, encode } from "./client.js";
import { BadRequestError, ZygoteError, streamError } from "./errors.js";
import { CommandHandle } from "./handle.js";
import { ndjson } from "./ndjson.js";
import { type CommandResult, type PtySize, type ProcessInfo, type WireProcInfo, procInfo } from "./types.js";
import { checkEnv, positiveInt, secondsFromMs } from "./validate.js";

/** Options of {@link Commands.run}. */
export interface RunOptions {
  /** Start it and return a {@link CommandHandle} at once (it runs on when this client goes; its last 256 KiB of output are kept). */
  background?: boolean;
  /** Extra environment for this command (on top of the sandbox's); `envs` is E2B's name. */
  env?: Record<string, string>;
  /** Same as `env`. */
  envs?: Record<string, string>;
  /** Run as this guest user (default root). */
  user?: string;
  /** Working directory in the guest. */
  cwd?: string;
  /** Kill the command's process group after this many milliseconds (`timedOut` is then true). */
  timeoutMs?: number;
  /**
   * Foreground: fed to stdin, which is then closed. Background: `true` keeps
   * stdin open for `sendStdin`; text or bytes are sent, then stdin is closed.
   */
  stdin?: string | Uint8Array | boolean;
  /** Called with each piece of standard output as it arrives (decoded as UTF-8). */
  onStdout?: (data: string) => unknown;
  /** Called with each piece of standard error as it arrives (decoded as UTF-8). */
  onStderr?: (data: string) => unknown;
  /** Background: a label, shown by {@link Commands.list}. */
  tag?: string;
  /** Abort the request (the SDK stops waiting; the daemon then ends the stream). */
  signal?: AbortSignal;
}

/** Options of {@link Commands.connect}. */
export interface ConnectOptions {
  /** Called with each piece of standard output. */
  onStdout?: (data: string) => unknown;
  /** Called with each piece of standard error. */
  onStderr?: (data: string) => unknown;
  /** Send the kept output first (its last 256 KiB; default true). */
  replay?: boolean;
}

/** @internal The body of an exec or a process: cmd/argv, env, cwd, user. */
export function commandBody(cmd: string | string[], opts: { env?: Record<string, string> | undefined; envs?: Record<string, string> | undefined; cwd?: string | undefined; user?: string | undefined }): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (typeof cmd === "string") {
    if (cmd === "") throw new BadRequestError("the command is empty: pass a shell command line or [program, ...args]");
    body.cmd = cmd;
  } else if (Array.isArray(cmd)) {
    if (cmd.length === 0 || cmd[0] === "") {
      throw new BadRequestError("the argv is empty: pass [program, ...args]");
    }
    body.argv = cmd;
  } else {
    throw new BadRequestError(`the command ${String(cmd)} is neither a string nor an array of strings`);
  }
  if (opts.env !== undefined && opts.envs !== undefined) {
    throw new BadRequestError("env and envs were both given: pass one (envs is E2B's name for env)");
  }
  const env = opts.envs ?? opts.env;
  if (env !== undefined) body.env = checkEnv(env, opts.envs !== undefined ? "envs" : "env");
  if (opts.cwd !== undefined) body.cwd = opts.cwd;
  if (opts.user !== undefined) {
    if (typeof opts.user !== "string" || opts.user === "") throw new BadRequestError(`user \`${String(opts.user)}\` is not a guest user name: pass e.g. "nobody"`);
    body.user = opts.user;
  }
  return body;
}

/** @internal Checks a pid. */
export function checkPid(pid: number): number {
  if (!Number.isInteger(pid) || pid <= 0) throw new BadRequestError(`pid ${String(pid)} is not a process id: take it from a handle's .pid`);
  return pid;
}

/** @internal A terminal size for the wire. */
export function ptySize(size: PtySize): PtySize {
  for (const k of ["rows", "cols"] as const) {
    const v = size?.[k];
    if (!Number.isInteger(v) || v < 1 || v > 1000) {
      throw new BadRequestError(`terminal ${k} ${String(v)} is out of range: pass 1-1000`);
    }
  }
  return { rows: size.rows, cols: size.cols };
}

/** Runs commands in one sandbox. Reach it as `sandbox.commands`. */
export class Commands {
  /** @internal */
  constructor(
    private readonly client: Client,
    private readonly id: string,
  ) {}

  private get procs(): string {
    return `/v1/sandboxes/${encode(this.id)}/processes`;
  }

  /**
   * Run a command: wait for it to end, or with `background: true` start it
   * and return a {@link CommandHandle} at once. A string runs under
   * `/bin/sh -c`; an array is the program and its arguments, run directly. A
   * non-zero exit of a foreground command is not an error: read `exitCode`
   * (a handle's `wait()` throws {@link CommandExitError}, as E2B's).
   *
   * ```ts
   * const r = await sandbox.commands.run("echo $GREETING; ls /nope", { envs: { GREETING: "hi" } });
   * r.stdout;   // "hi\n"
   * r.exitCode; // 2
   * const server = await sandbox.commands.run("python3 -m http.server", { background: true });
   * await server.kill();
   * ```
   *
   * @param cmd A shell command line, or `[program, ...args]`.
   * @param opts Environment, user, working directory, timeout, stdin, output callbacks.
   * @returns Output, exit code, signal and timing; or the handle.
   * @throws {NotFoundError} The sandbox, the program or the `cwd` does not exist.
   * @throws {BadRequestError} The command or an option is invalid.
   */
  run(cmd: string | string[], opts: RunOptions & { background: true }): Promise<CommandHandle>;
  run(cmd: string | string[], opts?: RunOptions & { background?: false }): Promise<CommandResult>;
  run(cmd: string | string[], opts?: RunOptions): Promise<CommandResult | CommandHandle>;
  async run(cmd: string | string[], opts: RunOptions = {}): Promise<CommandResult | CommandHandle> {
    const body = commandBody(cmd, opts);
    if (opts.background) return this.start(body, opts);
    if (typeof opts.stdin === "boolean") {
      throw new BadRequestError("stdin: true keeps a background command's stdin open: pass background: true, or give the text or bytes to feed");
    }
    if (opts.tag !== undefined) throw new BadRequestError("tag labels a background command: pass background: true");
    if (opts.timeoutMs !== undefined) body.timeout_secs = secondsFromMs(opts.timeoutMs, "timeoutMs");
    if (typeof opts.stdin === "string") body.stdin = opts.stdin;
    else if (opts.stdin instanceof Uint8Array) body.stdin_b64 = Buffer.from(opts.stdin).toString("base64");
    if (!opts.onStdout && !opts.onStderr) {
      const r = await this.client.json<{
        exit_code: number | null;
        signal: number | null;
        timed_out: boolean;
        stdout: string;
        stderr: string;
        duration_ms: number;
      }>({
        method: "POST",
        path: `/v1/sandboxes/${encode(this.id)}/exec`,
        json: body,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      return {
        stdout: r.stdout,
        stderr: r.stderr,
        exitCode: r.exit_code,
        signal: r.signal,
        timedOut: r.timed_out,
        durationMs: r.duration_ms,
      };
    }
    return this.stream(body, opts);
  }

  /** The streaming form of {@link run}: output reaches the callbacks as it arrives. */
  private async stream(body: Record<string, unknown>, opts: RunOptions): Promise<CommandResult> {
    const resp = await this.client.send({
      method: "POST",
      path: `/v1/sandboxes/${encode(this.id)}/exec/stream`,
      json: body,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    const out = new Utf8Collector(opts.onStdout);
    const err = new Utf8Collector(opts.onStderr);
    let exit: { exit_code: number | null; signal: number | null; timed_out: boolean; duration_ms: number } | undefined;
    for await (const ev of ndjson(resp, this.client, "the exec stream")) {
      if (ev.type === "stdout") await out.push(Buffer.from(String(ev.data_b64), "base64"));
      else if (ev.type === "stderr") await err.push(Buffer.from(String(ev.data_b64), "base64"));
      else if (ev.type === "exit") {
        exit = ev as unknown as typeof exit;
        break;
      } else if (ev.type === "error") {
        // The same class as the failure has outside a stream (its `status`).
        throw streamError(ev, `the command failed in sandbox ${this.id}`);
      }
    }
    if (!exit) {
      throw new ZygoteError(`the exec stream of sandbox ${this.id} ended without an exit status`);
    }
    return {
      stdout: await out.finish(),
      stderr: await err.finish(),
      exitCode: exit.exit_code,
      signal: exit.signal,
      timedOut: exit.timed_out,
      durationMs: exit.duration_ms,
    };
  }

  private async start(body: Record<string, unknown>, opts: RunOptions): Promise<CommandHandle> {
    const feed = typeof opts.stdin === "boolean" ? undefined : opts.stdin;
    body.stdin = opts.stdin === true || feed !== undefined;
    if (opts.timeoutMs !== undefined) body.timeout_secs = secondsFromMs(opts.timeoutMs, "timeoutMs");
    if (opts.tag !== undefined) body.tag = opts.tag;
    const p = await this.client.json<WireProcInfo>({ method: "POST", path: this.procs, json: body });
    if (feed !== undefined) await this.input(p.pid, feed, true);
    return this.follow(p.pid, true, false, { onStdout: opts.onStdout, onStderr: opts.onStderr });
  }

  /** @internal Follow a process: a handle on its output stream. */
  async follow(
    pid: number,
    replay: boolean,
    pty: boolean,
    cbs: ConstructorParameters<typeof CommandHandle>[5],
    owner: ConstructorParameters<typeof CommandHandle>[3] = this,
  ): Promise<CommandHandle> {
    const resp = await this.client.send({
      method: "GET",
      path: `${this.procs}/${checkPid(pid)}/output`,
      query: { replay: replay ? "true" : "false" },
    });
    return new CommandHandle(pid, resp, this.client, owner, pty, cbs);
  }

  /** @internal Start a process with a body (the terminal's way in). */
  async startRaw(body: Record<string, unknown>): Promise<number> {
    const p = await this.client.json<WireProcInfo>({ method: "POST", path: this.procs, json: body });
    return p.pid;
  }

  /**
   * Follow a background command again (from this or another client): a new
   * handle that first sees its kept output (its last 256 KiB; not with
   * `replay: false`), then what it prints, then its end.
   *
   * @throws {NotFoundError} No process (or sandbox) with that pid.
   */
  async connect(pid: number, opts: ConnectOptions = {}): Promise<CommandHandle> {
    return this.follow(pid, opts.replay ?? true, false, { onStdout: opts.onStdout, onStderr: opts.onStderr });
  }

  /**
   * The background commands and terminals that run (with `includeExited`,
   * also those that ended and are still kept).
   */
  async list(opts: { includeExited?: boolean } = {}): Promise<ProcessInfo[]> {
    const ws = await this.client.json<WireProcInfo[]>({ method: "GET", path: this.procs });
    return ws.map(procInfo).filter((p) => opts.includeExited || p.running);
  }

  /**
   * SIGKILL to a background command's process group.
   *
   * @returns `true` when it was signalled, `false` when no process has that pid.
   */
  async kill(pid: number): Promise<boolean> {
    return this.signal(pid, 9);
  }

  /** A signal (e.g. 15, SIGTERM) to a background command's process group; `false` when no process has that pid. */
  async signal(pid: number, signal: number): Promise<boolean> {
    positiveInt(signal, "signal");
    try {
      if (signal === 9) {
        await this.client.json<unknown>({ method: "DELETE", path: `${this.procs}/${checkPid(pid)}` });
      } else {
        await this.client.json<unknown>({ method: "POST", path: `${this.procs}/${checkPid(pid)}/signal`, json: { signal } });
      }
      return true;
    } catch (e) {
      if (e instanceof ZygoteError && e.status === 404 && !e.message.includes("no sandbox with id")) return false;
      throw e;
    }
  }

  /** Bytes (or text as UTF-8) for a background command's stdin (started with `stdin: true`) or a terminal. */
  async sendStdin(pid: number, data: string | Uint8Array): Promise<void> {
    await this.input(pid, data, false);
  }

  /** Close a background command's stdin (it reads end-of-file; a terminal gets ^D). */
  async closeStdin(pid: number): Promise<void> {
    await this.input(pid, new Uint8Array(0), true);
  }

  private async input(pid: number, data: string | Uint8Array, eof: boolean): Promise<void> {
    if (typeof data !== "string" && !(data instanceof Uint8Array)) {
      throw new BadRequestError("stdin data must be a string or a Uint8Array");
    }
    await this.client.json<unknown>({
      method: "POST",
      path: `${this.procs}/${checkPid(pid)}/stdin`,
      query: { eof: eof ? "true" : "false" },
      body: typeof data === "string" ? new TextEncoder().encode(data) : data,
    });
  }
}

/** Decodes a byte stream as UTF-8 across chunk boundaries, feeding a callback. */
class Utf8Collector {
  private readonly decoder = new TextDecoder("utf-8");
  private readonly parts: string[] = [];

  constructor(private readonly cb: ((s: string) => unknown) | undefined) {}

  async push(bytes: Uint8Array): Promise<void> {
    const s = this.decoder.decode(bytes, { stream: true });
    if (s !== "") await this.emit(s);
  }

  async finish(): Promise<string> {
    const s = this.decoder.decode();
    if (s !== "") await this.emit(s);
    return this.parts.join("");
  }

  private async emit(s: string): Promise<void> {
    this.parts.push(s);
    await this.cb?.(s);
  }
}
