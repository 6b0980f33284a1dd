/**
 * Errors. Every failure the SDK reports is a {@link ZygoteError}; an error
 * answer of the daemon (`{"error": "..."}` with a 4xx/5xx) becomes the
 * subclass for its status, carrying the daemon's message unchanged.
 *
 * @module
 */

/** Any failure reported by the SDK. */
export class ZygoteError extends Error {
  /**
   * The HTTP status of the daemon's answer; `undefined` when the failure did
   * not come from an HTTP error answer (no daemon, a broken stream, a child
   * that did not start).
   */
  readonly status: number | undefined;

  /**
   * @param message What went wrong (the daemon's own message for API errors).
   * @param status The HTTP status, when the daemon answered with one.
   * @param options `cause`, when another error led to this one.
   */
  constructor(message: string, status?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.status = status;
  }
}

/** 400: the request was invalid; the message names the value and the fix. */
export class BadRequestError extends ZygoteError {}

/** 401: the bearer token is missing or wrong (TCP only). */
export class AuthenticationError extends ZygoteError {}

/** 403: the guest refused the operation (e.g. a permission). */
export class ForbiddenError extends ZygoteError {}

/** 404: no sandbox, snapshot, file or route by that name. */
export class NotFoundError extends ZygoteError {}

/** 409: the thing exists but is in the wrong state (a taken tag, a wrong mode). */
export class ConflictError extends ZygoteError {}

/** 413: the request is too large. */
export class PayloadTooLargeError extends ZygoteError {}

/** 501: the daemon does not implement this yet. */
export class NotImplementedError extends ZygoteError {}

/** 503: the daemon is shutting down. */
export class UnavailableError extends ZygoteError {}

/** 504: something in the daemon or guest took too long. */
export class TimeoutError extends ZygoteError {}

/** No daemon answers at the configured endpoint. */
export class ConnectionError extends ZygoteError {
  /** The endpoint tried, e.g. `unix:/run/zygote/zygote.sock` or `http://127.0.0.1:8889`. */
  readonly endpoint: string;

  /**
   * @param endpoint The endpoint tried.
   * @param cause The network error.
   */
  constructor(endpoint: string, cause: unknown) {
    const code = (cause as { code?: string } | undefined)?.code;
    super(
      `no zygote daemon answers at ${endpoint}${code ? ` (${code})` : ""}: ` +
        "start one with `zygote daemon` (as root), or point ZYGOTE_SOCKET / ZYGOTE_URL at it",
      undefined,
      { cause },
    );
    this.endpoint = endpoint;
  }
}

/**
 * Some children of a spawn or fork did not start. The children that did start
 * were removed again before this was thrown, so nothing is left running.
 */
export class SpawnError extends ZygoteError {
  /** Why each failed child did not start, in order. */
  readonly errors: string[];

  /**
   * @param errors One message per failed child.
   * @param started How many children had started (and were removed).
   */
  constructor(errors: string[], started: number) {
    super(
      `${errors.length} of ${errors.length + started} children did not start` +
        (started > 0 ? ` (the ${started} that did were removed)` : "") +
        `: ${errors.join("; ")}`,
    );
    this.errors = errors;
  }
}

/** The error class for an HTTP status. */
export function errorForStatus(status: number, message: string): ZygoteError {
  switch (status) {
    case 400:
      return new BadRequestError(message, status);
    case 401:
      return new AuthenticationError(message, status);
    case 403:
      return new ForbiddenError(message, status);
    case 404:
      return new NotFoundError(message, status);
    case 409:
      return new ConflictError(message, status);
    case 413:
      return new PayloadTooLargeError(message, status);
    case 501:
      return new NotImplementedError(message, status);
    case 503:
      return new UnavailableError(message, status);
    case 504:
      return new TimeoutError(message, status);
    default:
      return new ZygoteError(message, status);
  }
}

/**
 * A command did not exit with 0: thrown by `wait()` on a background
 * command's handle (E2B's `CommandExitError`). The result is in `result`.
 */
export class CommandExitError extends ZygoteError {
  /** The command's output and how it ended. */
  readonly result: import("./types.js").CommandResult;

  /** @param result The command's result. */
  constructor(result: import("./types.js").CommandResult) {
    const how = result.timedOut
      ? "timed out"
      : result.exitCode !== null
        ? `exited with ${result.exitCode}`
        : `was killed by signal ${result.signal}`;
    const tail = result.stderr.trim().slice(-500);
    super(`the command ${how}${tail ? `: ${tail}` : ""}`);
    this.result = result;
  }

  /** The exit code (`null` when a signal ended it). */
  get exitCode(): number | null {
    return this.result.exitCode;
  }

  /** What it printed to stdout. */
  get stdout(): string {
    return this.result.stdout;
  }

  /** What it printed to stderr. */
  get stderr(): string {
    return this.result.stderr;
  }

  /** Why it failed, in words (E2B's field). */
  get error(): string {
    return this.message;
  }
}

/**
 * The error for an `error` event (or line) of a stream: the class of its
 * `status` (as the same failure outside a stream), else a plain ZygoteError.
 */
export function streamError(ev: { error?: unknown; status?: unknown }, what: string): ZygoteError {
  const msg = typeof ev.error === "string" ? ev.error : JSON.stringify(ev);
  if (typeof ev.status === "number" && ev.status >= 400 && ev.status <= 599) {
    return errorForStatus(ev.status, msg);
  }
  return new ZygoteError(`${what}: ${msg}`);
}
