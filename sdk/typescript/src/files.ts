/**
 * `sandbox.files`: moving files in and out of the guest byte for byte
 * (`PUT/GET/DELETE /v1/sandboxes/{id}/files?path=`, raw bodies), several at
 * once (`POST .../files/batch`), directory trees (`walk`, `mkdir`, `rename`)
 * and watches (`GET .../files/watch`), with E2B's names.
 *
 * @module
 */

import { Client, encode } from "./client.js";
import { BadRequestError, ZygoteError } from "./errors.js";
import {
  type EntryInfo,
  type FileStat,
  type FilesystemEvent,
  type WireWalkEntry,
  type WriteEntry,
  type WriteInfo,
  walkEntry,
} from "./types.js";
import { guestPath } from "./validate.js";
import { WatchHandle } from "./watch.js";

/** Data `files.write` accepts: text (written as UTF-8) or bytes, whole or as a stream of chunks. */
export type WriteData = string | Uint8Array | ArrayBuffer | AsyncIterable<Uint8Array>;

/** Options of {@link Files.write}. */
export interface WriteOptions {
  /** Permission bits of the file, e.g. `0o755` (default: the guest's default for new files). */
  mode?: number;
}

/** Options of {@link Files.read}. */
export interface ReadOptions {
  /** `text` (default) decodes UTF-8; `bytes` returns the exact bytes. */
  format?: "text" | "bytes";
}

/** Options of {@link Files.list}. */
export interface ListOptions {
  /** Levels to descend, 1-32 (default 1: the directory's entries). */
  depth?: number;
}

/** Options of {@link Files.watchDir}. */
export interface WatchOptions {
  /** Watch subdirectories too (also ones created later). */
  recursive?: boolean;
  /** Called once when the watch ends, with what ended it (nothing after `stop()`). */
  onExit?: (err?: Error) => unknown;
}

function mode8(mode: number | undefined, what: string): string | undefined {
  if (mode === undefined) return undefined;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new BadRequestError(`mode ${String(mode)}${what} is not a permission value: pass e.g. 0o644`);
  }
  return mode.toString(8);
}

/** Options of {@link Files.remove}. */
export interface RemoveOptions {
  /** Remove a directory and everything below it. */
  recursive?: boolean;
}

/** Files of one sandbox. Reach it as `sandbox.files`. */
export class Files {
  /** @internal */
  constructor(
    private readonly client: Client,
    private readonly id: string,
  ) {}

  private get base(): string {
    return `/v1/sandboxes/${encode(this.id)}/files`;
  }

