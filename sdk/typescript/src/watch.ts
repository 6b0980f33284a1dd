/**
 * `WatchHandle`: a directory watch (`GET .../files/watch`, NDJSON), as E2B's.
 * The watch is in place once `watchDir` resolves (the daemon answers only
 * then); each event goes to `onEvent` as it arrives until {@link WatchHandle.stop}.
 *
 * @module
 */

import type { Client, OkResponse } from "./client.js";
import { ZygoteError, streamError } from "./errors.js";
import { ndjson } from "./ndjson.js";
import { type FilesystemEvent, FilesystemEventType } from "./types.js";

const KINDS = new Set<string>(Object.values(FilesystemEventType));

/** A directory watch. */
export class WatchHandle {
  private stopped = false;
  private readonly done: Promise<void>;
  /** What ended the watch, when something did. */
  error: Error | undefined;

  /** @internal */
  constructor(
    private readonly resp: OkResponse,
    client: Client,
    private readonly path: string,
    onEvent: (e: FilesystemEvent) => unknown,
    onExit: ((err?: Error) => unknown) | undefined,
  ) {
    this.done = (async () => {
      try {
        for await (const doc of ndjson(resp, client, `the watch of ${path}`)) {
          if (this.stopped) break;
          if ("error" in doc) throw streamError(doc, `the watch of ${path} failed`);
          await onEvent(this.event(doc));
        }
      } catch (e) {
        if (!this.stopped) this.error = e instanceof Error ? e : new Error(String(e));
      }
      await onExit?.(this.error);
    })();
  }

  private event(doc: Record<string, unknown>): FilesystemEvent {
    const path = String(doc.path ?? "");
    const kind = String(doc.kind ?? "");
    if (!KINDS.has(kind)) throw new ZygoteError(`unknown filesystem event kind \`${kind}\` from the daemon`);
    const root = this.path.endsWith("/") ? this.path : this.path + "/";
    return { name: path.startsWith(root) ? path.slice(root.length) : path, type: kind as FilesystemEventType, path };
  }

  /** End the watch (`onExit` is called without an error). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.resp.body.destroy();
    await this.done;
  }
}
