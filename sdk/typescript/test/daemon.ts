// Test harness: a real `zygote daemon` on a private socket, home and TCP port
// (bearer token), booting real guests under TCG from the image scripts/test.sh
// builds. Mirrors crates/tests/src/lib.rs.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, closeSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { ConnectionError, health } from "@zygote/sdk";

/** sdk/typescript (this file is compiled to build/test/daemon.js). */
const sdkDir = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const repoDir = resolve(sdkDir, "../..");

/** Where scripts/test.sh builds the image. */
export function imageHome(): string {
  return process.env.ZYGOTE_TEST_HOME || "/var/lib/zygote-test";
}

/** The zygote binary under test. */
export function zygoteBin(): string {
  return process.env.ZYGOTE_BIN || join(repoDir, "target/release/zygote");
}

/**
 * Why end-to-end tests cannot run here (a string for node:test's `skip`), or
 * false when they can. With ZYGOTE_E2E=1 (CI) a reason is a failure instead.
 */
export function e2eSkip(): string | false {
  let why: string | undefined;
  if (process.getuid?.() !== 0) why = "not root";
  else if (!existsSync(join(imageHome(), "images/python/current"))) {
    why = `no image at ${join(imageHome(), "images/python/current")} (run scripts/test.sh, which builds it)`;
  } else if (!existsSync(zygoteBin())) {
    why = `no zygote binary at ${zygoteBin()} (cargo build --release -p zygote-cli, or set ZYGOTE_BIN)`;
  }
  if (why === undefined) return false;
  if (process.env.ZYGOTE_E2E === "1") {
    throw new Error(`ZYGOTE_E2E=1 but end-to-end tests cannot run: ${why}`);
  }
  console.error(`SKIP end-to-end tests: ${why}`);
  return why;
}

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => ok(port));
    });
  });
}

/** QEMU processes whose command line mentions `needle`. */
export function qemuProcesses(needle: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${name}/cmdline`, "utf8");
    } catch {
      continue;
    }
    if (cmd.includes("qemu-system") && cmd.includes(needle)) out.push(Number(name));
  }
  return out;
}

/** A running daemon and how to reach it. */
export class Daemon {
  private child: ChildProcess | undefined;
  private exited: Promise<void>;

  private constructor(
    child: ChildProcess,
    /** Temp dir holding the socket, home, token and log. */
    readonly dir: string,
    /** Unix socket. */
    readonly socket: string,
    /** Base URL of the TCP listener. */
    readonly url: string,
    /** Its bearer token. */
    readonly token: string,
  ) {
    this.child = child;
    this.exited = new Promise((ok) => child.once("exit", () => ok()));
    // If the test process ends without stop() (a crash), do not leave the daemon behind.
    const orphan = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    };
    process.once("exit", orphan);
    child.once("exit", () => process.removeListener("exit", orphan));
  }

  /**
   * Start a daemon with a temp home (images linked in), a socket, and TCP with
   * a token file; with `tls`, TLS on TCP with a private CA made by openssl
   * (its PEM file is `<dir>/ca.pem`).
   */
  static async start(opts: { tls?: boolean } = {}): Promise<Daemon> {
    const dir = mkdtempSync("/tmp/zygts");
    const home = join(dir, "home");
    mkdirSync(home);
    symlinkSync(join(imageHome(), "images"), join(home, "images"));
    const socket = join(dir, "d.sock");
    const token = randomBytes(24).toString("base64url");
    const tokenFile = join(dir, "token");
    writeFileSync(tokenFile, token + "\n", { mode: 0o600 });
    const port = await freePort();
    const tlsArgs = opts.tls ? makeTls(dir) : [];
    const log = openSync(join(dir, "daemon.log"), "w");
    const child = spawn(
      zygoteBin(),
      ["daemon", "--socket", socket, "--home", home, "--listen", `127.0.0.1:${port}`, "--token-file", tokenFile, ...tlsArgs],
      { stdio: ["ignore", log, log], env: { ...process.env, ZYGOTE_LOG: "info,zygote_engine=debug" } },
    );
    closeSync(log);
    const d = new Daemon(child, dir, socket, `${opts.tls ? "https" : "http"}://127.0.0.1:${port}`, token);
    const t0 = Date.now();
    for (;;) {
      if (child.exitCode !== null) {
        const l = d.log();
        rmSync(dir, { recursive: true, force: true });
        throw new Error(`the daemon exited with ${child.exitCode}:\n${l}`);
      }
      try {
        await health({ socket });
        break;
      } catch (e) {
        if (!(e instanceof ConnectionError) || Date.now() - t0 > 20_000) {
          await d.stop();
          throw new Error(`the daemon did not come up: ${String(e)}\n${d.log()}`);
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return d;
  }

  /** The daemon's log so far. */
  log(): string {
    try {
      return readFileSync(join(this.dir, "daemon.log"), "utf8");
    } catch {
      return "";
    }
  }

  /** The last `n` lines of the log. */
  tail(n = 60): string {
    return this.log().split("\n").slice(-n).join("\n");
  }

  /**
   * SIGTERM the daemon (it then kills its QEMUs), wait at most 30 s, check no
   * QEMU of it is left, and remove the temp dir.
   */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    let problem: string | undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 30_000).unref());
      if ((await Promise.race([this.exited, timer])) === "timeout") {
        child.kill("SIGKILL");
        await this.exited;
        problem = `the daemon did not stop within 30 s of SIGTERM:\n${this.tail()}`;
      }
    }
    const left = qemuProcesses(this.dir);
    for (const pid of left) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    if (problem) throw new Error(problem);
    if (left.length > 0) throw new Error(`QEMU processes outlived the daemon: ${left.join(", ")}`);
  }
}

/** A private CA and a certificate for 127.0.0.1 it signed, in `dir`; the daemon's TLS arguments. */
function makeTls(dir: string): string[] {
  const ssl = (...a: string[]) => execFileSync("openssl", a, { cwd: dir, stdio: "ignore" });
  ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=zygote test CA");
  ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "srv.csr", "-subj", "/CN=127.0.0.1");
  writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1\n");
  ssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "san.ext");
  return ["--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem")];
}
