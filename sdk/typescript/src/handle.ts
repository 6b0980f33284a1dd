/**
 * `CommandHandle`: a background command or terminal being followed, as
 * E2B's. Its output stream (`GET .../processes/{pid}/output`, NDJSON) is read
 * from the start; callbacks see each piece as it arrives, `for await` sees
 * it too, and `wait()` resolves at the end.
 *
 * @module
 */

import type { Client, OkResponse } from "./client.js";
import { CommandExitError, ZygoteError, streamError } from "./errors.js";
import { ndjson } from "./ndjson.js";
import type { CommandResult } from "./types.js";

/** What iterating over a handle yields: one of the three is set. */
export interface CommandOutput {
  /** A piece of standard output. */
  stdout?: string;
  /** A piece of standard error. */
  stderr?: string;
  /** A piece of a terminal's output, as bytes. */
  pty?: Uint8Array;
}

/** @internal What a handle asks to kill its process or feed it. */
export interface HandleOwner {
  kill(pid: number): Promise<boolean>;
  sendStdin(pid: number, data: string | Uint8Array): Promise<void>;
  closeStdin(pid: number): Promise<void>;
}

/** @internal Callbacks of a handle. */
export interface HandleCallbacks {
  onStdout?: ((data: string) => unknown) | undefined;
  onStderr?: ((data: string) => unknown) | undefined;
  onData?: ((data: Uint8Array) => unknown) | undefined;
}

interface ExitEvent {
  exit_code: number | null;
  signal: number | null;
  timed_out: boolean;
  duration_ms: number;
}

/**
 * A background command (`commands.run(cmd, { background: true })`,
 * `commands.connect(pid)`) or a terminal (`pty.create`). The process runs on
 * when the handle goes; {@link disconnect} stops following it.
 */
export class CommandHandle implements AsyncIterable<CommandOutput> {
  /** The process id in the guest. */
  readonly pid: number;
  private readonly chunks: CommandOutput[] = [];
  private readonly outDec = new TextDecoder("utf-8");
  private readonly errDec = new TextDecoder("utf-8");
  private exit: ExitEvent | undefined;
  private failure: Error | undefined;
  private finished = false;
  private disconnected = false;
  private wake: () => void = () => {};
  private changed: Promise<void>;
  private readonly done: Promise<void>;

  /** @internal */
  constructor(
    pid: number,
    private readonly resp: OkResponse,
    private readonly client: Client,
    private readonly owner: HandleOwner,
    private readonly pty: boolean,
    private readonly cbs: HandleCallbacks,
  ) {
    this.pid = pid;
    this.changed = new Promise((r) => (this.wake = r));
    this.done = this.consume(resp);
  }

  private notify(): void {
    const w = this.wake;
    this.changed = new Promise((r) => (this.wake = r));
    w();
  }

  private async push(c: CommandOutput): Promise<void> {
    this.chunks.push(c);
    this.notify();
    if (c.stdout !== undefined) await this.cbs.onStdout?.(c.stdout);
    else if (c.stderr !== undefined) await this.cbs.onStderr?.(c.stderr);
    else if (c.pty !== undefined) await this.cbs.onData?.(c.pty);
  }

  private async consume(resp: OkResponse): Promise<void> {
    try {
      for await (const ev of ndjson(resp, this.client, `the output of process ${this.pid}`)) {
        if (this.disconnected) break;
        const type = ev.type;
        if (type === "stdout" || type === "stderr") {
          const bytes = Buffer.from(String(ev.data_b64 ?? ""), "base64");
          if (this.pty && type === "stdout") {
            if (bytes.length > 0) await this.push({ pty: new Uint8Array(bytes) });
            continue;
          }
          const dec = type === "stdout" ? this.outDec : this.errDec;
          const text = dec.decode(bytes, { stream: true });
          if (text !== "") await this.push(type === "stdout" ? { stdout: text } : { stderr: text });
        } else if (type === "exit") {
          const out = this.outDec.decode();
          if (out !== "") await this.push({ stdout: out });
          const err = this.errDec.decode();
          if (err !== "") await this.push({ stderr: err });
          this.exit = ev as unknown as ExitEvent;
          break;
        } else if (type === "error") {
          throw streamError(ev, `following process ${this.pid} failed`);
        }
      }
      if (!this.exit && !this.disconnected) {
        throw new ZygoteError(`the output of process ${this.pid} ended without an exit status`);
      }
    } catch (e) {
      if (!this.disconnected) this.failure = e instanceof Error ? e : new Error(String(e));
    } finally {
      this.finished = true;
      this.notify();
    }
  }

  /** Standard output read so far (a terminal's output, decoded, for a terminal). */
  get stdout(): string {
    if (this.pty) {
      return Buffer.concat(this.chunks.filter((c) => c.pty).map((c) => c.pty!)).toString("utf8");
    }
    return this.chunks.map((c) => c.stdout ?? "").join("");
  }

  /** Standard error read so far. */
  get stderr(): string {
    return this.chunks.map((c) => c.stderr ?? "").join("");
  }

  /** The exit code once the end was read; `undefined` while it runs (`null` after a signal). */
  get exitCode(): number | null | undefined {
    return this.exit?.exit_code;
  }

  /** Why following failed, if it did. */
  get error(): string | undefined {
    return this.failure?.message;
  }

  /**
   * Wait for the end.
   *
   * @returns The result when it exited with 0.
   * @throws {CommandExitError} It exited otherwise (a code, a signal, its timeout).
   */
  async wait(): Promise<CommandResult> {
    await this.done;
    if (this.failure) throw this.failure;
    const x = this.exit;
    if (!x) {
      throw new ZygoteError(
        `the handle of process ${this.pid} was disconnected: follow it again with commands.connect(${this.pid})`,
      );
    }
    const r: CommandResult = {
      stdout: this.stdout,
      stderr: this.stderr,
      exitCode: x.exit_code,
      signal: x.signal,
      timedOut: x.timed_out,
      durationMs: x.duration_ms,
    };
    if (r.exitCode !== 0) throw new CommandExitError(r);
    return r;
  }

  /** The output from the start, then as it arrives, until the process ends. */
  async *[Symbol.asyncIterator](): AsyncIterator<CommandOutput> {
    let i = 0;
    for (;;) {
      while (i < this.chunks.length) yield this.chunks[i++]!;
      if (this.finished) {
        if (this.failure) throw this.failure;
        return;
      }
      await this.changed;
    }
  }

  /** SIGKILL to its process group; `false` when the process is unknown. */
  async kill(): Promise<boolean> {
    return this.owner.kill(this.pid);
  }

  /** Bytes (or text as UTF-8) for its stdin (started with `stdin: true`) or its terminal. */
  async sendStdin(data: string | Uint8Array): Promise<void> {
    await this.owner.sendStdin(this.pid, data);
  }

  /** Close its stdin (a terminal gets ^D). */
  async closeStdin(): Promise<void> {
    await this.owner.closeStdin(this.pid);
  }

  /** Stop following; the process runs on (`commands.connect(pid)` follows it again). */
  async disconnect(): Promise<void> {
    if (this.finished) return;
    this.disconnected = true;
    this.resp.body.destroy();
    await this.done;
  }
}
