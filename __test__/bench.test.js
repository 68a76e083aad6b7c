'use strict';

// Smoke test of the benchmark (`npm run bench`): a quick run of one row finishes, exits 0 and
// prints a line for each engine. No figures are checked here: timings belong in the bench output.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { execFile } = require('node:child_process');

test('bench/run.js --quick --rows=3x1 runs both engines and exits 0', { timeout: 60000 }, async () => {
  const root = path.join(__dirname, '..');
  const { code, stdout, stderr } = await new Promise((resolve) => {
    execFile(process.execPath, ['bench/run.js', '--quick', '--rows=3x1'], { cwd: root, timeout: 50000 },
      (err, out, errOut) => resolve({ code: err ? (err.code ?? 1) : 0, stdout: out, stderr: errOut }));
  });
  assert.equal(code, 0, `bench exited with ${code}\n${stdout}\n${stderr}`);
  assert.match(stdout, /^\| 3 nodes, C=1 \| skiff-algorithm 0\.8\.2 \| [\d,]+ \| 0 \|/m, stdout);
  assert.match(stdout, /^\| 3 nodes, C=1 \| skiff-rs [\d.]+ \| [\d,]+ \| 0 \|/m, stdout);
  assert.match(stdout, /ratio skiff-rs \/ skiff-algorithm/);
  assert.match(stdout, /node v\d+/);
  assert.match(stdout, /^done$/m);
});

test('bench/ceiling.js prints the plugins-only upper bound and exits 0', { timeout: 30000 }, async () => {
  const root = path.join(__dirname, '..');
  const { code, stdout, stderr } = await new Promise((resolve) => {
    execFile(process.execPath, ['bench/ceiling.js', '--seconds=0.5', '--clients=16', '--batch=8'],
      { cwd: root, timeout: 20000 },
      (err, out, errOut) => resolve({ code: err ? (err.code ?? 1) : 0, stdout: out, stderr: errOut }));
  });
  assert.equal(code, 0, `ceiling exited with ${code}\n${stdout}\n${stderr}`);
  const m = /^ceiling: 3 nodes, C=16, batch 8, saveMeta of 300 entries: ([\d,]+) cmd\/s \(([\d,]+) commands/m.exec(stdout);
  assert.ok(m, stdout);
  assert.ok(Number(m[2].replace(/,/g, '')) > 0, 'some commands completed');
});
