'use strict';

// `npm run bench:compare`: against HEAD itself (same tree, so this checkout runs on both sides and
// nothing is built) with tiny runs, it alternates the sides, prints one table row per row asked for
// with both sides' cmd/s, CPU per command and their ratios, and the load average at start and end.
// No figure is judged here, only that each is a number.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { execFile } = require('node:child_process');

const root = path.join(__dirname, '..');

function compare(args) {
  return new Promise((resolve) => {
    execFile(process.execPath, ['bench/compare.js', ...args], { cwd: root, timeout: 100000 },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }));
  });
}

const NUM = '[\\d,]+(?:\\.\\d+)?';
const RATIO = '\\d+(?:\\.\\d+)?×';

test('bench:compare HEAD runs both sides alternately, each first in turn, and prints the table', { timeout: 120000 }, async () => {
  const { code, stdout, stderr } = await compare(['HEAD', '--quick', '--rounds=2', '--rows=3x1,3x64',
    '--time=0.2', '--count=200']);
  assert.equal(code, 0, `exited with ${code}\n${stdout}\n${stderr}`);
  assert.doesNotMatch(stderr, /checking out|building its addon/, 'HEAD\'s own tree needs no build');
  assert.match(stdout, /^- HEAD has HEAD's tree: both sides run this checkout/m);
  // the sides alternate, and so does which goes first: HEAD first in round 1, the revision in round 2
  const order = [...stderr.matchAll(/^bench:compare: round (\d)\/2, (\S+), (HEAD \S+|HEAD \()/gm)]
    .map((m) => `${m[1]} ${m[2]} ${m[3].startsWith('HEAD (') ? 'B' : 'A'}`);
  assert.deepEqual(order, ['1 3x1 A', '1 3x1 B', '1 3x64 A', '1 3x64 B', '2 3x1 B', '2 3x1 A', '2 3x64 B', '2 3x64 A']);

  const lines = stdout.split('\n');
  const head = lines.findIndex((l) => l.startsWith('| row |'));
  assert.ok(head >= 0, stdout);
  assert.equal(lines[head].split('|').length - 2, 7, lines[head]);
  assert.match(lines[head], /cmd\/s: median \(min–max\).*CPU µs\/cmd/);
  assert.equal(lines[head + 1], '| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  const rate = `${NUM} \\(${NUM}–${NUM}\\)`;
  const row = (title) => new RegExp(`^\\| ${title} \\| ${rate} \\| ${rate} \\| ${RATIO} \\| ${NUM} \\| ${NUM} \\| ` +
    `${RATIO} \\|$`);
  assert.match(lines[head + 2], row('3 nodes, C=1'));
  assert.match(lines[head + 3], row('3 nodes, C=64'));
  assert.equal(lines[head + 4], '', 'one line per row asked for');
  assert.match(stdout, /^- load average at start \d+\.\d\d \d+\.\d\d \d+\.\d\d$/m);
  assert.match(stdout, /^- load average at end \d+\.\d\d \d+\.\d\d \d+\.\d\d$/m);
});

test('bench:compare refuses a revision git does not know, and an unknown row', { timeout: 30000 }, async () => {
  const bad = await compare(['no-such-revision-xyz', '--quick']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /does not know the revision no-such-revision-xyz/);
  const row = await compare(['HEAD', '--rows=3x1,long']);
  assert.equal(row.code, 2);
  assert.match(row.stderr, /unknown row long/);
});

test('bench:compare reads the rows each side knows from its own bench, before and after workload.js', () => {
  const fs = require('node:fs');
  const os = require('node:os');
  const { knownRows } = require('../bench/checkout');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-bench-rows-'));
  try {
    fs.mkdirSync(path.join(dir, 'bench'));
    // an older commit: the rows in run.js, no incremental rows
    fs.writeFileSync(path.join(dir, 'bench', 'run.js'),
      "const ALL_ROWS = ['3x1', '3x64',\n  '3x256', 'long'];\nmain();\n");
    assert.deepEqual(knownRows(dir), ['3x1', '3x64', '3x256', 'long']);
    // a later one: workload.js has them
    fs.writeFileSync(path.join(dir, 'bench', 'workload.js'), "const ALL_ROWS = ['3x1', '3x64-inc'];\n");
    assert.deepEqual(knownRows(dir), ['3x1', '3x64-inc']);
    assert.ok(knownRows(root).includes('3x256-inc'), 'this checkout has the incremental rows');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
