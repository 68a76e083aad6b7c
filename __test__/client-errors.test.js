'use strict';

// What clients see: ENOTLEADER with the leader to redirect to, replication timeouts with the
// original's message, `waitForNode`, and per-call timeouts.

const test = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, waitUntil } = require('./helpers/cluster');

// A follower refuses commands with ENOTLEADER and names the leader; nothing is applied.
test('ENOTLEADER carries the leader for redirects', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const follower = c.nodes.find((n) => n !== leader);
  const err = await new Promise((resolve) => follower.command('wrong door', (e) => resolve(e)));
  assert.ok(err instanceof Error);
  assert.equal(err.code, 'ENOTLEADER');
  assert.equal(err.message, 'not the leader');
  assert.equal(err.leader, leader.id);
  // the client follows the redirect
  const target = c.byId(err.leader);
  await target.command('right door');
  await c.waitApplied(1);
  for (const n of c.nodes) assert.deepEqual(c.commands(n.id), ['right door']);
});

// Without a majority a command times out with the original's message and ETIMEDOUT.
test('a command times out without a majority', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  await leader.command('ok');
  for (const n of c.nodes) if (n !== leader) c.hub.isolate(n.id);
  const started = Date.now();
  const err = await new Promise((resolve) => leader.command('stuck', { timeout: 250 }, resolve));
  const took = Date.now() - started;
  assert.ok(err instanceof Error, 'fails');
  assert.equal(err.code, 'ETIMEDOUT');
  assert.match(err.message, /^timedout after 250 ms trying to replicate log index \d+$/);
  const index = Number(err.message.match(/index (\d+)$/)[1]);
  assert.ok(index > Math.max(...c.persistence.indexes(leader.id)), 'the index of the new entry');
  assert.ok(took >= 200 && took < 2000, `took ${took} ms`);
  assert.ok(!c.commands(leader.id).includes('stuck'), 'not applied without a majority');
});

// The same with followers stopped, and the default commandTimeout is the per-node option.
test('stopped followers: commandTimeout option applies', async (t) => {
  const c = await startCluster(t, 3, { nodeOptions: { commandTimeout: 400 } });
  const leader = await c.waitForLeader();
  for (const n of c.nodes) if (n !== leader) await n.stop();
  await assert.rejects(leader.command('stuck'), (err) => {
    assert.equal(err.code, 'ETIMEDOUT');
    assert.match(err.message, /^timedout after 400 ms trying to replicate log index \d+$/);
    return true;
  });
});

// waitForNode: the callback comes only once that node has applied the command too; a command
// waiting for an unreachable node times out although the majority has it.
test('waitForNode', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const [slow, other] = c.nodes.filter((n) => n !== leader);
  c.persistence.delay('applyCommand', 150, slow.id);
  await leader.command('w1', { waitForNode: slow.id });
  assert.ok(c.commands(slow.id).includes('w1'), 'applied on the awaited node at callback time');

  c.hub.isolate(slow.id);
  await leader.command('majority only'); // leader + other are a majority
  await assert.rejects(leader.command('w2', { waitForNode: slow.id, timeout: 400 }), { code: 'ETIMEDOUT' });
  c.hub.heal();
  await waitUntil(() => c.commands(slow.id).includes('w2'), 'w2 to reach the healed node');
});
