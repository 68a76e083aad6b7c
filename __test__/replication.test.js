'use strict';

// Log replication: hundreds of commands, sent concurrently or one after the other, are applied on
// every node exactly once and in the same order (the order the leader acknowledged them in, for
// sequential sends).

const test = require('node:test');
const assert = require('node:assert/strict');
const { startCluster } = require('./helpers/cluster');

const COUNT = 300;

function assertSameOnAll(c, expected) {
  for (const n of c.nodes) {
    const got = c.commands(n.id);
    assert.equal(got.length, expected.length, `${n.id} applied ${got.length} of ${expected.length}`);
    assert.deepEqual(got, expected, `${n.id} applied the same commands in the same order`);
    const idx = c.persistence.indexes(n.id);
    for (let i = 1; i < idx.length; i++) assert.ok(idx[i] > idx[i - 1], `${n.id} indexes increase`);
  }
}

// Sequential: each command is acknowledged before the next is sent, so the order is known.
test(`${COUNT} sequential commands reach every node in order`, async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const expected = [];
  for (let i = 0; i < COUNT; i++) {
    const cmd = { seq: i, kind: i % 3 === 0 ? 'obj' : 'x' };
    await leader.command(cmd);
    expected.push(cmd);
    // acknowledged ⇒ applied on the leader already
    assert.equal(c.commands(leader.id).length, i + 1);
  }
  await c.waitApplied(COUNT);
  assertSameOnAll(c, expected);
});

// Concurrent: all sent at once; every one is acknowledged, each applied once, the same order on
// every node, and the leader's apply order is the acknowledgement order.
test(`${COUNT} concurrent commands reach every node in the same order`, async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const acked = [];
  const sent = [];
  for (let i = 0; i < COUNT; i++) {
    sent.push(leader.command(['c', i]).then(() => acked.push(i)));
  }
  await Promise.all(sent);
  await c.waitApplied(COUNT);
  const order = c.commands(leader.id);
  assert.deepEqual(order.map((x) => x[1]).sort((a, b) => a - b), [...Array(COUNT).keys()],
    'each command applied exactly once');
  assert.deepEqual(order.map((x) => x[1]), acked, 'acknowledged in apply order');
  assertSameOnAll(c, order);
});

// Mixed command shapes from the original's tests (numbers, strings, arrays, objects) on 5 nodes
// with callbacks.
test('commands of every JSON shape on 5 nodes', async (t) => {
  const c = await startCluster(t, 5);
  const leader = await c.waitForLeader();
  const cmds = [1, 'two', [3, 'three'], { four: 4 }, null, true, 0, '', [], {}, { deep: { a: [1, { b: 2 }] } }];
  await Promise.all(cmds.map((cmd) => new Promise((resolve, reject) =>
    leader.command(cmd, (err) => (err ? reject(err) : resolve())))));
  await c.waitApplied(cmds.length);
  const order = c.commands(leader.id);
  assert.equal(order.length, cmds.length);
  for (const cmd of cmds) assert.ok(order.some((x) => JSON.stringify(x) === JSON.stringify(cmd)), JSON.stringify(cmd));
  assertSameOnAll(c, order);
});
