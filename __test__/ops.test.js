'use strict';

// Watching a node: stats() (positions, members, counters, latency histograms), waitFor() (each
// condition, timeout, stop, bad conditions, no timer of its own without a timeout), and
// `DEBUG=skiff*` logging (on in a child process, silent without). The Prometheus collector and
// /metrics are in metrics.test.js.

const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { startCluster, waitUntil } = require('./helpers/cluster');

const ROOT = path.join(__dirname, '..');

function counters(node) {
  return node.stats().counters;
}

test('stats() on a 3-node cluster: positions, members, counters and histograms', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const followers = c.nodes.filter((n) => n !== leader);
  const before = counters(leader);
  for (let i = 0; i < 10; i++) await leader.command({ i });
  await assert.rejects(followers[0].command({ no: 1 }), { code: 'ENOTLEADER' });

  const s = leader.stats();
  assert.equal(s.id, leader.id);
  assert.equal(s.state, 'leader');
  assert.equal(s.term, leader.currentTerm());
  assert.equal(s.leader, leader.id);
  assert.equal(s.firstLogIndex, 1);
  assert.ok(s.lastLogIndex >= s.commitIndex && s.commitIndex >= 10, `positions ${JSON.stringify(s)}`);
  assert.ok(s.lastApplied <= s.commitIndex && s.lastApplied >= 10);
  assert.deepEqual(s.members.map((m) => m.id).sort(), c.nodes.map((n) => n.id).sort());
  for (const m of s.members) {
    assert.equal(m.voter, true);
    assert.deepEqual(Object.keys(m.snapshot).sort(), ['bytes', 'sending']);
    if (m.id === leader.id) {
      assert.equal(m.matchIndex, null, 'no progress of its own');
      continue;
    }
    assert.equal(typeof m.nextIndex, 'number');
    assert.equal(typeof m.inflight, 'number');
    assert.ok(m.lastContactMs >= 0 && m.lastContactMs < 5000, `lastContactMs ${m.lastContactMs}`);
    assert.deepEqual(m.snapshot, { sending: false, bytes: 0 });
  }
  // the leader's view of each follower catches up with what it committed
  await waitUntil(() => {
    const now = leader.stats();
    return now.members.filter((m) => m.id !== leader.id)
      .every((m) => m.matchIndex === now.commitIndex && m.nextIndex === now.commitIndex + 1);
  }, 'every follower matched up to the commit index');

  assert.equal(s.counters.commandsCommitted - before.commandsCommitted, 10);
  assert.equal(s.counters.commandsFailed, before.commandsFailed);
  assert.equal(counters(followers[0]).commandsFailed, 1, 'a refused command counts as failed');
  assert.ok(s.counters.electionsStarted >= 1, 'the leader stood for election');
  assert.ok(s.counters.leaderChanges >= 1);
  assert.equal(s.counters.pluginRetries, 0);
  for (const h of [s.latency.save, s.latency.apply]) {
    assert.equal(h.counts.length, h.buckets.length + 1);
    assert.ok(h.count >= 1, 'saves and applies were timed');
    assert.equal(h.counts.reduce((a, b) => a + b, 0), h.count);
    assert.ok(h.sum >= 0);
  }
  // a follower has no progress to show, but the same members and positions
  const fs = followers[0].stats();
  assert.equal(fs.state, 'follower');
  assert.equal(fs.leader, leader.id);
  assert.ok(fs.members.every((m) => m.matchIndex === null && m.inflight === null));
  assert.equal(fs.counters.electionsStarted, 0, 'a follower that never campaigned');
  assert.equal(fs.counters.leaderChanges, 1);
});

