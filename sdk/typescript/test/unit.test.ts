// Tests without a daemon: configuration like the CLI's, argument checks, and
// the error for an endpoint where nothing answers.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, it } from "node:test";

import {
  BadRequestError,
  ConflictError,
  ConnectionError,
  DEFAULT_SOCKET,
  NotFoundError,
  Sandbox,
  Snapshot,
  ZygoteError,
  resolveEndpoint,
  withSandbox,
} from "@zygote/sdk";

const VARS = ["ZYGOTE_SOCKET", "ZYGOTE_URL", "ZYGOTE_TOKEN"] as const;

describe("configuration", () => {
  let saved: Record<string, string | undefined>;
  beforeEach(() => {
    saved = Object.fromEntries(VARS.map((k) => [k, process.env[k]]));
    for (const k of VARS) delete process.env[k];
  });
  afterEach(() => {
    for (const k of VARS) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });

  it("defaults to the CLI's socket", () => {
    assert.deepEqual(resolveEndpoint(), { kind: "unix", socket: DEFAULT_SOCKET });
    assert.equal(DEFAULT_SOCKET, "/run/zygote/zygote.sock");
  });

  it("reads ZYGOTE_SOCKET, then ZYGOTE_URL with ZYGOTE_TOKEN over it", () => {
    process.env.ZYGOTE_SOCKET = "/tmp/x.sock";
    assert.deepEqual(resolveEndpoint(), { kind: "unix", socket: "/tmp/x.sock" });
    process.env.ZYGOTE_URL = "http://127.0.0.1:8889/";
    process.env.ZYGOTE_TOKEN = "t0k3n-for-the-unit-test";
    assert.deepEqual(resolveEndpoint(), { kind: "tcp", origin: "http://127.0.0.1:8889", token: "t0k3n-for-the-unit-test" });
  });

  it("options beat the environment", () => {
    process.env.ZYGOTE_URL = "http://127.0.0.1:8889";
    process.env.ZYGOTE_TOKEN = "from-env";
    assert.deepEqual(resolveEndpoint({ socket: "/tmp/opt.sock" }), { kind: "unix", socket: "/tmp/opt.sock" });
    assert.deepEqual(resolveEndpoint({ url: "http://[::1]:9000", token: "from-opts" }), {
      kind: "tcp",
      origin: "http://[::1]:9000",
      token: "from-opts",
    });
    // the env token goes with an explicit url too, as for the CLI's --url
    assert.deepEqual(resolveEndpoint({ url: "http://localhost:9000" }), {
      kind: "tcp",
      origin: "http://localhost:9000",
      token: "from-env",
    });
  });

  it("refuses URLs it cannot use, naming them", () => {
    for (const [url, needle] of [
      ["127.0.0.1:8889", "is not"],
      ["ftp://127.0.0.1:8889", "not an http:// URL"],
      ["http://127.0.0.1:8889/api", "only a scheme, host and port"],
      ["not a url", "not a URL"],
    ] as const) {
      assert.throws(
        () => resolveEndpoint({ url }),
        (e: unknown) => e instanceof BadRequestError && e.message.includes(url) && e.message.includes(needle),
        url,
      );
    }
    process.env.ZYGOTE_URL = "localhost";
    assert.throws(() => resolveEndpoint(), /ZYGOTE_URL `localhost`/);
  });
});

describe("errors", () => {
  it("are ZygoteErrors with a status and the class name", () => {
    const e = new NotFoundError("no sandbox with id `x`", 404);
    assert.ok(e instanceof ZygoteError && e instanceof Error);
    assert.equal(e.name, "NotFoundError");
    assert.equal(e.status, 404);
    assert.ok(!(e instanceof ConflictError));
  });

  it("nothing answering is a ConnectionError naming the socket", async () => {
    const dir = mkdtempSync("/tmp/zygts-unit");
    try {
      const socket = join(dir, "none.sock");
      await assert.rejects(Sandbox.list({ socket }), (e: unknown) => {
        assert.ok(e instanceof ConnectionError, String(e));
        assert.equal(e.status, undefined);
        assert.match(e.message, new RegExp(`unix:${socket}`));
        assert.match(e.message, /zygote daemon/);
        return true;
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("nothing listening on TCP is a ConnectionError naming the URL", async () => {
    await assert.rejects(Snapshot.list({ url: "http://127.0.0.1:9" }), (e: unknown) => {
      return e instanceof ConnectionError && e.message.includes("http://127.0.0.1:9");
    });
  });
});

describe("arguments are checked before anything is sent", () => {
  // An endpoint where nothing answers: a request that got sent would be a ConnectionError.
  const socket = "/nonexistent/zygote.sock";
  const bad = async (p: Promise<unknown>, needle: RegExp) =>
    assert.rejects(p, (e: unknown) => e instanceof BadRequestError && e.status === undefined && needle.test(e.message));

  it("create", async () => {
    await bad(Sandbox.create({ socket, memoryMib: 0 }), /memoryMib 0 is not a positive integer/);
    await bad(Sandbox.create({ socket, timeoutMs: -5 }), /timeoutMs -5 is not a positive number/);
    await bad(Sandbox.create({ socket, snapshot: "s", image: "python" }), /both given/);
    await bad(Sandbox.create({ socket, snapshot: "s", timeoutMs: -1 }), /timeoutMs -1/);
    await bad(Sandbox.create({ socket, onExpiry: "stop" as "kill" }), /onExpiry `stop` is unknown/);
    await bad(Sandbox.create({ socket, onExpiry: "kill", lifecycle: { onTimeout: "pause" } }), /both given/);
    await bad(Sandbox.create({ socket, env: {}, envs: {} }), /env and envs were both given/);
    await bad(Sandbox.list({ socket, limit: 0 }), /limit 0/);
    await bad(Sandbox.create({ socket, privateMemory: true }), /pass snapshot too/);
    await bad(Sandbox.create({ socket, env: { N: 1 as unknown as string } }), /env\.N is number/);
    await bad(withSandbox({ socket, vcpus: 1.5 }, () => 1), /vcpus 1.5/);
  });

  it("commands and files", async () => {
    // a Sandbox object for an id; nothing is contacted until a call
    const sb = new (Sandbox as unknown as new (c: unknown, i: unknown) => Sandbox)(
      // the client is only used once a request is sent
      {},
      { id: "x" },
    );
    await bad(sb.commands.run(""), /the command is empty/);
    await bad(sb.commands.run([]), /the argv is empty/);
    await bad(sb.commands.run("true", { timeoutMs: 0 }), /timeoutMs 0/);
    await bad(sb.files.write("relative/path", "x"), /not an absolute guest path/);
    await bad(sb.files.write("/tmp/x", "x", { mode: 0o10000 }), /mode 4096/);
    await bad(sb.files.read("/tmp/x", { format: "json" as "text" }), /format `json`/);
    await bad(sb.fork(0), /n 0 is not a positive integer/);
    await bad(sb.commands.run("true", { stdin: true }), /pass background: true/);
    await bad(sb.commands.connect(0), /pid 0 is not a process id/);
    await bad(sb.pty.create({ rows: 0, cols: 80 }), /terminal rows 0 is out of range/);
    await bad(sb.pty.resize(7, { rows: 24, cols: 1001 }), /terminal cols 1001/);
    await bad(sb.files.list("/tmp", { depth: 33 }), /depth 33 is out of range/);
    await bad(sb.files.write([{ path: "rel", data: "x" }]), /not an absolute guest path/);
    await bad(sb.files.writeFiles([{ path: "/a", data: "x", mode: -1 }]), /mode -1 of \/a/);
  });
});