  /**
   * Write a file in the guest, replacing it if it exists. Bytes arrive
   * exactly as given; a string is written as UTF-8.
   *
   * @param path Absolute guest path.
   * @param data Text, bytes, or an async iterable of byte chunks (streamed).
   * @param opts `mode`, the permission bits.
   * @returns The path and the number of bytes written.
   * @throws {NotFoundError} The sandbox is gone or the parent directory does not exist.
   */
  write(path: string, data: WriteData, opts?: WriteOptions): Promise<WriteInfo>;
  write(files: WriteEntry[]): Promise<WriteInfo[]>;
  async write(pathOrFiles: string | WriteEntry[], data?: WriteData, opts: WriteOptions = {}): Promise<WriteInfo | WriteInfo[]> {
    if (Array.isArray(pathOrFiles)) return this.writeFiles(pathOrFiles);
    const path = pathOrFiles;
    guestPath(path);
    let body: Uint8Array | string | AsyncIterable<Uint8Array>;
    if (typeof data === "string" || data instanceof Uint8Array) body = data;
    else if (data instanceof ArrayBuffer) body = new Uint8Array(data);
    else if (data && typeof (data as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === "function") body = data;
    else throw new BadRequestError(`data for ${path} must be a string, Uint8Array, ArrayBuffer or async iterable of Uint8Array`);
    const mode = mode8(opts.mode, "");
    return this.client.json<WriteInfo>({
      method: "PUT",
      path: this.base,
      query: { path, mode },
      body,
    });
  }

  /**
   * Read a whole file from the guest.
   *
   * @param path Absolute guest path.
   * @param opts `{ format: "bytes" }` for the exact bytes; default text (UTF-8).
   * @throws {NotFoundError} No such file (or sandbox).
   */
  read(path: string, opts?: { format?: "text" }): Promise<string>;
  read(path: string, opts: { format: "bytes" }): Promise<Uint8Array>;
  read(path: string, opts?: ReadOptions): Promise<string | Uint8Array>;
  async read(path: string, opts: ReadOptions = {}): Promise<string | Uint8Array> {
    guestPath(path);
    const format = opts.format ?? "text";
    if (format !== "text" && format !== "bytes") {
      throw new BadRequestError(`format \`${String(format)}\` is unknown: pass "text" or "bytes"`);
    }
    const resp = await this.client.send({ method: "GET", path: this.base, query: { path } });
    let buf: ArrayBuffer;
    try {
      buf = await resp.body.arrayBuffer();
    } catch (e) {
      throw this.client.wrap(e, `the download of ${path} broke off`);
    }
    const expected = Number(resp.headers["content-length"]);
    if (Number.isFinite(expected) && expected !== buf.byteLength) {
      throw new ZygoteError(`the download of ${path} ended after ${buf.byteLength} of ${expected} bytes`);
    }
    const bytes = new Uint8Array(buf);
    return format === "bytes" ? bytes : new TextDecoder("utf-8").decode(bytes);
  }

  /**
   * Write several files in one request (each whole; at most 64 MiB in all),
   * in order; parent directories are created. `write([...])` is the same.
   */
  async writeFiles(files: WriteEntry[]): Promise<WriteInfo[]> {
    if (!Array.isArray(files)) throw new BadRequestError("files must be an array of { path, data }");
    const out = files.map((f) => {
      guestPath(f?.path);
      let bytes: Uint8Array;
      if (typeof f.data === "string") bytes = new TextEncoder().encode(f.data);
      else if (f.data instanceof Uint8Array) bytes = f.data;
      else if (f.data instanceof ArrayBuffer) bytes = new Uint8Array(f.data);
      else throw new BadRequestError(`data of ${f.path} must be a string, Uint8Array or ArrayBuffer`);
      const e: Record<string, unknown> = { path: f.path, data_b64: Buffer.from(bytes).toString("base64") };
      const m = mode8(f.mode, ` of ${f.path}`);
      if (m !== undefined) e.mode = m;
      return e;
    });
    return this.client.json<WriteInfo[]>({ method: "POST", path: `${this.base}/batch`, json: { files: out } });
  }

  /**
   * List a directory: its entries (`depth` 1), or its tree down to `depth`
   * levels (1-32), each directory right before its contents, sorted by path.
   *
   * @param path Absolute guest path of a directory.
   * @throws {NotFoundError} No such directory (or sandbox).
   */
  async list(path: string, opts: ListOptions = {}): Promise<EntryInfo[]> {
    guestPath(path);
    const depth = opts.depth ?? 1;
    if (!Number.isInteger(depth) || depth < 1 || depth > 32) {
      throw new BadRequestError(`depth ${String(depth)} is out of range: pass 1-32 (1: the entries only)`);
    }
    const r = await this.client.json<{ entries: WireWalkEntry[] }>({
      method: "GET",
      path: `${this.base}/walk`,
      query: { path, depth: String(depth) },
    });
    return r.entries.map(walkEntry);
  }

  /**
   * Name, kind, size, mode and modification time of a path.
   *
   * @throws {NotFoundError} No such path (or sandbox).
   */
  async getInfo(path: string): Promise<EntryInfo> {
    const st = await this.stat(path);
    const name = path.replace(/\/+$/, "").split("/").pop() || "/";
    return { name, path, kind: st.kind, type: st.kind, size: st.size, mode: st.mode, modifiedTime: new Date(st.mtime * 1000) };
  }

  /**
   * Create a directory and any missing parents.
   *
   * @returns `true` when it was created, `false` when it already existed.
   * @throws {BadRequestError} Something that is not a directory is in the way.
   */
  async makeDir(path: string): Promise<boolean> {
    guestPath(path);
    const mkdir = (parents: boolean) =>
      this.client.json<unknown>({ method: "POST", path: `${this.base}/mkdir`, query: { path, parents: String(parents) } });
    try {
      await mkdir(false);
      return true;
    } catch (e) {
      if (!(e instanceof ZygoteError)) throw e;
      if (e.status === 404 && !e.message.includes("no sandbox with id")) {
        await mkdir(true);
        return true;
      }
      if (e.status === 400) {
        const st = await this.stat(path).catch(() => undefined);
        if (st?.kind === "dir") return false;
      }
      throw e;
    }
  }

  /**
   * Rename (move) a file or directory.
   *
   * @returns What is at `newPath` then.
   * @throws {NotFoundError} `oldPath` does not exist.
   */
  async rename(oldPath: string, newPath: string): Promise<EntryInfo> {
    guestPath(oldPath, "oldPath");
    guestPath(newPath, "newPath");
    await this.client.json<unknown>({ method: "POST", path: `${this.base}/rename`, json: { from: oldPath, to: newPath } });
    return this.getInfo(newPath);
  }

  /**
   * Watch a directory (inotify in the guest): once this resolves, every
   * create, write, remove, rename and chmod under it reaches `onEvent` until
   * `stop()`.
   *
   * @throws {NotFoundError} No such directory.
   */
  async watchDir(path: string, onEvent: (e: FilesystemEvent) => unknown, opts: WatchOptions = {}): Promise<WatchHandle> {
    guestPath(path);
    const resp = await this.client.send({
      method: "GET",
      path: `${this.base}/watch`,
      query: { path, recursive: opts.recursive ? "true" : "false" },
    });
    return new WatchHandle(resp, this.client, path, onEvent, opts.onExit);
  }

  /**
   * Size, mode, kind and modification time of a path.
   *
   * @throws {NotFoundError} No such path (or sandbox).
   */
  async stat(path: string): Promise<FileStat> {
    guestPath(path);
    return this.client.json<FileStat>({ method: "GET", path: `${this.base}/stat`, query: { path } });
  }

  /** Whether a path exists in the guest. */
  async exists(path: string): Promise<boolean> {
    try {
      await this.stat(path);
      return true;
    } catch (e) {
      if (e instanceof ZygoteError && e.status === 404 && !e.message.includes("no sandbox with id")) return false;
      throw e;
    }
  }

  /**
   * Remove a file, or a directory with `{ recursive: true }`.
   *
   * @throws {NotFoundError} No such path (or sandbox).
   */
  async remove(path: string, opts: RemoveOptions = {}): Promise<void> {
    guestPath(path);
    await this.client.json<unknown>({
      method: "DELETE",
      path: this.base,
      query: { path, recursive: opts.recursive ? "true" : "false" },
    });
  }
}