test('stats() counts a change of leader, an election, plugin retries and a snapshot', async (t) => {
  const c = await startCluster(t, 3, { nodeOptions: { retainedLogEntries: 10 } });
  const leader = await c.waitForLeader();
  const rest = c.nodes.filter((n) => n !== leader);
  const changes = rest.map((n) => counters(n).leaderChanges);
  const elections = rest.map((n) => counters(n).electionsStarted);

  // two failed saves on a follower: the engine retries them, and the command still commits
  c.persistence.fail('saveMeta', 'error', 2, rest[0].id);
  await leader.command({ after: 'failures' }, { timeout: 5000 });
  await waitUntil(() => counters(rest[0]).pluginRetries === 2, 'the follower counted its two retries');
  assert.equal(counters(leader).pluginRetries, 0);

  await leader.stop();
  const next = await c.waitForLeader(rest);
  const i = rest.indexOf(next);
  // a split vote may take another round, so at least one
  assert.ok(counters(next).electionsStarted >= elections[i] + 1, 'the new leader stood for election');
  for (const [k, n] of rest.entries()) {
    await waitUntil(() => counters(n).leaderChanges >= changes[k] + 1, `${n.id} counted the new leader`);
  }

  // compacted past a newcomer: it gets a snapshot
  for (let k = 0; k < 60; k++) await next.command({ k });
  const sent = counters(next);
  const newcomer = c.add({ standby: true });
  await next.join(newcomer.id);
  await waitUntil(() => counters(newcomer).snapshotsInstalled === 1, 'the newcomer installed a snapshot');
  const after = counters(next);
  assert.equal(after.snapshotsSent, sent.snapshotsSent + 1);
  assert.ok(after.snapshotBytesSent > sent.snapshotBytesSent, 'snapshot bytes counted');
  await newcomer.waitFor({ applied: next.stats().commitIndex - 1 }, 10000);
});

test('waitFor: state, leader, applied and voter, each when it comes to hold', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const [a, b] = c.nodes.filter((n) => n !== leader);

  // already true: resolves at once, with stats()
  const now = await leader.waitFor({ state: 'leader' });
  assert.equal(now.state, 'leader');
  assert.equal((await a.waitFor({ leader: true })).leader, leader.id);
  assert.equal((await a.waitFor({ leader: leader.id })).leader, leader.id);

  // applied: an index not reached yet
  const target = leader.stats().lastLogIndex + 3;
  const applied = b.waitFor({ applied: target }, 5000);
  for (let i = 0; i < 3; i++) await leader.command({ i });
  assert.ok((await applied).lastApplied >= target);

  // voter: a node that joins later, seen from the leader and from a follower
  const newcomer = c.add({ standby: true });
  const onLeader = leader.waitFor({ voter: newcomer.id }, 5000);
  const onFollower = a.waitFor({ voter: newcomer.id }, 5000);
  await leader.join(newcomer.id);
  await onLeader;
  assert.ok((await onFollower).members.some((m) => m.id === newcomer.id));

  // state and leader: the leader stops, a follower takes over
  const someLeader = a.waitFor({ leader: true }, 5000);
  await assert.doesNotReject(someLeader);
  const stateLeader = Promise.race([a, b, newcomer].map((n) => n.waitFor({ state: 'leader' }, 10000)));
  const leaderNot = a.waitFor({ leader: 'nobody-by-this-name' }, 10000);
  await leader.stop();
  const elected = await stateLeader;
  assert.notEqual(elected.id, leader.id);
  const seen = await a.waitFor({ leader: elected.id }, 5000);
  assert.equal(seen.leader, elected.id);
  // the stopped node's own state resolves too
  assert.equal((await leader.waitFor({ state: 'stopped' })).state, 'stopped');
  await a.stop();
  await assert.rejects(leaderNot, { code: 'ESTOPPED' });
});

test('waitFor: ETIMEDOUT, ESTOPPED, a stopped node, and conditions it cannot read', async (t) => {
  const c = await startCluster(t, 1);
  const [n] = c.nodes;
  const started = Date.now();
  await assert.rejects(n.waitFor({ leader: 'someone-else' }, 50), { code: 'ETIMEDOUT' });
  assert.ok(Date.now() - started >= 45);
  for (const bad of [null, 5, [], {}, { state: 'sleeping' }, { leader: false }, { applied: -1 },
    { applied: 1.5 }, { voter: '' }, { state: 'leader', leader: true }, { colour: 'red' }]) {
    await assert.rejects(n.waitFor(bad), { code: 'EINVALIDOPTIONS' }, JSON.stringify(bad));
  }
  for (const timeout of [0, -1, '10', Infinity, NaN]) {
    await assert.rejects(n.waitFor({ state: 'follower' }, timeout), { code: 'EINVALIDOPTIONS' }, String(timeout));
  }
  const pending = n.waitFor({ state: 'follower' });
  const timed = n.waitFor({ state: 'candidate' }, 60000);
  const stopped = n.waitFor({ state: 'stopped' });
  await n.stop();
  await assert.rejects(pending, { code: 'ESTOPPED' });
  await assert.rejects(timed, { code: 'ESTOPPED' });
  assert.equal((await stopped).state, 'stopped');
  await assert.rejects(n.waitFor({ state: 'leader' }), { code: 'ESTOPPED' });
});

