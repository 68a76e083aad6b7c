'use strict';

// Malformed and hostile peer messages: each is refused with a coded error in the reply and a
// `warning` event, changes no state (term, vote, log, role), and the process never crashes. After
// the whole barrage the cluster still commits.

const test = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, waitUntil } = require('./helpers/cluster');
/**
 * Delivers `type, args` to `node` as if a peer had sent them, on a connection opened by the peer
 * the message names (`peer` overrides it); resolves with the reply.
 */
function inject(hub, node, type, args, peer) {
  const named = args && typeof args === 'object' ? args.leaderId || args.candidateId : undefined;
  const from = peer === undefined ? (typeof named === 'string' && named ? named : 'evil') : peer;
  return new Promise((resolve) => {
    let handler;
    const conn = {
      receive(fn) { handler = fn; },
      send(t, a, cb) { cb(new Error('not used')); },
      close(cb) { if (cb) cb(); },
      on() { return conn; },
      once() { return conn; },
      removeListener() { return conn; },
    };
    hub.listeners.get(node.id).onConnection(from, {}, conn);
    handler(type, args, (err, result) => resolve({ err, result }));
  });
}

const HUGE = 2 ** 60;

function cases(leaderId, term) {
  const entry = (index, t) => ({ term: t, index, command: 'x', uuid: 'u' });
  return [
    ['unknown type', 'Bogus', { term }],
    ['args not an object', 'AppendEntries', 'hello'],
    ['args null', 'RequestVote', null],
    ['missing fields', 'AppendEntries', { term }],
    ['wrong field types', 'AppendEntries', { term: 'x', leaderId, prevLogIndex: 0, prevLogTerm: 0, entries: [], leaderCommit: 0 }],
    ['negative index', 'AppendEntries', { term, leaderId, prevLogIndex: -1, prevLogTerm: 0, entries: [], leaderCommit: 0 }],
    ['fractional term', 'RequestVote', { term: term + 0.5, candidateId: 'evil', lastLogIndex: 0, lastLogTerm: 0 }],
    ['huge term', 'RequestVote', { term: HUGE, candidateId: 'evil', lastLogIndex: HUGE, lastLogTerm: 0 }],
    ['huge term append', 'AppendEntries', { term: HUGE, leaderId: 'evil', prevLogIndex: 0, prevLogTerm: 0, entries: [], leaderCommit: HUGE }],
    ['entries with holes', 'AppendEntries', { term, leaderId, prevLogIndex: 0, prevLogTerm: 0, entries: [entry(1, term), entry(3, term)], leaderCommit: 0 }],
    ['entry term above message term', 'AppendEntries', { term, leaderId, prevLogIndex: 0, prevLogTerm: 0, entries: [entry(1, term + 5)], leaderCommit: 0 }],
    ['empty candidate', 'RequestVote', { term: term + 1, candidateId: '', lastLogIndex: 0, lastLogTerm: 0 }],
    ['snapshot term past message', 'InstallSnapshot', { term, leaderId, lastIncludedIndex: 5, lastIncludedTerm: term + 3, data: [], first: true, done: true }],
  ];
}

test('malformed peer messages are refused and change nothing', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  await leader.command('before');
  const victims = c.running();
  const term = leader.currentTerm();
  const snapshot = () => victims.map((n) => [n.id, n.state.name, n.currentTerm(), n.currentLeader()]);
  const before = snapshot();
  const warningsBefore = c.warnings.length;

  for (const node of victims) {
    for (const [what, type, args] of cases(leader.id, term)) {
      const { err, result } = await inject(c.hub, node, type, args);
      assert.ok(err instanceof Error, `${what} on ${node.id}: an Error reply (got ${JSON.stringify(result)})`);
      assert.equal(typeof err.code, 'string', `${what}: the error has a code`);
      assert.match(err.code, /^E[A-Z]+$/, `${what}: ${err.code}`);
    }
  }
  assert.deepEqual(snapshot(), before, 'roles, terms and leaders unchanged');
  assert.ok(c.warnings.length > warningsBefore, 'refusals are reported as warnings');
  assert.equal(c.errors.length, 0, `no error events: ${c.errors.map((e) => e.error.message)}`);

  // the cluster still works, at the same term
  await leader.command('after');
  await waitUntil(() => victims.every((n) => c.commands(n.id).includes('after')), 'replication after the barrage');
  assert.equal(leader.currentTerm(), term);
});

test('a stale but well-formed message is answered with the current term, not obeyed', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const follower = c.running().find((n) => n !== leader);
  const term = follower.currentTerm();
  const { err, result } = await inject(c.hub, follower, 'AppendEntries', {
    term: term - 1, leaderId: 'old-leader', prevLogIndex: 0, prevLogTerm: 0, entries: [], leaderCommit: 0,
  });
  assert.equal(err, null);
  assert.equal(result.success, false);
  assert.equal(result.term, term);
  assert.equal(follower.currentLeader(), leader.id);
  const vote = await inject(c.hub, follower, 'RequestVote', { term: term + 1, candidateId: 'intruder', lastLogIndex: 0, lastLogTerm: 0 });
  assert.equal(vote.err, null);
  assert.equal(vote.result.voteGranted, false, 'no vote for a behind log while a leader is active');
  assert.equal(follower.currentTerm(), term, 'the lease keeps the term');
});
