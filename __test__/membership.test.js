'use strict';

// Membership changes through the log: join (with metadata kept for peerMeta and `joined`
// events), a standby node catching up on the existing log, leave, a leader removing itself
// (steps down and stops, the rest elect a new leader), and membership calls on a non-leader.

const test = require('node:test');
const assert = require('node:assert/strict');
const {
  Cluster, startCluster, waitForState, waitForEvent, waitUntil, within,
} = require('./helpers/cluster');

// join(peer, metadata): `joined` on the leader with {id, metadata}, peerMeta everywhere, and the
// joined standby node catches up on commands committed before it joined.
test('a standby node joins with metadata and catches up', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  const leader = c.add({ id: 'L', metadata: { role: 'boot' } });
  await waitForState(leader, 'leader');
  for (let i = 0; i < 10; i++) await leader.command({ before: i });

  const joined = [];
  leader.on('joined', (peer) => joined.push(peer));
  const s1 = c.add({ id: 'S1', standby: true });
  const s2 = c.add({ id: 'S2', standby: true });
  await waitForState(s1, 'standby');
  await Promise.all([leader.join('S1', { zone: 'a', n: 1 }), leader.join('S2', { zone: 'b' })]);
  assert.deepEqual(joined.map((p) => [p.id, p.metadata]).sort(),
    [['S1', { zone: 'a', n: 1 }], ['S2', { zone: 'b' }]]);
  assert.deepEqual(leader.peerMeta('S1'), { zone: 'a', n: 1 });
  assert.deepEqual(leader.peerMeta('S2'), { zone: 'b' });
  assert.equal(leader.peerMeta('nobody'), undefined);

  await c.waitForLeader();
  await c.waitApplied(10);
  for (const id of ['S1', 'S2']) {
    assert.deepEqual(c.commands(id), c.commands('L'), `${id} caught up`);
  }
  await waitUntil(() => s1.peerMeta('S2') !== undefined, 'S1 to learn S2 metadata');
  assert.deepEqual(s1.peerMeta('S2'), { zone: 'b' });

  // the new members count for the majority: with S1 and S2 cut off, commands time out
  c.hub.isolate('S1');
  c.hub.isolate('S2');
  await assert.rejects(leader.command('no quorum', { timeout: 300 }), { code: 'ETIMEDOUT' });
  c.hub.heal();
  await leader.command('quorum again', { timeout: 3000 });
});

// leave(peer): `left` event with the peer, peerMeta forgets it, the cluster goes on without it.
test('leave removes a follower', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const victim = c.nodes.find((n) => n !== leader);
  const other = c.nodes.find((n) => n !== leader && n !== victim);
  const left = waitForEvent(leader, 'left');
  await leader.leave(victim.id);
  const [peer] = await left;
  assert.equal(peer.id, victim.id);
  assert.equal(leader.peerMeta(victim.id), undefined);
  await victim.stop();
  // two members left: both must have it, and they do
  await leader.command('after leave');
  await waitUntil(() => c.commands(other.id).includes('after leave'), 'the remaining follower to apply');
  assert.ok(!c.commands(victim.id).includes('after leave'));
  // and with the remaining follower cut off, there is no majority
  c.hub.isolate(other.id);
  await assert.rejects(leader.command('alone', { timeout: 300 }), { code: 'ETIMEDOUT' });
});

// The leader removes itself: its leave() succeeds, it steps down and stops by itself, and the
// remaining nodes elect a leader that no longer counts the old one.
test('the leader leaves itself', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  await leader.command('before');
  const stopped = waitForState(leader, 'stopped', { timeout: 10000 });
  await leader.leave(leader.id);
  await stopped;
  assert.equal(leader.state.name, 'stopped');
  await assert.rejects(leader.command('x'), { code: 'ESTOPPED' });
  const rest = c.nodes.filter((n) => n !== leader);
  const next = await c.waitForLeader(rest);
  assert.notEqual(next.id, leader.id);
  assert.equal(next.peerMeta(leader.id), undefined);
  await next.command('after');
  await waitUntil(() => rest.every((n) => c.commands(n.id).includes('after')), 'both to apply');
  assert.deepEqual(c.commands(rest[0].id), c.commands(rest[1].id));
});

// Membership calls go through the leader only; joining yourself fails at once.
test('join/leave on a follower fail with ENOTLEADER; joining self fails', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const follower = c.nodes.find((n) => n !== leader);
  await assert.rejects(follower.join('someone'), (err) => err.code === 'ENOTLEADER' && err.leader === leader.id);
  await assert.rejects(follower.leave(leader.id), { code: 'ENOTLEADER' });
  await assert.rejects(leader.join(leader.id), (err) => err.message === 'can\'t join self' && err.code === 'EJOINSELF');
  await new Promise((resolve) => leader.join(leader.id, (err) => {
    assert.equal(err.message, 'can\'t join self');
    resolve();
  }));
});

// Joins issued together wait their turn (the original's tests join four peers at once).
test('four concurrent joins', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  const leader = c.add();
  await waitForState(leader, 'leader');
  const others = [1, 2, 3, 4].map(() => c.add({ standby: true }));
  const results = await within(Promise.allSettled(others.map((n) => leader.join(n.id, { i: n.id }))), 10000, 'joins');
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled']);
  await c.waitForLeader();
  for (const n of others) assert.deepEqual(leader.peerMeta(n.id), { i: n.id });
  await leader.command('five');
  await c.waitApplied(1);
});
