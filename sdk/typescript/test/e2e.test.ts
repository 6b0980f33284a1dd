// End-to-end: the SDK against a real daemon booting real guests under TCG.
// Two guests boot (the shared sandbox and Snapshot.create's); every other
// sandbox is a copy-on-write child, which starts in a fraction of a second.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";

import {
  AuthenticationError,
  BadRequestError,
  ConflictError,
  NotFoundError,
  Sandbox,
  Snapshot,
  ZygoteError,
  withSandbox,
} from "@zygote/sdk";

import { execFileSync } from "node:child_process";

import { Daemon, e2eSkip, zygoteBin } from "./daemon.js";
import * as features from "./features.js";

const skip = e2eSkip();

describe("SDK end to end", { skip }, () => {
  let d: Daemon;
  let sb: Sandbox;
  let conn: { socket: string };

  before(async () => {
    d = await Daemon.start();
    conn = { socket: d.socket };
    try {
      sb = await Sandbox.create({ ...conn, memoryMib: 320, env: { ZY_SANDBOX: "from-create" }, timeoutMs: 3_600_000, metadata: { suite: "ts" } });
    } catch (e) {
      throw new Error(`create failed: ${String(e)}\n--- daemon log ---\n${d.tail()}`);
    }
  });

  after(async () => {
    await sb?.kill();
    await d?.stop();
  });

  it("create: a booted sandbox with the asked size, listed and connectable", async () => {
    assert.equal(sb.info.state, "running");
    assert.equal(sb.info.image, "python");
    assert.equal(sb.info.memoryMib, 320);
    assert.equal(sb.info.vcpus, 1);
    assert.equal(sb.info.memory, "own");
    assert.deepEqual([sb.info.metadata, sb.info.onExpiry, sb.info.sandboxId], [{ suite: "ts" }, "kill", sb.id]);
    // The lifetime counts from when the sandbox runs, a boot after its creation.
    const life = sb.info.expiresAtUnix! - sb.info.createdAtUnix;
    assert.ok(life >= 3600 && life <= 3630, `${sb.info.createdAtUnix} ${sb.info.expiresAtUnix}`);
    const all = await Sandbox.list(conn);
    assert.deepEqual(all.map((s) => s.id), [sb.id]);
    const again = await Sandbox.connect(sb.id, conn);
    assert.equal(again.info.pid, sb.info.pid);
    assert.ok((await again.ping()) > 0);
    assert.equal(await sb.isRunning(), true);
  });

  it("commands.run: exit code, stdout and stderr apart, argv without a shell", async () => {
    const r = await sb.commands.run("echo out; echo err >&2; exit 7");
    assert.deepEqual([r.stdout, r.stderr, r.exitCode, r.signal, r.timedOut], ["out\n", "err\n", 7, null, false]);
    assert.ok(r.durationMs > 0);
    const a = await sb.commands.run(["python3", "-c", "import sys; print(sys.argv[1:])", "a b", "$HOME"]);
    assert.equal(a.stdout, "['a b', '$HOME']\n");
    assert.equal(a.exitCode, 0);
  });

  it("commands.run: sandbox env, per-command env, cwd, stdin", async () => {
    const e = await sb.commands.run("echo $ZY_SANDBOX $ZY_CMD", { env: { ZY_CMD: "per command" } });
    assert.equal(e.stdout, "from-create per command\n");
    assert.equal((await sb.commands.run("pwd", { cwd: "/usr/lib" })).stdout, "/usr/lib\n");
    assert.equal((await sb.commands.run("tr a-z A-Z", { stdin: "shout\n" })).stdout, "SHOUT\n");
    const bytes = randomBytes(5000);
    const h = await sb.commands.run("sha256sum", { stdin: bytes });
    assert.equal(h.stdout.split(" ")[0], createHash("sha256").update(bytes).digest("hex"));
    await assert.rejects(sb.commands.run("pwd", { cwd: "/no/such/dir" }), (err: unknown) => {
      return err instanceof NotFoundError && err.status === 404 && err.message.includes("/no/such/dir");
    });
  });

  it("commands.run: timeoutMs kills the command", async () => {
    const t0 = Date.now();
    const r = await sb.commands.run("sleep 30; echo never", { timeoutMs: 1500 });
    assert.equal(r.timedOut, true);
    assert.equal(r.exitCode, null);
    assert.equal(r.signal, 9);
    assert.equal(r.stdout, "");
    assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
  });

  it("commands.run: onStdout/onStderr see output while the command runs", async () => {
    const seen: { t: number; fd: "out" | "err"; data: string }[] = [];
    const t0 = Date.now();
    const r = await sb.commands.run("echo first; sleep 1.5; echo second >&2; sleep 1.5; echo third", {
      onStdout: (data) => seen.push({ t: Date.now() - t0, fd: "out", data }),
      onStderr: (data) => seen.push({ t: Date.now() - t0, fd: "err", data }),
    });
    const done = Date.now() - t0;
    assert.equal(r.stdout, "first\nthird\n");
    assert.equal(r.stderr, "second\n");
    assert.equal(r.exitCode, 0);
    const out = seen.filter((s) => s.fd === "out");
    const err = seen.filter((s) => s.fd === "err");
    assert.equal(out.map((s) => s.data).join(""), r.stdout);
    assert.equal(err.map((s) => s.data).join(""), r.stderr);
    // "first" arrived about 3 s before the end, "second" in between
    assert.ok(out[0]!.data.startsWith("first") && done - out[0]!.t > 2000, JSON.stringify({ seen, done }));
    assert.ok(done - err[0]!.t > 800 && err[0]!.t - out[0]!.t > 800, JSON.stringify({ seen, done }));
    // a UTF-8 character split across two writes (and two events) arrives whole
    const parts: string[] = [];
    const u = await sb.commands.run("printf '\\303'; sleep 0.5; printf '\\251!\\n'", { onStdout: (s) => parts.push(s) });
    assert.equal(u.stdout, "é!\n");
    assert.equal(parts.join(""), "é!\n");
    // a failure to start, streamed, is the same typed error as buffered
    await assert.rejects(sb.commands.run(["/no/such/program"], { onStdout: () => {} }), (e: unknown) => {
      return e instanceof NotFoundError && e.status === 404 && e.message.includes("/no/such/program");
    });
    // a callback that throws ends the run with its error
    const boom = new Error("stop here");
    await assert.rejects(sb.commands.run("echo x; sleep 5", { onStdout: () => { throw boom; } }), (e) => e === boom);
  });

  it("files: text and bytes round-trip exactly, also through the guest", async () => {
    const text = "héllo, wörld ✓\nline two\n";
    assert.deepEqual(await sb.files.write("/root/t.txt", text), { path: "/root/t.txt", bytes: Buffer.byteLength(text) });
    assert.equal(await sb.files.read("/root/t.txt"), text);
    assert.equal((await sb.commands.run("cat /root/t.txt")).stdout, text);

    const every = new Uint8Array(256 * 4).map((_, i) => i % 256);
    await sb.files.write("/root/every.bin", every);
    assert.deepEqual(await sb.files.read("/root/every.bin", { format: "bytes" }), every);

    // larger than 1 MiB: goes through the daemon's transfer disk
    const big = new Uint8Array(randomBytes(3 * 1024 * 1024 + 17));
    const w = await sb.files.write("/root/big.bin", big.buffer.slice(big.byteOffset, big.byteOffset + big.byteLength));
    assert.equal(w.bytes, big.length);
    const sum = (await sb.commands.run("sha256sum /root/big.bin")).stdout.split(" ")[0];
    assert.equal(sum, createHash("sha256").update(big).digest("hex"));
    const back = await sb.files.read("/root/big.bin", { format: "bytes" });
    assert.ok(back instanceof Uint8Array && back.length === big.length && Buffer.compare(back, big) === 0);

    // streamed from an async iterable, with a mode
    async function* chunks() {
      yield new TextEncoder().encode("#!/bin/sh\n");
      yield new TextEncoder().encode("echo streamed script\n");
    }
    await sb.files.write("/root/run.sh", chunks(), { mode: 0o755 });
    assert.equal((await sb.files.stat("/root/run.sh")).mode & 0o777, 0o755);
    assert.equal((await sb.commands.run("/root/run.sh")).stdout, "streamed script\n");
  });

  it("files: list, stat, remove (and recursively)", async () => {
    await sb.commands.run("mkdir -p /root/d/sub && printf abc > /root/d/a && ln -s a /root/d/link");
    await sb.files.write("/root/d/sub/deep", "x");
    const ls = (await sb.files.list("/root/d")).map(({ name, path, kind, size }) => ({ name, path, kind, size }));
    assert.deepEqual(ls, [
      { name: "a", path: "/root/d/a", kind: "file", size: 3 },
      { name: "link", path: "/root/d/link", kind: "symlink", size: 1 },
      { name: "sub", path: "/root/d/sub", kind: "dir", size: ls[2]!.size },
    ]);
    const st = await sb.files.stat("/root/d/a");
    assert.equal(st.kind, "file");
    assert.equal(st.size, 3);
    await sb.files.remove("/root/d/a");
    assert.equal(await sb.files.exists("/root/d/a"), false);
    await assert.rejects(sb.files.read("/root/d/a"), (e: unknown) => {
      return e instanceof NotFoundError && e.status === 404 && e.message.includes("/root/d/a");
    });
    await assert.rejects(sb.files.remove("/root/d/sub"), (e: unknown) => e instanceof ZygoteError && e.status! >= 400);
    assert.equal(await sb.files.exists("/root/d/sub/deep"), true);
    await sb.files.remove("/root/d", { recursive: true });
    assert.equal(await sb.files.exists("/root/d"), false);
    await assert.rejects(sb.files.list("/root/d"), NotFoundError);
  });

  it("eval: a warm interpreter whose state persists; exceptions are reported", async () => {
    assert.equal((await sb.eval("import math\nx = 41")).result, null);
    assert.equal((await sb.eval("x + 1")).result, "42");
    const p = await sb.eval("print('printed'); math.sqrt(16)");
    assert.deepEqual([p.result, p.stdout, p.error], ["4.0", "printed\n", null]);
    const err = await sb.eval("1 / 0");
    assert.equal(err.error, "ZeroDivisionError: division by zero");
    assert.match(err.traceback ?? "", /Traceback/);
  });

  it("branch: a snapshot of this moment; children start from it, not from later", async () => {
    await sb.files.write("/root/marker", "before the branch");
    await sb.eval("branch_var = 'b1'");
    const snap = await sb.branch({ tag: "ts-branch", wait: true });
    assert.equal(snap.tag, "ts-branch");
    assert.equal(snap.branchedFrom, sb.id);
    assert.equal(snap.status, "ready");
    assert.equal(snap.memoryMib, 320);
    assert.ok(snap.memoryBytes > 0);
    // the parent runs on and changes
    await sb.files.write("/root/marker", "after the branch");
    assert.deepEqual(await Snapshot.get("ts-branch", conn), snap);
    assert.ok((await Snapshot.list(conn)).some((s) => s.tag === "ts-branch"));

    const child = await Sandbox.create({ ...conn, snapshot: "ts-branch" });
    try {
      assert.equal(child.info.snapshotTag, "ts-branch");
      assert.equal(child.info.memory, "cow");
      assert.equal(await child.files.read("/root/marker"), "before the branch");
      assert.equal((await child.eval("branch_var")).result, "'b1'");
      assert.equal(await sb.files.read("/root/marker"), "after the branch");
    } finally {
      await child.kill();
    }
    await assert.rejects(sb.branch({ tag: "ts-branch" }), (e: unknown) => {
      return e instanceof ConflictError && e.status === 409 && e.message.includes("ts-branch");
    });
    assert.equal(await Snapshot.delete("ts-branch", conn), true);
    await assert.rejects(Snapshot.get("ts-branch", conn), (e: unknown) => {
      return e instanceof NotFoundError && e.message === "no snapshot tagged `ts-branch`: list them with `zygote snapshot ls`";
    });
    assert.equal(await Snapshot.delete("ts-branch", conn), false);
  });

  it("fork: children see the parent's state and then diverge", async () => {
    await sb.files.write("/root/forked", "parent state");
    await sb.eval("fork_var = [1, 2, 3]");
    const kids = await sb.fork(2, { timeoutMs: 600_000, metadata: { forked: "yes" } });
    try {
      assert.equal(kids.length, 2);
      for (const k of kids) {
        // the parent's labels, and the fork's over them; a lifetime of its own
        assert.deepEqual(k.info.metadata, { suite: "ts", forked: "yes" });
        assert.ok(Math.abs(k.info.expiresAtUnix! - Date.now() / 1000 - 600) < 10);
      }
      assert.notEqual(kids[0]!.id, kids[1]!.id);
      const tag = kids[0]!.info.snapshotTag;
      assert.ok(tag && kids[1]!.info.snapshotTag === tag);
      assert.equal((await Snapshot.get(tag, conn)).branchedFrom, sb.id);
      for (const k of kids) {
        assert.equal(await k.files.read("/root/forked"), "parent state");
        assert.equal((await k.eval("fork_var")).result, "[1, 2, 3]");
      }
      await kids[0]!.files.write("/root/forked", "child 0");
      await kids[0]!.eval("fork_var.append(4)");
      assert.equal(await kids[1]!.files.read("/root/forked"), "parent state");
      assert.equal((await kids[1]!.eval("fork_var")).result, "[1, 2, 3]");
      assert.equal(await sb.files.read("/root/forked"), "parent state");
      assert.equal((await sb.eval("fork_var")).result, "[1, 2, 3]");
      const ids = (await Sandbox.list(conn)).map((s) => s.id).sort();
      assert.deepEqual(ids, [sb.id, kids[0]!.id, kids[1]!.id].sort());
    } finally {
      await Promise.all(kids.map((k) => k.kill()));
    }
  });

  it("commands.run background: a server listed, re-attached from a second client, killed", () =>
    features.backgroundServer(sb, conn));

  it("background stdin, user, envs; streamed errors keep their class", () => features.stdinUserEnvs(sb));

  it("pty: python3 typed into a terminal, 6*7, a resize", () => features.terminal(sb));

  it("files: several in one call, a tree to a depth, mkdir, rename, a watch", () => features.trees(sb));

  it("Snapshot.create with warmup and a server; spawn, kill, withSandbox and await using", async () => {
    const snap = await Snapshot.create({
      ...conn,
      tag: "ts-warm",
      warmup: "import json\nwarm = json.dumps({'v': 6 * 7})",
      warmupCmd: features.WARM_SERVER,
      readyPort: features.WARM_PORT,
    });
    assert.equal(snap.tag, "ts-warm");
    assert.equal(snap.image, "python");
    assert.equal(snap.memoryMib, 256);
    assert.ok((await Snapshot.list(conn)).some((s) => s.tag === "ts-warm"));
    await assert.rejects(Snapshot.create({ ...conn, tag: "ts-warm" }), ConflictError);

    // spawn several; kill one and it is gone
    const kids = await Sandbox.spawn("ts-warm", 2, conn);
    assert.equal(kids.length, 2);
    assert.equal((await kids[0]!.eval("warm")).result, `'{"v": 42}'`);
    assert.equal(await kids[0]!.kill(), true);
    assert.equal(await kids[0]!.isRunning(), false);
    assert.ok(!(await Sandbox.list(conn)).some((s) => s.id === kids[0]!.id));
    await assert.rejects(kids[0]!.commands.run("true"), (e: unknown) => {
      return e instanceof NotFoundError && e.message.includes(kids[0]!.id);
    });
    assert.equal(await kids[0]!.kill(), false);
    assert.equal(await Sandbox.kill(kids[1]!.id, conn), true);

    // withSandbox removes the sandbox after fn, also when fn throws
    let inside = "";
    const v = await withSandbox({ ...conn, snapshot: "ts-warm" }, async (s) => {
      inside = s.id;
      return (await s.eval("warm")).result;
    });
    assert.equal(v, `'{"v": 42}'`);
    assert.ok(inside && !(await Sandbox.list(conn)).some((s) => s.id === inside));
    const oops = new Error("fn failed");
    await assert.rejects(
      withSandbox({ ...conn, snapshot: "ts-warm" }, (s) => {
        inside = s.id;
        throw oops;
      }),
      (e) => e === oops,
    );
    assert.ok(!(await Sandbox.list(conn)).some((s) => s.id === inside));

    // await using removes it at the end of the block
    {
      await using s = await Sandbox.create({ ...conn, snapshot: "ts-warm" });
      inside = s.id;
      assert.equal(await s.isRunning(), true);
    }
    assert.ok(!(await Sandbox.list(conn)).some((s) => s.id === inside));
    assert.deepEqual((await Sandbox.list(conn)).map((s) => s.id), [sb.id]);
  });

  it("getHost reaches a guest server; the egress policy on spawn and on a running child", async () => {
    await using s = await Sandbox.create({ ...conn, snapshot: "ts-warm", allowInternetAccess: false, network: { allowOut: ["198.18.0.2/32"] } });
    assert.ok(s.info.network);
    assert.deepEqual([s.info.network.address, s.info.network.internet, s.info.network.allowOut], ["10.0.2.2", false, ["198.18.0.2/32"]]);
    await s.files.write("/tmp/www/index.html", "ts-guest-page");
    await s.commands.run("python3 -m http.server 8000 --directory /tmp/www", { background: true });
    const host = await s.getHost(8000);
    assert.match(host, /^127\.0\.0\.1:\d+$/);
    assert.equal(await s.getHost(8000), host);
    let page = "";
    for (let i = 0; i < 150 && !page.includes("ts-guest-page"); i++) {
      try {
        page = await (await fetch(`http://${host}/`)).text();
      } catch {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    assert.ok(page.includes("ts-guest-page"), page);
    await s.setNetwork({ denyOut: ["10.0.0.0/8"] });
    assert.deepEqual([s.info.network?.internet, s.info.network?.denyOut], [true, ["10.0.0.0/8"]]);
    await assert.rejects(s.getHost(0), BadRequestError);
    await assert.rejects(s.setNetwork({ denyOut: ["10.0.0.0/40"] }), (e: unknown) => e instanceof BadRequestError && e.message.includes("10.0.0.0/40"));
  });

  it("a volume outlives the child that wrote it; another mounts it read-only", async () => {
    const name = `tsvol${process.pid}`;
    execFileSync(zygoteBin(), ["volume", "create", name, "--size", "32M", "--socket", d.socket]);
    try {
      {
        await using a = await Sandbox.create({ ...conn, snapshot: "ts-warm", volumes: [{ name, path: "/data" }] });
        await a.files.write("/data/note.txt", "kept-ts");
        await a.commands.run("sync");
      }
      await using b = await Sandbox.create({ ...conn, snapshot: "ts-warm", volumes: [{ name, path: "/mnt/v", readOnly: true }] });
      assert.equal(await b.files.read("/mnt/v/note.txt"), "kept-ts");
      await assert.rejects(Sandbox.create({ ...conn, snapshot: "ts-warm", volumes: [{ path: "/x" }] }), BadRequestError);
    } finally {
      try {
        execFileSync(zygoteBin(), ["volume", "rm", name, "--socket", d.socket]);
      } catch {
        // removed with the daemon's home anyway
      }
    }
  });

  it("a warm-up server runs in three children; labels find them, paged", () =>
    features.warmServerAndLabels(conn, "ts-warm"));

  it("lifetimes: a child with timeoutMs 3000 goes, one extended stays, one pauses on expiry", () =>
    features.lifetimes(conn, "ts-warm"));

  it("pause then resume (connect) keeps eval state and a background counter", () =>
    features.pauseResume(conn, "ts-warm"));

  it("bad input is a typed error with the daemon's message", async () => {
    await assert.rejects(Sandbox.connect("no-such-id", conn), (e: unknown) => {
      assert.ok(e instanceof NotFoundError, String(e));
      assert.equal(e.status, 404);
      assert.equal(e.message, "no sandbox with id `no-such-id`: list them with `zygote ls`");
      return true;
    });
    await assert.rejects(Sandbox.create({ ...conn, memoryMib: 64 }), (e: unknown) => {
      return e instanceof BadRequestError && e.status === 400 && e.message.includes("memory_mib 64 is out of range");
    });
    await assert.rejects(Sandbox.create({ ...conn, image: "no-such-image" }), (e: unknown) => {
      return e instanceof NotFoundError && e.message.includes("no-such-image");
    });
    await assert.rejects(Sandbox.create({ ...conn, snapshot: "no-such-snap" }), (e: unknown) => {
      return e instanceof NotFoundError && e.message.includes("no-such-snap");
    });
    await assert.rejects(sb.branch({ tag: "bad tag!" }), (e: unknown) => {
      return e instanceof BadRequestError && e.status === 400 && e.message.includes("`bad tag!`");
    });
  });

  it("TCP with the bearer token; refused without it; configured from the environment", async () => {
    const tcp = { url: d.url, token: d.token };
    const remote = await Sandbox.connect(sb.id, tcp);
    assert.equal((await remote.commands.run("echo over tcp")).stdout, "over tcp\n");
    const lines: string[] = [];
    await remote.commands.run("echo streamed over tcp", { onStdout: (s) => lines.push(s) });
    assert.equal(lines.join(""), "streamed over tcp\n");
    const data = new Uint8Array(randomBytes(100_000));
    await remote.files.write("/root/tcp.bin", data);
    assert.equal(Buffer.compare(await sb.files.read("/root/tcp.bin", { format: "bytes" }), data), 0);

    for (const token of [undefined, "wrong-token-wrong-token", d.token.slice(0, -1)]) {
      await assert.rejects(Sandbox.list({ url: d.url, ...(token ? { token } : {}) }), (e: unknown) => {
        return e instanceof AuthenticationError && e.status === 401 && e.message.includes("Bearer");
      });
    }

    const saved = { s: process.env.ZYGOTE_SOCKET, u: process.env.ZYGOTE_URL, t: process.env.ZYGOTE_TOKEN };
    try {
      delete process.env.ZYGOTE_URL;
      delete process.env.ZYGOTE_TOKEN;
      process.env.ZYGOTE_SOCKET = d.socket;
      assert.deepEqual((await Sandbox.list()).map((s) => s.id), [sb.id]);
      process.env.ZYGOTE_URL = d.url;
      process.env.ZYGOTE_TOKEN = d.token;
      process.env.ZYGOTE_SOCKET = "/nonexistent.sock";
      const viaEnv = await Sandbox.connect(sb.id);
      assert.equal((await viaEnv.commands.run("echo env")).stdout, "env\n");
    } finally {
      for (const [k, v] of [["ZYGOTE_SOCKET", saved.s], ["ZYGOTE_URL", saved.u], ["ZYGOTE_TOKEN", saved.t]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it("kill: the sandbox is removed and its QEMU is gone", async () => {
    const pid = sb.info.pid!;
    assert.equal(await sb.kill(), true);
    assert.equal(await sb.kill(), false);
    assert.deepEqual(await Sandbox.list(conn), []);
    let alive = true;
    for (let i = 0; i < 100 && alive; i++) {
      try {
        process.kill(pid, 0);
        await new Promise((r) => setTimeout(r, 100));
      } catch {
        alive = false;
      }
    }
    assert.equal(alive, false, `QEMU ${pid} still runs`);
  });
});

describe("https with a private CA", { skip }, () => {
  let d: Daemon;
  before(async () => {
    d = await Daemon.start({ tls: true });
  });
  after(async () => {
    await d?.stop();
  });

  it("trusts the CA given as ca (or ZYGOTE_CA); refuses without it", async () => {
    assert.ok(d.url.startsWith("https://"));
    const ca = `${d.dir}/ca.pem`;
    assert.deepEqual((await Sandbox.list({ url: d.url, token: d.token, ca })).map((s) => s.id), []);
    process.env.ZYGOTE_CA = ca;
    try {
      assert.deepEqual((await Sandbox.list({ url: d.url, token: d.token })).map((s) => s.id), []);
    } finally {
      delete process.env.ZYGOTE_CA;
    }
    await assert.rejects(Sandbox.list({ url: d.url, token: d.token }), ZygoteError);
    await assert.rejects(Sandbox.list({ url: d.url, token: d.token, ca: "/no/such/ca.pem" }), (e: unknown) => e instanceof BadRequestError && e.message.includes("ca.pem"));
    await assert.rejects(Sandbox.list({ url: d.url, token: "not-the-token-0123456789", ca }), AuthenticationError);
  });
});
