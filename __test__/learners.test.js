'use strict';

// Learners (issue 14 item 4): `join` adds a member as a learner, which counts toward no quorum
// while it catches up, and the leader promotes it to voter once it is close; `addLearner` adds a
// permanent learner (a read replica) that is never promoted.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster, startCluster, waitForState, waitUntil, sleep, pool } = require('./helpers/cluster');
const { MapPersistence } = require('./helpers/map-persistence');

const member = (node, id) => node.members().find((m) => m.id === id);

// `writers` loops of commands on `leader` until `stop()`: each command's latency, and failures.
function steadyWrites(leader, writers, sample) {
  const latencies = [];
  const failures = [];
  let running = true;
  let seq = 0;
  async function writer() {
    while (running) {
      const i = seq++;
      const t0 = Date.now();
      try {
        await leader.command([{ key: `w${i}`, value: i }], { timeout: 10000 });
        latencies.push(Date.now() - t0);
      } catch (err) {
        failures.push(`w${i}: ${err.code} ${err.message}`);
        await sleep(10); // a command refused at once must not starve the event loop
      }
      sample();
    }
  }
  const done = Promise.all(Array.from({ length: writers }, writer));
  return {
    latencies,
    failures,
    stop: () => {
      running = false;
      return done;
    },
  };
}

// The value at quantile `q` of `sorted` (ascending). No spread into Math.max: a run at full rate
// has more latencies than a call may take arguments.
const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

// Three nodes on `p` hold 100k keys; one is stopped; a fourth joins while four writers keep
// commanding the leader at full rate, until it votes. Checks that no write failed, that it was a
// learner meanwhile and holds the data, that it then votes (with the dead member removed and one
// more stopped, it and the leader commit), and that a read on it sees what was written. Returns
// the join's duration and the commands' latencies during it (sorted).
async function joinUnderLoad(t, p) {
  const c = await startCluster(t, 3, { persistence: p, nodeOptions: { retainedLogEntries: 10 } });
  const leader = await c.waitForLeader();
  const failures = await pool(1000, 64, (i) => leader.command(
    Array.from({ length: 100 }, (_, k) => ({ key: `k${i * 100 + k}`, value: i * 100 + k })), { timeout: 15000 }));
  assert.deepEqual(failures, []);
  const size = p.map(leader.id).size;
  assert.equal(size, 100000);
  const [down, other] = c.running().filter((n) => n !== leader);
  await down.stop();

  const j = c.add({ id: 'joiner', standby: true });
  const seenAs = new Set();
  const writes = steadyWrites(leader, 4, () => {
    const m = member(leader, j.id);
    if (m) seenAs.add(m.voter ? 'voter' : 'learner');
  });
  const t0 = Date.now();
  let joinMs;
  try {
    await leader.join(j.id);
    joinMs = Date.now() - t0;
    await j.waitFor({ voter: j.id }, 30000);
  } finally {
    await writes.stop();
  }
  const sorted = writes.latencies.slice().sort((a, b) => a - b);
  const figures = {
    joinMs, writes: sorted.length, p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), max: sorted[sorted.length - 1],
  };
  t.diagnostic(`join took ${joinMs} ms; ${figures.writes} commands meanwhile, latency p50 ${figures.p50} ms, ` +
    `p99 ${figures.p99} ms, max ${figures.max} ms; ${p.readStreams} snapshot read(s)`);
  assert.deepEqual(writes.failures, [], 'no write failed while the new member caught up');
  assert.ok(figures.max < joinMs, `writes went on while the new member caught up (longest ${figures.max} ms of ${joinMs} ms)`);
  assert.ok(figures.writes >= joinMs / 100, `commands kept completing (${figures.writes} in ${joinMs} ms)`);
  assert.ok(seenAs.has('learner'), 'it was a learner while it caught up');
  assert.equal(p.map(j.id).size >= size, true, 'it holds the state machine');

  // It votes: it is listed as a voter everywhere, and with the dead member removed and one more
  // stopped, the leader and it are a majority of three.
  assert.deepEqual(member(leader, j.id), { id: j.id, metadata: null, voter: true });
  await waitUntil(() => member(j, j.id)?.voter && j.state.name === 'follower', 'the joiner to see itself as a voter');
  await leader.leave(down.id);
  await other.stop();
  await leader.command([{ key: 'after', value: 1 }], { timeout: 5000 });
  await waitUntil(() => p.map(j.id).get('after') === 1, 'the joiner to apply the command it helped commit');
  // A linearizable read on it sees everything committed before it: the 100k keys and every
  // write made meanwhile.
  const committed = new Map(p.map(leader.id));
  await j.read({ timeout: 5000 });
  const missing = [...committed.keys()].filter((k) => p.map(j.id).get(k) !== committed.get(k));
  assert.deepEqual(missing.slice(0, 5), [], `the joiner's read sees all ${committed.size} keys`);
  return figures;
}

