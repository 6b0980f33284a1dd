/**
 * Reading NDJSON answers (exec output, followed processes, watches) line by
 * line as they arrive.
 *
 * @module
 */

import { type Client, type OkResponse } from "./client.js";
import { ZygoteError } from "./errors.js";

/**
 * The parsed lines of a streamed answer. A transport failure becomes a
 * ZygoteError; returning early (or throwing in the loop) ends the request.
 */
export async function* ndjson(resp: OkResponse, client: Client, what: string): AsyncGenerator<Record<string, unknown>> {
  const dec = new TextDecoder("utf-8");
  let pending = "";
  const parse = (line: string): Record<string, unknown> | undefined => {
    if (line.trim() === "") return undefined;
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new ZygoteError(`unreadable line of ${what} from the daemon: ${line.slice(0, 200)}`);
    }
  };
  const iter = resp.body[Symbol.asyncIterator]();
  try {
    for (;;) {
      let next: IteratorResult<unknown>;
      try {
        next = await iter.next();
      } catch (e) {
        throw client.wrap(e, `${what} broke off`);
      }
      if (next.done) break;
      const chunk = next.value;
      pending += typeof chunk === "string" ? chunk : dec.decode(chunk as Uint8Array, { stream: true });
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const v = parse(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
        if (v !== undefined) yield v;
      }
    }
    const v = parse(pending + dec.decode());
    if (v !== undefined) yield v;
  } finally {
    resp.body.destroy();
  }
}
