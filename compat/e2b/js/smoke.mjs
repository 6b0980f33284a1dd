// E2B's JavaScript SDK (npm `e2b`, unmodified) against zygote's E2B
// listener: create from a snapshot, commands (foreground, exit codes,
// background with stdin), files both ways, pause then connect, fork, kill,
// and the SDK's own errors. Run by compat/e2b/tests/test_js_sdk.py with
// E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set; exits non-zero on the
// first failure.
import assert from 'node:assert/strict'
import { Sandbox, CommandExitError, NotFoundError, AuthenticationError } from 'e2b'

const template = process.argv[2]
if (!template) throw new Error('usage: node smoke.mjs TEMPLATE')

const sbx = await Sandbox.create(template, { timeoutMs: 600_000, metadata: { suite: 'js' } })
try {
  const r = await sbx.commands.run('echo out; echo err >&2')
  assert.equal(r.stdout, 'out\n')
  assert.equal(r.stderr, 'err\n')
  assert.equal(r.exitCode, 0)
  await assert.rejects(sbx.commands.run('exit 4'), (e) => e instanceof CommandExitError && e.exitCode === 4)

  const cat = await sbx.commands.run('cat', { background: true, stdin: true })
  await sbx.commands.sendStdin(cat.pid, 'from js\n')
  await sbx.commands.closeStdin(cat.pid)
  assert.equal((await cat.wait()).stdout, 'from js\n')

  await sbx.files.write('/tmp/js.txt', 'js-bytes')
  assert.equal(await sbx.files.read('/tmp/js.txt'), 'js-bytes')
  assert.ok(await sbx.files.exists('/tmp/js.txt'))
  const names = (await sbx.files.list('/tmp')).map((e) => e.name)
  assert.ok(names.includes('js.txt'), names.join(','))

  await sbx.pause()
  const again = await Sandbox.connect(sbx.sandboxId)
  assert.equal(await again.files.read('/tmp/js.txt'), 'js-bytes')

  const kids = await again.fork({ count: 2 })
  assert.equal(kids.length, 2)
  for (const k of kids) {
    assert.ok(!(k instanceof Error), String(k))
    assert.equal((await k.commands.run('cat /tmp/js.txt')).stdout, 'js-bytes')
    await k.kill()
  }
} finally {
  await sbx.kill()
}
await assert.rejects(Sandbox.connect(sbx.sandboxId), NotFoundError)
await assert.rejects(
  Sandbox.create(template, { apiKey: 'e2b_' + '0'.repeat(39) + '1' }),
  AuthenticationError,
)
console.log('js smoke: ok')