// The point-in-time path: the leader reads its snapshot at an applied index while applying goes
// on, so no command waits for the 100k-key read; the joiner installs it and goes on from the log
// (the leader keeps the entries after the snapshot's index for it), never needing a second one.
test('with one of three nodes down, a member joining from a 100k-key point-in-time snapshot stalls no write, then votes', async (t) => {
  const p = new MapPersistence({ extensions: true });
  const { max } = await joinUnderLoad(t, p);
  assert.equal(p.readStreams, 1, 'one snapshot was enough');
  assert.ok(max < 1000, `the longest command during the catch-up took ${max} ms`);
});

// Without the point-in-time extension the leader holds back applying while it reads the 100k
// keys for the joiner (its read stream must start at an exact index): a command waits for that
// read, about 0.6 s on an idle machine. 2 s leaves room for a loaded one.
test('with one of three nodes down, a member joining from a 100k-key snapshot (applying held for the read) stalls no write, then votes', async (t) => {
  const { max } = await joinUnderLoad(t, new MapPersistence());
  assert.ok(max < 2000, `the longest command during the catch-up took ${max} ms`);
});

test('addLearner adds a read replica that is never promoted; leave removes it', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const r = c.add({ id: 'replica', standby: true });
  const joined = [];
  leader.on('joined', (peer) => joined.push(peer.id));
  await leader.addLearner(r.id, { role: 'reader' });
  assert.deepEqual(joined, [r.id]);
  assert.deepEqual(member(leader, r.id), { id: r.id, metadata: { role: 'reader' }, voter: false });
  for (let i = 0; i < 20; i++) await leader.command({ i });
  await waitUntil(() => c.commands(r.id).length === 20, 'the replica to apply every command');
  await waitUntil(() => member(r, r.id)?.voter === false && r.state.name === 'standby', 'the replica to see itself a learner');
  assert.equal(member(leader, r.id).voter, false, 'a learner added by addLearner is never promoted');
  // It counts toward no quorum: with both other voters stopped, nothing commits.
  const voters = c.running().filter((n) => n !== leader && n !== r);
  await Promise.all(voters.map((n) => n.stop()));
  await assert.rejects(leader.command({ lost: true }, { timeout: 500 }), { code: 'ETIMEDOUT' });
  assert.equal(c.commands(r.id).some((x) => x.lost), false, 'the learner applied nothing uncommitted');
  await assert.rejects(leader.addLearner(leader.id), { code: 'EJOINSELF' });
});

test('a learner is removed by leave', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const r = c.add({ id: 'replica', standby: true });
  await leader.addLearner(r.id);
  const left = [];
  leader.on('left', (peer) => left.push(peer.id));
  await leader.leave(r.id);
  assert.deepEqual(left, [r.id]);
  assert.equal(member(leader, r.id), undefined);
  await waitForState(r, 'standby');
});

test('joining a permanent learner promotes it', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  const leader = c.add();
  await waitForState(leader, 'leader');
  const r = c.add({ id: 'replica', standby: true });
  await leader.addLearner(r.id);
  assert.equal(member(leader, r.id).voter, false);
  await leader.join(r.id);
  assert.equal(member(leader, r.id).voter, true);
  await waitForState(r, 'follower');
});
