/**
 * `sandbox.files`: moving files in and out of the guest byte for byte
 * (`PUT/GET/DELETE /v1/sandboxes/{id}/files?path=`, raw bodies) and listing
 * directories.
 *
 * @module
 */

import { Client, encode } from "./client.js";
import { BadRequestError, ZygoteError } from "./errors.js";
import type { EntryInfo, EntryKind, FileStat, WriteInfo } from "./types.js";
import { guestPath } from "./validate.js";

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
  async write(path: string, data: WriteData, opts: WriteOptions = {}): Promise<WriteInfo> {
    guestPath(path);
    let body: Uint8Array | string | AsyncIterable<Uint8Array>;
    if (typeof data === "string" || data instanceof Uint8Array) body = data;
    else if (data instanceof ArrayBuffer) body = new Uint8Array(data);
    else if (data && typeof (data as AsyncIterable<Uint8Array>)[Symbol.asyncIterator] === "function") body = data;
    else throw new BadRequestError(`data for ${path} must be a string, Uint8Array, ArrayBuffer or async iterable of Uint8Array`);
    let mode: string | undefined;
    if (opts.mode !== undefined) {
      if (!Number.isInteger(opts.mode) || opts.mode < 0 || opts.mode > 0o7777) {
        throw new BadRequestError(`mode ${String(opts.mode)} is not a permission value: pass e.g. 0o644`);
      }
      mode = opts.mode.toString(8);
    }
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
   * List a directory, sorted by name.
   *
   * @param path Absolute guest path of a directory.
   * @throws {NotFoundError} No such directory (or sandbox).
   */
  async list(path: string): Promise<EntryInfo[]> {
    guestPath(path);
    const r = await this.client.json<{ path: string; entries: { name: string; kind: EntryKind; size: number }[] }>({
      method: "GET",
      path: `${this.base}/list`,
      query: { path },
    });
    const dir = path.endsWith("/") ? path : path + "/";
    return r.entries.map((e) => ({ name: e.name, path: dir + e.name, kind: e.kind, size: e.size }));
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
      if (e instanceof ZygoteError && e.status === 404 && e.message.includes(path)) return false;
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
