// End-to-end scenarios of background commands, terminals, directory trees,
// warm-up servers, lifetimes, labels and pause/resume, run by e2e.test.ts on
// its daemon, its booted sandbox and its warm snapshot (whose children start
// in a fraction of a second).

import assert from "node:assert/strict";
import { existsSync } from "node:fs";

import {
  CommandExitError,
  CommandHandle,
  type FilesystemEvent,
  FilesystemEventType,
  NotFoundError,
  Sandbox,
  Snapshot,
  ConflictError,
} from "@zygote/sdk";

type Conn = { socket: string };

/** The warm snapshot's server: it answers each client with how many it has served. */
export const WARM_PORT = 7777;
export const WARM_SERVER =
  `python3 -u -c "import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ` +
  `s.bind(('127.0.0.1', ${WARM_PORT})); s.listen(); n=0\nwhile True:\n c,_=s.accept(); n+=1; c.sendall(b'pg-like %d\\n' % n); c.close()"`;
const ASK_WARM = `python3 -c "import socket; print(socket.create_connection(('127.0.0.1', ${WARM_PORT})).recv(64).decode().strip())"`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Read a handle until `needle` shows (the process's own timeout bounds the wait). */
async function until(h: CommandHandle, needle: string): Promise<string> {
  let seen = "";
  for await (const o of h) {
    seen += o.stdout ?? o.stderr ?? Buffer.from(o.pty ?? new Uint8Array()).toString("utf8");
    if (seen.includes(needle)) return seen;
  }
  throw new Error(`${JSON.stringify(needle)} never showed; the output ended: ${JSON.stringify(seen)}`);
}

async function gone(pid: number | null, ms = 20_000): Promise<boolean> {
  assert.ok(pid);
  for (const t0 = Date.now(); Date.now() - t0 < ms; await sleep(100)) {
    if (!existsSync(`/proc/${pid}`)) return true;
  }
  return false;
}

export async function backgroundServer(sb: Sandbox, conn: Conn): Promise<void> {
  const seen: string[] = [];
  const h = await sb.commands.run("python3 -u -m http.server 8000 --bind 127.0.0.1", {
    background: true,
    onStderr: (s) => seen.push(s),
    tag: "web",
    timeoutMs: 300_000,
  });
  assert.ok(h instanceof CommandHandle && h.pid > 0 && h.exitCode === undefined);
  try {
    const fetch = `python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/?hello').status)"`;
    for (const t0 = Date.now(); (await sb.commands.run(fetch)).stdout.trim() !== "200"; await sleep(200)) {
      assert.ok(Date.now() - t0 < 60_000, "the server never answered");
    }
    const p = (await sb.commands.list()).find((q) => q.pid === h.pid);
    assert.ok(p && p.tag === "web" && p.running && !p.pty && p.cmd.includes("http.server"), JSON.stringify(p));
    // A second client re-attaches and first sees the kept tail.
    const other = await Sandbox.connect(sb.id, conn);
    const again = await other.commands.connect(h.pid);
    assert.match(await until(again, "GET /?hello"), /GET \/\?hello HTTP/);
    assert.equal(await other.commands.kill(h.pid), true);
    await assert.rejects(again.wait(), (e: unknown) => {
      return e instanceof CommandExitError && e.result.signal === 9 && e.exitCode === null;
    });
    await assert.rejects(h.wait(), CommandExitError);
    assert.ok(seen.join("").includes("GET /?hello") && seen.join("") === h.stderr);
    assert.ok(!(await sb.commands.list()).some((q) => q.pid === h.pid));
    const ended = (await sb.commands.list({ includeExited: true })).find((q) => q.pid === h.pid);
    assert.ok(ended && !ended.running && ended.signal === 9);
    assert.equal(await sb.commands.kill(999_999), false);
  } finally {
    await sb.commands.kill(h.pid);
  }
}

export async function stdinUserEnvs(sb: Sandbox): Promise<void> {
  const h = await sb.commands.run(`tr a-z A-Z; echo "$WHO" >&2; exit 4`, {
    background: true,
    stdin: true,
    envs: { WHO: "env-seen" },
    timeoutMs: 60_000,
  });
  await h.sendStdin("first ");
  await sb.commands.sendStdin(h.pid, new TextEncoder().encode("second\n"));
  await h.closeStdin();
  await assert.rejects(h.wait(), (e: unknown) => {
    assert.ok(e instanceof CommandExitError);
    assert.deepEqual([e.stdout, e.stderr, e.exitCode], ["FIRST SECOND\n", "env-seen\n", 4]);
    return true;
  });
  const fed = await sb.commands.run("cat; id -un", { background: true, stdin: "fed\n", user: "nobody" });
  const r = await fed.wait();
  assert.deepEqual([r.stdout, r.exitCode], ["fed\nnobody\n", 0]);
  assert.equal((await sb.commands.run("id -un", { user: "nobody" })).stdout, "nobody\n");
  // The same failure, buffered and streamed, is the same typed error.
  for (const onStdout of [undefined, () => {}]) {
    await assert.rejects(sb.commands.run(["/no/such/program"], onStdout ? { onStdout } : {}), (e: unknown) => {
      return e instanceof NotFoundError && e.status === 404 && e.message.includes("/no/such/program");
    });
  }
  // An unknown pid is a 404 (from connect itself: the daemon checks before it streams).
  await assert.rejects(sb.commands.connect(999_999).then((h) => h.wait()), (e: unknown) => e instanceof NotFoundError && e.status === 404);
}

export async function terminal(sb: Sandbox): Promise<void> {
  const data: Uint8Array[] = [];
  const t = await sb.pty.create({ rows: 24, cols: 80, onData: (b) => data.push(b), timeoutMs: 120_000, cwd: "/tmp" });
  try {
    assert.ok((await sb.commands.list()).some((p) => p.pid === t.pid && p.pty));
    await sb.pty.sendInput(t.pid, new TextEncoder().encode("python3 -q\n"));
    await sb.pty.sendInput(t.pid, "print(6*7)\n");
    // The answer on a line of its own: the echo of what was typed has no 42.
    await until(t, "\r\n42\r\n");
    await sb.pty.resize(t.pid, { rows: 40, cols: 100 });
    await sb.pty.sendInput(t.pid, "import os; print(os.get_terminal_size())\n");
    assert.match(await until(t, "lines=40"), /columns=100, lines=40/);
    await sb.pty.sendInput(t.pid, "exit()\npwd; echo $TERM; exit 3\n");
    await assert.rejects(t.wait(), (e: unknown) => e instanceof CommandExitError && e.exitCode === 3);
    assert.ok(t.stdout.includes("/tmp\r\nxterm-256color\r\n"), t.stdout);
    assert.equal(Buffer.concat(data).toString("utf8"), t.stdout);
  } finally {
    await sb.pty.kill(t.pid);
  }
  const s = await sb.pty.create({ rows: 24, cols: 80, cmd: ["sleep", "600"] });
  assert.equal(await sb.pty.kill(s.pid), true);
  await assert.rejects(s.wait(), (e: unknown) => e instanceof CommandExitError && e.result.signal === 9);
}

export async function trees(sb: Sandbox): Promise<void> {
  const f = sb.files;
  const w = await f.write([
    { path: "/srv/app/main.py", data: "print('hi')\n" },
    { path: "/srv/app/static/x.bin", data: new Uint8Array([0, 1, 2]), mode: 0o600 },
    { path: "/srv/app/static/deep/y.txt", data: "deep" },
  ]);
  assert.deepEqual(w, [
    { path: "/srv/app/main.py", bytes: 12 },
    { path: "/srv/app/static/x.bin", bytes: 3 },
    { path: "/srv/app/static/deep/y.txt", bytes: 4 },
  ]);
  assert.deepEqual((await f.list("/srv/app")).map((e) => e.path), ["/srv/app/main.py", "/srv/app/static"]);
  const tree = await f.list("/srv", { depth: 3 });
  assert.deepEqual(tree.map((e) => e.path), [
    "/srv/app",
    "/srv/app/main.py",
    "/srv/app/static",
    "/srv/app/static/deep",
    "/srv/app/static/x.bin",
  ]);
  const x = tree[4]!;
  assert.deepEqual([x.name, x.type, x.size, x.mode & 0o777], ["x.bin", "file", 3, 0o600]);
  assert.ok(Math.abs(x.modifiedTime.getTime() - Date.now()) < 3_600_000);
  assert.equal(await f.makeDir("/srv/new/a/b"), true);
  assert.equal(await f.makeDir("/srv/new/a/b"), false);
  assert.equal((await f.getInfo("/srv/new/a/b")).type, "dir");
  const moved = await f.rename("/srv/app/main.py", "/srv/new/app.py");
  assert.deepEqual([moved.path, moved.name, moved.size, moved.kind], ["/srv/new/app.py", "app.py", 12, "file"]);
  assert.equal(await f.exists("/srv/app/main.py"), false);
  assert.equal(await f.read("/srv/new/app.py"), "print('hi')\n");
  await assert.rejects(f.rename("/srv/nope", "/srv/x"), NotFoundError);

  // A watch: in place once watchDir resolves; events stream until stop().
  const got: FilesystemEvent[] = [];
  let last: () => void = () => {};
  const lastSeen = new Promise<void>((r) => (last = r));
  let exited = 0;
  const wh = await f.watchDir(
    "/srv/new",
    (e) => {
      got.push(e);
      if (e.name === "a/last.txt") last();
    },
    { recursive: true, onExit: () => void exited++ },
  );
  await f.write("/srv/new/one.txt", "1");
  await sb.commands.run("echo 2 >> /srv/new/one.txt; mv /srv/new/one.txt /srv/new/two.txt; chmod 600 /srv/new/two.txt; rm /srv/new/two.txt");
  await f.write("/srv/new/a/last.txt", "in a subdirectory");
  await Promise.race([lastSeen, sleep(30_000).then(() => assert.fail(`no event for a/last.txt: ${JSON.stringify(got)}`))]);
  await wh.stop();
  const kinds = new Set(got.map((e) => `${e.type} ${e.name}`));
  for (const want of ["write one.txt", "rename two.txt", "chmod two.txt", "remove two.txt", "rename a/last.txt"]) {
    assert.ok(kinds.has(want), `${want}: ${JSON.stringify(got)}`);
  }
  assert.ok(got.every((e) => e.path === "/srv/new/" + e.name && Object.values(FilesystemEventType).includes(e.type)));
  assert.equal(exited, 1);
  const n = got.length;
  await f.write("/srv/new/after.txt", "x");
  await sleep(500);
  assert.equal(got.length, n, "nothing after stop()");
  await assert.rejects(f.watchDir("/srv/no-such-dir", () => {}), NotFoundError);
  await f.remove("/srv", { recursive: true });
}

export async function warmServerAndLabels(conn: Conn, tag: string): Promise<void> {
  const kids = await Sandbox.spawn(tag, 3, { ...conn, metadata: { suite: "ts-life", role: "db" } });
  try {
    for (const k of kids) {
      // Each child has its own copy of the server, which answered the readiness check once.
      assert.equal((await k.commands.run(ASK_WARM)).stdout.trim(), "pg-like 2");
      assert.equal((await k.commands.run(ASK_WARM)).stdout.trim(), "pg-like 3");
      assert.ok((await k.commands.list()).some((p) => p.tag === "warmup" && p.running));
      assert.deepEqual(k.info.metadata, { suite: "ts-life", role: "db" });
    }
    const ids = kids.map((k) => k.id).sort();
    const found = await Sandbox.list({ ...conn, metadata: { role: "db" } });
    assert.deepEqual(found.map((s) => s.id).sort(), ids);
    assert.equal(found.nextToken, null);
    const running = await Sandbox.list({ ...conn, metadata: { role: "db", suite: "ts-life" }, state: "running" });
    assert.deepEqual(running.map((s) => s.id).sort(), ids);
    assert.deepEqual(await Sandbox.list({ ...conn, metadata: { role: "web" } }), []);
    assert.deepEqual(await Sandbox.list({ ...conn, metadata: { role: "db" }, state: "paused" }), []);
    const page = await Sandbox.list({ ...conn, metadata: { role: "db" }, limit: 2 });
    assert.ok(page.length === 2 && page.hasNext && page.nextToken);
    const rest = await Sandbox.list({ ...conn, metadata: { role: "db" }, limit: 2, nextToken: page.nextToken });
    assert.ok(rest.length === 1 && !rest.hasNext);
    assert.deepEqual([...page, ...rest].map((s) => s.id).sort(), ids);
  } finally {
    await Promise.all(kids.map((k) => k.kill()));
  }
}

export async function lifetimes(conn: Conn, tag: string): Promise<void> {
  const t0 = Date.now();
  const short = await Sandbox.create({ ...conn, snapshot: tag, timeoutMs: 3000 });
  const kept = await Sandbox.create({ ...conn, snapshot: tag, timeoutMs: 3000 });
  try {
    for (const s of [short, kept]) {
      const left = s.info.expiresAtUnix! - s.info.createdAtUnix;
      assert.ok(left >= 1 && left <= 4, String(left));
    }
    await kept.setTimeout(120_000);
    assert.ok(kept.info.expiresAtUnix! - Date.now() / 1000 > 100);
    while (await short.isRunning()) {
      assert.ok(Date.now() - t0 < 20_000, "the child outlived its 3 s");
      await sleep(200);
    }
    assert.ok(Date.now() - t0 >= 1500, "it went too early");
    await assert.rejects(short.getInfo(), NotFoundError);
    assert.ok(await gone(short.info.pid), "its QEMU is gone too");
    assert.equal((await kept.commands.run("echo alive")).stdout, "alive\n");
    // A lifetime that pauses instead; connect() resumes it (E2B's way).
    await kept.setTimeout(1000, { onExpiry: "pause" });
    assert.equal(kept.info.onExpiry, "pause");
    for (const t1 = Date.now(); (await kept.getInfo()).state !== "paused"; await sleep(200)) {
      assert.ok(Date.now() - t1 < 30_000, "not paused on expiry");
    }
    const back = await Sandbox.connect(kept.id, { ...conn, timeoutMs: 300_000 });
    assert.equal(back.info.state, "running");
    assert.ok(back.info.expiresAtUnix !== null);
  } finally {
    await short.kill();
    await kept.kill();
  }
}

export async function pauseResume(conn: Conn, tag: string): Promise<void> {
  const sb = await Sandbox.create({ ...conn, snapshot: tag });
  try {
    await sb.eval("kept = 'paused-and-back'");
    const counter = await sb.commands.run(
      "i=0; while true; do i=$((i+1)); echo $i > /tmp/c.t; mv /tmp/c.t /tmp/c; sleep 0.1; done",
      { background: true, tag: "counter" },
    );
    await counter.disconnect();
    for (const t0 = Date.now(); !(await sb.files.exists("/tmp/c")); await sleep(100)) {
      assert.ok(Date.now() - t0 < 20_000);
    }
    await sleep(500);
    const before = Number(await sb.files.read("/tmp/c"));
    const pid = sb.info.pid;
    assert.equal(await sb.pause(), true);
    assert.equal(sb.info.state, "paused");
    assert.equal(sb.info.pid, null);
    assert.ok(await gone(pid), "pausing stops its QEMU");
    assert.equal(await sb.pause(), false);
    await assert.rejects(sb.eval("1"), ConflictError);
    assert.ok((await Sandbox.list({ ...conn, state: "paused" })).some((s) => s.id === sb.id));
    // Another client connects: resumed under the same id.
    const other = await Sandbox.connect(sb.id, conn);
    assert.deepEqual([other.id, other.info.state], [sb.id, "running"]);
    assert.equal((await other.eval("kept")).result, "'paused-and-back'");
    const after = Number(await other.files.read("/tmp/c"));
    assert.ok(after >= before, `${before} ${after}`);
    await sleep(500);
    assert.ok(Number(await other.files.read("/tmp/c")) > after, "the counter counts on");
    assert.ok((await other.commands.list()).some((p) => p.pid === counter.pid && p.tag === "counter"));
    assert.equal(await sb.resume(), false);
    await sb.pause();
    assert.equal(await sb.resume(), true);
    assert.equal((await sb.eval("kept")).result, "'paused-and-back'");
  } finally {
    await sb.kill();
  }
  assert.equal(await Snapshot.delete(tag, conn), true);
}
