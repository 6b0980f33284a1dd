/**
 * `sandbox.pty`: terminals, as E2B's: a process on a pseudo-terminal
 * (`POST /v1/sandboxes/{id}/processes` with `pty`), typed into with
 * {@link Pty.sendInput} and resized with {@link Pty.resize}.
 *
 * @module
 */

import { type Commands, checkPid, commandBody, ptySize } from "./commands.js";
import type { Client } from "./client.js";
import { encode } from "./client.js";
import type { CommandHandle } from "./handle.js";
import type { PtySize } from "./types.js";
import { secondsFromMs } from "./validate.js";

/** What a terminal's environment gets unless `envs` says otherwise (as E2B's). */
const PTY_ENV = { TERM: "xterm-256color", LANG: "C.UTF-8", LC_ALL: "C.UTF-8" };

/** Options of {@link Pty.create}: E2B's, plus `cmd`. */
export interface PtyCreateOptions extends PtySize {
  /** Called with each piece of terminal output, as bytes. */
  onData?: (data: Uint8Array) => unknown;
  /** Run as this guest user (default root). */
  user?: string;
  /** Working directory. */
  cwd?: string;
  /** Environment variables. */
  envs?: Record<string, string>;
  /** Kill it after this many milliseconds (default: no limit). */
  timeoutMs?: number;
  /** What to run instead of `/bin/bash -i -l` (zygote's addition). */
  cmd?: string | string[];
}

/** Terminals of one sandbox. Reach it as `sandbox.pty`. */
export class Pty {
  /** @internal */
  constructor(
    private readonly client: Client,
    private readonly id: string,
    private readonly commands: Commands,
  ) {}

  /**
   * Start a terminal: `/bin/bash -i -l` (or `cmd`) on a terminal of
   * `rows` x `cols`, with `TERM=xterm-256color` and a UTF-8 locale unless
   * `envs` says otherwise. Its output goes to `onData` and to the handle.
   *
   * ```ts
   * const t = await sandbox.pty.create({ rows: 24, cols: 80, onData: (b) => process.stdout.write(b) });
   * await sandbox.pty.sendInput(t.pid, new TextEncoder().encode("ls\n"));
   * ```
   */
  async create(opts: PtyCreateOptions): Promise<CommandHandle> {
    const body = commandBody(opts.cmd ?? ["/bin/bash", "-i", "-l"], {
      envs: { ...PTY_ENV, ...(opts.envs ?? {}) },
      cwd: opts.cwd,
      user: opts.user,
    });
    body.pty = ptySize({ rows: opts.rows, cols: opts.cols });
    body.stdin = true;
    if (opts.timeoutMs !== undefined) body.timeout_secs = secondsFromMs(opts.timeoutMs, "timeoutMs");
    const pid = await this.commands.startRaw(body);
    return this.commands.follow(pid, true, true, { onData: opts.onData }, this.commands);
  }

  /** Follow a terminal again: its kept output first (unless `replay: false`). */
  async connect(pid: number, opts: { onData?: (data: Uint8Array) => unknown; replay?: boolean } = {}): Promise<CommandHandle> {
    return this.commands.follow(pid, opts.replay ?? true, true, { onData: opts.onData }, this.commands);
  }

  /** Keystrokes for a terminal (bytes, or text as UTF-8). */
  async sendInput(pid: number, data: Uint8Array | string): Promise<void> {
    await this.commands.sendStdin(pid, data);
  }

  /** A new size for a terminal (its program gets SIGWINCH). */
  async resize(pid: number, size: PtySize): Promise<void> {
    await this.client.json<unknown>({
      method: "POST",
      path: `/v1/sandboxes/${encode(this.id)}/processes/${checkPid(pid)}/resize`,
      json: ptySize(size),
    });
  }

  /** SIGKILL to a terminal's process group; `false` when no process has that pid. */
  async kill(pid: number): Promise<boolean> {
    return this.commands.kill(pid);
  }
}
