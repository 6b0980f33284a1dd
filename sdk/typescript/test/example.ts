// The README's example, type-checked by `npm run build:test` (not run: the
// end-to-end tests cover the same calls against a real daemon).

import { NotFoundError, Sandbox, Snapshot, withSandbox } from "@zygote/sdk";

export async function example(): Promise<void> {
  await using sandbox = await Sandbox.create({ memoryMib: 512, env: { LANG: "C.UTF-8" } });

  const r = await sandbox.commands.run("echo hi; ls /nope", { cwd: "/tmp", timeoutMs: 10_000 });
  console.log(r.stdout, r.stderr, r.exitCode);

  await sandbox.commands.run("for i in 1 2 3; do echo $i; sleep 1; done", {
    onStdout: (data) => process.stdout.write(data),
  });

  await sandbox.files.write("/root/data.bin", new Uint8Array([0, 1, 255]));
  const bytes: Uint8Array = await sandbox.files.read("/root/data.bin", { format: "bytes" });
  const text: string = await sandbox.files.read("/root/data.bin");
  console.log(bytes, text, await sandbox.files.list("/root"));
  await sandbox.files.remove("/root/data.bin");

  await sandbox.eval("import math; x = 41");
  console.log((await sandbox.eval("x + 1")).result);

  const [a, b] = await sandbox.fork(2);
  await Promise.all([a!.kill(), b!.kill()]);

  await Snapshot.create({ tag: "warm", warmup: "import json" });
  const out: string = await withSandbox({ snapshot: "warm" }, async (child) => {
    return (await child.commands.run("python3 -c 'import json; print(json.dumps([1]))'")).stdout;
  });
  console.log(out);
  const snap = await sandbox.branch({ tag: "mid", mode: "live" });
  console.log(await Snapshot.list(), await Snapshot.get(snap.tag));
  await Snapshot.delete("mid");

  try {
    await Sandbox.connect("no-such-id");
  } catch (e) {
    if (e instanceof NotFoundError) console.log(e.status, e.message);
  }
}
