/**
 * `sandbox.commands`: running processes in the guest through the streaming
 * exec endpoint (`POST /v1/sandboxes/{id}/exec/stream`, NDJSON events).
 *
 * @module
 */

import { Client, encode } from "./client.js";
import { BadRequestError, ZygoteError } from "./errors.js";
import type { CommandResult } from "./types.js";
import { checkEnv, secondsFromMs } from "./validate.js";

/** Options of {@link Commands.run}. */
export interface RunOptions {
  /** Extra environment for this command (on top of the sandbox's). */
  env?: Record<string, string>;
  /** Working directory in the guest. */
  cwd?: string;
  /** Kill the command's process group after this many milliseconds (`timedOut` is then true). */
  timeoutMs?: number;
  /** Fed to the command's stdin, which is then closed. */
  stdin?: string | Uint8Array;
  /** Called with each piece of standard output as it arrives (decoded as UTF-8). */
  onStdout?: (data: string) => void;
  /** Called with each piece of standard error as it arrives (decoded as UTF-8). */
  onStderr?: (data: string) => void;
  /** Abort the request (the SDK stops waiting; the daemon then ends the stream). */
  signal?: AbortSignal;
}

/** A line of the exec stream. */
type ExecEvent =
  | { type: "started"; pid: number }
  | { type: "stdout"; data_b64: string }
  | { type: "stderr"; data_b64: string }
  | { type: "exit"; exit_code: number | null; signal: number | null; timed_out: boolean; duration_ms: number }
  | { type: "error"; error: string };

/** Runs commands in one sandbox. Reach it as `sandbox.commands`. */
export class Commands {
  /** @internal */
  constructor(
    private readonly client: Client,
    private readonly id: string,
  ) {}

  /**
   * Run a command and wait for it to end. A string runs under `/bin/sh -c`;
   * an array is the program and its arguments, run directly. A non-zero exit
   * is not an error: read `exitCode`. With `onStdout` or `onStderr` the output
   * is streamed (`POST /v1/sandboxes/{id}/exec/stream`) and handed to them as
   * it arrives; without, the daemon answers once the command ends.
   *
   * ```ts
   * const r = await sandbox.commands.run("echo $GREETING; ls /nope", { env: { GREETING: "hi" } });
   * r.stdout;   // "hi\n"
   * r.exitCode; // 2
   * ```
   *
   * @param cmd A shell command line, or `[program, ...args]`.
   * @param opts Environment, working directory, timeout, stdin, output callbacks.
   * @returns Output, exit code, signal and timing.
   * @throws {NotFoundError} The sandbox, the program or the `cwd` does not exist
   *   (when streaming, a failure to start is a {@link ZygoteError} without status).
   * @throws {BadRequestError} The command or an option is invalid.
   */
  async run(cmd: string | string[], opts: RunOptions = {}): Promise<CommandResult> {
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
    if (opts.env !== undefined) body.env = checkEnv(opts.env, "env");
    if (opts.cwd !== undefined) body.cwd = opts.cwd;
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
    let exit: Extract<ExecEvent, { type: "exit" }> | undefined;
    let pending = "";
    const handle = (line: string): void => {
      if (line.trim() === "") return;
      let ev: ExecEvent;
      try {
        ev = JSON.parse(line) as ExecEvent;
      } catch {
        throw new ZygoteError(`unreadable exec stream line from the daemon: ${line.slice(0, 200)}`);
      }
      switch (ev.type) {
        case "started":
          break;
        case "stdout":
          out.push(Buffer.from(ev.data_b64, "base64"));
          break;
        case "stderr":
          err.push(Buffer.from(ev.data_b64, "base64"));
          break;
        case "exit":
          exit = ev;
          break;
        case "error":
          // The stream has answered 200 already, so the daemon's error class is
          // not known here (the buffered form of run() reports it as a status).
          throw new ZygoteError(`the command failed in sandbox ${this.id}: ${ev.error}`);
      }
    };
    const lines = new TextDecoder("utf-8");
    const iter = resp.body[Symbol.asyncIterator]();
    try {
      for (;;) {
        let next: IteratorResult<unknown>;
        try {
          next = await iter.next();
        } catch (e) {
          throw this.client.wrap(e, "the exec stream broke off");
        }
        if (next.done) break;
        const chunk = next.value;
        pending += typeof chunk === "string" ? chunk : lines.decode(chunk as Uint8Array, { stream: true });
        let nl: number;
        while ((nl = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          // A throwing callback ends the run with its own error.
          handle(line);
        }
      }
      handle(pending + lines.decode());
    } catch (e) {
      resp.body.destroy();
      throw e;
    }
    if (!exit) {
      throw new ZygoteError(`the exec stream of sandbox ${this.id} ended without an exit status`);
    }
    const x: Extract<ExecEvent, { type: "exit" }> = exit;
    return {
      stdout: out.finish(),
      stderr: err.finish(),
      exitCode: x.exit_code,
      signal: x.signal,
      timedOut: x.timed_out,
      durationMs: x.duration_ms,
    };
  }
}

/** Decodes a byte stream as UTF-8 across chunk boundaries, feeding a callback. */
class Utf8Collector {
  private readonly decoder = new TextDecoder("utf-8");
  private readonly parts: string[] = [];

  constructor(private readonly cb: ((s: string) => void) | undefined) {}

  push(bytes: Uint8Array): void {
    const s = this.decoder.decode(bytes, { stream: true });
    if (s !== "") this.emit(s);
  }

  finish(): string {
    const s = this.decoder.decode();
    if (s !== "") this.emit(s);
    return this.parts.join("");
  }

  private emit(s: string): void {
    this.parts.push(s);
    this.cb?.(s);
  }
}
