/**
 * Checks of arguments before they are sent, so a mistake is reported with
 * the value and the fix rather than as a confusing daemon answer.
 *
 * @module
 */

import { BadRequestError } from "./errors.js";

/** Milliseconds (positive, finite) to the daemon's fractional seconds. */
export function secondsFromMs(ms: number, what: string): number {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms <= 0) {
    throw new BadRequestError(`${what} ${String(ms)} is not a positive number of milliseconds: pass e.g. ${what}: 30_000`);
  }
  return ms / 1000;
}

/** Milliseconds to whole seconds (rounded up), for fields the daemon takes as integers. */
export function wholeSecondsFromMs(ms: number, what: string): number {
  return Math.ceil(secondsFromMs(ms, what));
}

/** A positive integer. */
export function positiveInt(v: number, what: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new BadRequestError(`${what} ${String(v)} is not a positive integer`);
  }
  return v;
}

/** An environment map: string keys to string values. */
export function checkEnv(env: Record<string, string>, what: string): Record<string, string> {
  if (env === null || typeof env !== "object" || Array.isArray(env)) {
    throw new BadRequestError(`${what} must be an object of string values, e.g. { LANG: "C.UTF-8" }`);
  }
  for (const [k, v] of Object.entries(env)) {
    if (typeof v !== "string") {
      throw new BadRequestError(`${what}.${k} is ${typeof v}, not a string: pass String(value)`);
    }
  }
  return env;
}

/** An absolute guest path. */
export function guestPath(p: string, what = "path"): string {
  if (typeof p !== "string" || !p.startsWith("/")) {
    throw new BadRequestError(`${what} \`${String(p)}\` is not an absolute guest path: pass e.g. /tmp/data.bin`);
  }
  return p;
}