// Runs `script` in a child node with `env`; resolves with { code, stdout, stderr, ms }.
function runChild(script, env) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = execFile(process.execPath, ['-e', script], {
      cwd: ROOT, env: Object.assign({}, process.env, env), timeout: 30000,
    }, (err, stdout, stderr) => {
      resolve({ code: err ? err.code : 0, stdout, stderr, ms: Date.now() - started });
    });
    child.stdin.end();
  });
}

// A 2-node cluster over the in-memory plugins that commits, fails a save, joins and stops.
const CHILD_CLUSTER = `
const { startCluster } = require('./__test__/helpers/cluster');
(async () => {
  const c = await startCluster(null, 2, { nodeOptions: { retainedLogEntries: 5 } });
  const leader = await c.waitForLeader();
  c.persistence.fail('saveMeta', 'error', 1, leader.id);
  for (let i = 0; i < 20; i++) await leader.command({ i });
  const late = c.add({ standby: true });
  await leader.join(late.id);
  await late.waitFor({ applied: 20 }, 10000);
  await c.stop();
  console.log('done');
})().catch((e) => { console.error('FAILED', e); process.exit(1); });
`;

test('DEBUG=skiff* logs state changes, elections, membership, snapshots and plugin retries', async () => {
  const r = await runChild(CHILD_CLUSTER, { DEBUG: 'skiff*', DEBUG_COLORS: 'no' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /done/);
  const lines = r.stderr.split('\n');
  const has = (re, what) => assert.ok(lines.some((l) => re.test(l)), `${what} in:\n${r.stderr.slice(0, 4000)}`);
  has(/skiff:node n1: leader at term 1/, 'a state change');
  has(/skiff:election n1: election started at term 1/, 'an election');
  has(/skiff:election n2: leader is n1/, 'a leader change');
  has(/skiff:membership n1: join n2 asked/, 'a join');
  has(/skiff:membership n1: join n3 committed/, 'a join that committed');
  has(/skiff:membership n\d: n3 joined/, 'a member joined');
  has(/skiff:snapshot n1: sending a snapshot/, 'a snapshot sent');
  has(/skiff:snapshot n3: snapshot of index \d+ written/, 'a snapshot installed');
  has(/skiff:plugin n1: persistence.saveMeta failed, the engine retries it/, 'a plugin retry');
  has(/skiff:node n1: stopped/, 'a stop');
});

test('without DEBUG nothing is logged; one namespace logs only its own', async () => {
  const quiet = await runChild(CHILD_CLUSTER, { DEBUG: '' });
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stderr, '');
  const one = await runChild(CHILD_CLUSTER, { DEBUG: 'skiff:plugin', DEBUG_COLORS: 'no' });
  assert.equal(one.code, 0, one.stderr);
  const namespaces = new Set(one.stderr.split('\n').filter(Boolean).map((l) => l.trim().split(' ')[1]));
  assert.deepEqual([...namespaces], ['skiff:plugin']);
});

test('a waitFor keeps the process alive no longer than its timeout, and none without one', async () => {
  const script = (call) => `
const { Cluster } = require('./__test__/helpers/cluster');
const c = new Cluster();
const n = c.add();
n.waitFor({ state: 'leader' }).then(async () => {
  ${call}.catch((e) => console.log(e.code));
  await n.stop();
});
`;
  // stopped: a waiter without a timeout settles with ESTOPPED and holds nothing
  const r1 = await runChild(script("n.waitFor({ leader: 'nobody' })"), {});
  assert.equal(r1.code, 0, r1.stderr);
  assert.equal(r1.stdout.trim(), 'ESTOPPED');
  // a waiter with a long timeout is settled by the stop, its timer cleared: the process ends
  const r2 = await runChild(script("n.waitFor({ leader: 'nobody' }, 20000)"), {});
  assert.equal(r2.stdout.trim(), 'ESTOPPED');
  assert.ok(r2.ms < 10000, `exited after ${r2.ms} ms`);
});
