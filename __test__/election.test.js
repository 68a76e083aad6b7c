'use strict';

// Leader election: a lone node elects itself; 3- and 5-node clusters agree on exactly one leader
// per term; events report the transitions with the node.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster, startCluster, waitForState, waitUntil } = require('./helpers/cluster');

// A single non-standby node goes follower → candidate → leader on its own and says so in events,
// in order, with the node as argument; it is its own leader afterwards.
test('a lone node becomes leader', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  const node = c.add({ id: 'solo' });
  const states = [];
  const leaderEvents = [];
  let loaded = 0;
  node.on('loaded', () => { loaded += 1; });
  node.on('state', (name, n) => states.push([name, n === node, node.state.name]));
  node.on('leader', (n) => leaderEvents.push(n));
  await waitForState(node, 'leader');
  assert.equal(loaded, 1, 'loaded once');
  const names = states.map((s) => s[0]);
  assert.deepEqual(names.slice(-3), ['follower', 'candidate', 'leader'], names.join(','));
  assert.ok(states.every((s) => s[1]), 'state events carry the node');
  assert.ok(states.every((s) => s[0] === s[2]), 'node.state.name agrees with the event');
  assert.deepEqual(leaderEvents, [node]);
  assert.equal(node.currentLeader(), 'solo');
  assert.ok(node.currentTerm() >= 1);
  await node.command('x');
  assert.deepEqual(c.commands('solo'), ['x']);
});

// A standby node never starts an election by itself.
test('a standby node waits to be contacted', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  const node = c.add({ id: 'sb', standby: true });
  const states = [];
  node.on('state', (s) => states.push(s));
  await waitForState(node, 'standby');
  // Proving a negative needs a wait: well beyond maxElectionTimeout (300 ms).
  await new Promise((resolve) => setTimeout(resolve, 800));
  assert.equal(node.state.name, 'standby');
  assert.deepEqual(states.filter((s) => s === 'candidate'), []);
  assert.equal(node.currentTerm(), 0);
  assert.equal(node.currentLeader(), null);
});

// 3 and 5 nodes: exactly one leader, everyone follows it in the same term; no term ever has two
// leaders (checked on every `leader` event).
for (const size of [3, 5]) {
  test(`${size} nodes agree on one leader`, async (t) => {
    const leadersByTerm = new Map();
    const c = await startCluster(t, size);
    for (const n of c.nodes) {
      n.on('leader', () => {
        const term = n.currentTerm();
        const set = leadersByTerm.get(term) || new Set();
        set.add(n.id);
        leadersByTerm.set(term, set);
      });
    }
    const first = await c.waitForLeader();
    assert.equal(c.nodes.filter((n) => n.state.name === 'leader').length, 1);
    for (const n of c.nodes) {
      assert.equal(n.currentLeader(), first.id, `${n.id} follows ${first.id}`);
      assert.equal(n.currentTerm(), first.currentTerm());
    }
    // force a new election: the leader goes away (handing off first), the others pick exactly
    // one new leader
    const firstTerm = first.currentTerm();
    await first.stop();
    const second = await c.waitForLeader();
    assert.notEqual(second.id, first.id);
    assert.ok(second.currentTerm() > firstTerm);
    for (const [term, ids] of leadersByTerm) {
      assert.equal(ids.size, 1, `term ${term} had leaders ${[...ids]}`);
    }
    await second.command('after election');
    await waitUntil(() => c.running().every((n) => c.commands(n.id).includes('after election')),
      'the new leader to replicate');
  });
}
