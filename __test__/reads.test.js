'use strict';

// Reads without log writes and leadership hand-off (issue 14), on in-memory clusters:
// read() on the leader and on followers, lease reads, read timeouts, transferLeadership() to a
// named peer and to the best one, and stop() on a leader handing off before it goes.

const test = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, waitUntil, sleep } = require('./helpers/cluster');

function positions(node) {
  return JSON.parse(node._native.positions());
}

function followers(c, leader) {
  return c.running().filter((n) => n !== leader);
}

test('read() on the leader and on a follower sees every write acknowledged before it', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const [f] = followers(c, leader);
  // the follower applies slowly: its read must wait until it has applied the leader's index
  c.persistence.delay('applyCommand', 20, f.id);
  for (let i = 0; i < 5; i++) await leader.command({ i });
  await f.read();
  assert.ok(c.commands(f.id).length >= 5, `the follower read before applying (${c.commands(f.id).length})`);
  await leader.read();
  await leader.read({ lease: true });
  await new Promise((resolve, reject) => f.read((err) => (err ? reject(err) : resolve())));
});

test('reads write nothing: 1,000 reads leave lastLogIndex unchanged', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const [f] = followers(c, leader);
  await leader.command('x');
  await waitUntil(() => positions(f).lastApplied === positions(leader).lastApplied, 'the follower catching up');
  const before = positions(leader).lastLogIndex;
  const reads = [];
  for (let i = 0; i < 1000; i++) reads.push((i % 2 ? leader : f).read());
  await Promise.all(reads);
  assert.equal(positions(leader).lastLogIndex, before);
  assert.equal(positions(f).lastLogIndex, before);
});

test('a leader cut off from the majority times out its reads and serves none', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  c.hub.isolate(leader.id);
  await assert.rejects(leader.read({ timeout: 100 }), { code: 'ETIMEDOUT' });
  // once the lease ran out a lease read needs a round too
  await sleep(200);
  await assert.rejects(leader.read({ lease: true, timeout: 50 }), (err) => ['ETIMEDOUT', 'ENOTLEADER'].includes(err.code));
  await assert.rejects(leader.read({ timeout: -1 }), { code: 'EINVALIDOPTIONS' });
  await assert.rejects(leader.read({ lease: 'yes' }), { code: 'EINVALIDOPTIONS' });
  c.hub.heal(leader.id);
});

test('transferLeadership() to a named peer, then to the most up-to-date one', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const target = followers(c, leader)[1];
  await leader.transferLeadership(target.id);
  assert.equal(target.state.name, 'leader');
  assert.equal(leader.currentLeader(), target.id);
  await target.command('after the first hand-off');
  await target.transferLeadership();
  const next = await c.waitForLeader();
  assert.notEqual(next, target);
  await next.command('after the second hand-off');
  await assert.rejects(next.transferLeadership(next.id), { code: 'ENOVOTER' });
  await assert.rejects(followers(c, next)[0].transferLeadership(), { code: 'ENOTLEADER' });
});

test('commands sent while the leader hands over are retried, not lost', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const handoff = leader.transferLeadership();
  const results = await Promise.allSettled([leader.command('during'), handoff]);
  assert.equal(results[1].status, 'fulfilled');
  // refused while transferring, then answered by a follower: it knows the new leader
  assert.equal(results[0].status, 'rejected');
  assert.equal(results[0].reason.code, 'ENOTLEADER');
  assert.equal(results[0].reason.leader, (await c.waitForLeader()).id);
});

test('stop() on a leader hands off: a new leader serves within minElectionTimeout (median of 10)', async (t) => {
  const times = [];
  for (let run = 0; run < 10; run++) {
    const c = await startCluster(null, 3);
    try {
      const leader = await c.waitForLeader();
      const others = followers(c, leader);
      const started = process.hrtime.bigint();
      await leader.stop();
      const next = await c.waitForLeader(others, { interval: 1 });
      await next.command('served');
      times.push(Number(process.hrtime.bigint() - started) / 1e6);
    } finally {
      await c.stop();
    }
  }
  times.sort((a, b) => a - b);
  const median = (times[4] + times[5]) / 2;
  const min = 150; // minElectionTimeout (default)
  console.log(`stop() on a leader to a new leader committing: median ${median.toFixed(1)} ms ` +
    `(min ${times[0].toFixed(1)}, max ${times[9].toFixed(1)}) against minElectionTimeout ${min} ms`);
  assert.ok(median < min, `median ${median} ms`);
});

test('leave(self) on a leader hands over as the removal commits: no election timeout to wait out', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const others = followers(c, leader);
  const started = process.hrtime.bigint();
  await leader.leave(leader.id);
  const next = await c.waitForLeader(others, { interval: 1 });
  await next.command('served');
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  assert.ok(ms < 150, `a new leader served after ${ms} ms; minElectionTimeout is 150`);
});

test('transferOnStop: false stops a leader at once, leaving an election to the others', async (t) => {
  const c = await startCluster(t, 3, { nodeOptions: { transferOnStop: false } });
  const leader = await c.waitForLeader();
  const others = followers(c, leader);
  const started = Date.now();
  await leader.stop();
  assert.ok(Date.now() - started < 50, 'stop waited');
  const next = await c.waitForLeader(others);
  // A follower's election timer runs from the last heartbeat it had, up to one heartbeat interval
  // (50 ms) before the stop, so the earliest election comes minElectionTimeout - 50 ms after it.
  const waited = Date.now() - started;
  assert.ok(waited >= 150 - 50, `a new leader after ${waited} ms, without an election timeout`);
  await next.command('served');
});
