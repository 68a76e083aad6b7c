'use strict';

// Command encoding end to end: Buffers reach every node's applyCommand as Buffers; values JSON
// cannot carry exactly are refused at once with EBADCOMMAND and nothing reaches the log.

const test = require('node:test');
const assert = require('node:assert/strict');
const { startCluster } = require('./helpers/cluster');

test('Buffers round-trip to applyCommand on every node', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const raw = Buffer.from([0, 1, 2, 250, 255]);
  await leader.command(raw);
  await leader.command({ key: 'k', value: Buffer.from('hello'), list: [Buffer.alloc(0)] });
  await c.waitApplied(2);
  for (const n of c.nodes) {
    const [first, second] = c.commands(n.id);
    assert.ok(Buffer.isBuffer(first), `${n.id}: top-level Buffer`);
    assert.ok(first.equals(raw));
    assert.ok(Buffer.isBuffer(second.value), `${n.id}: nested Buffer`);
    assert.equal(second.value.toString(), 'hello');
    assert.ok(Buffer.isBuffer(second.list[0]));
    assert.equal(second.list[0].length, 0);
    assert.equal(second.key, 'k');
  }
});

test('values JSON cannot carry are refused and nothing is applied', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const cyclic = { name: 'loop' };
  cyclic.self = cyclic;
  const bad = [
    ['function', () => 'f'],
    ['NaN', NaN],
    ['Infinity', { n: Infinity }],
    ['cycle', cyclic],
    ['symbol', Symbol('s')],
    ['bigint', 12n],
    ['undefined', undefined],
    ['typed array', new Uint8Array(3)],
  ];
  for (const [what, value] of bad) {
    const started = Date.now();
    const err = await new Promise((resolve) => leader.command(value, resolve));
    assert.ok(err instanceof Error, what);
    assert.equal(err.code, 'EBADCOMMAND', what);
    assert.ok(Date.now() - started < 100, `${what} refused at once`);
    await assert.rejects(leader.command(value), { code: 'EBADCOMMAND' });
  }
  // a command after them is the first and only thing applied
  await leader.command('marker');
  await c.waitApplied(1);
  for (const n of c.nodes) assert.deepEqual(c.commands(n.id), ['marker'], n.id);
});
