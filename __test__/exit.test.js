'use strict';

// After stop() the process exits on its own: no timer, handle or native thread of ours keeps it
// alive (run in a child process without --test-force-exit). A node that is running does keep it
// alive, like a listening server.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const { spawn } = require('child_process');

const root = path.resolve(__dirname, '..');

function run(source, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-e', source], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, err });
    });
  });
}

const CLUSTER = `
  const { startCluster } = require('./__test__/helpers/cluster');
  (async () => {
    const c = await startCluster(null, 3);
    const leader = await c.waitForLeader();
    for (let i = 0; i < 20; i++) await leader.command({ i });
    await c.waitApplied(20);
    STOP
    console.log('stopped');
  })().catch((e) => { console.error(e); process.exit(2); });
`;

test('the process exits by itself once every node is stopped', async () => {
  const started = Date.now();
  const r = await run(CLUSTER.replace('STOP', 'await c.stop();'), 20000);
  assert.equal(r.signal, null, `killed: still running after 20 s\n${r.err}`);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /stopped/);
  assert.ok(Date.now() - started < 20000);
});

test('a running node keeps the process alive', async () => {
  const r = await run(CLUSTER.replace('STOP', ''), 3000);
  assert.match(r.out, /stopped/, r.err);
  assert.equal(r.signal, 'SIGKILL', 'still running until killed');
});
