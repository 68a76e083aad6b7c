'use strict';

// Misbehaving plugins: persistence and transport calls that throw, fail, call back twice, never
// call back or return what JSON cannot carry. None of it may crash the process; the failures are
// reported as `error`/`warning` events, and the cluster works again once the plugin recovers.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster, startCluster, waitForState, waitUntil } = require('./helpers/cluster');
const { MemoryPersistence } = require('../lib/memory');

function reported(c, pattern) {
  return [...c.errors, ...c.warnings].some((r) => pattern.test(`${r.error.code} ${r.error.message}`));
}

// loadMeta / lastAppliedCommitIndex failing at startup: reported, retried, then the node runs.
for (const [method, mode] of [['loadMeta', 'throw'], ['loadMeta', 'error'], ['lastAppliedCommitIndex', 'bad'],
  ['loadMeta', 'value']]) {
  test(`startup survives ${method} (${mode})`, async (t) => {
    const c = new Cluster();
    t.after(() => c.stop());
    c.persistence.fail(method, mode, 1, 'p1');
    const node = c.add({ id: 'p1' });
    await waitForState(node, 'leader', { timeout: 10000 });
    assert.ok(c.errors.length + c.warnings.length > 0, 'the failure was reported');
    if (mode === 'bad') assert.ok(reported(c, /EBADRESULT/), 'EBADRESULT reported');
    await node.command('works');
    assert.deepEqual(c.commands('p1'), ['works']);
  });
}

// saveMeta failing on the leader: errors reported, commands work again afterwards.
for (const mode of ['throw', 'error', 'never']) {
  test(`saveMeta ${mode} on the leader`, async (t) => {
    const c = await startCluster(t, 3, { nodeOptions: { commandTimeout: 600 } });
    const leader = await c.waitForLeader();
    c.persistence.fail('saveMeta', mode, 2, leader.id);
    const results = await Promise.allSettled([0, 1, 2].map((i) => leader.command({ during: i }, { timeout: 5000 })));
    for (const r of results) {
      if (r.status === 'rejected') assert.equal(typeof r.reason.code, 'string', 'coded error');
    }
    await waitUntil(() => c.persistence.faults.list.length === 0, 'the faults to be used up');
    const now = await c.waitForLeader();
    await now.command('after', { timeout: 5000 });
    await waitUntil(() => c.running().every((n) => c.commands(n.id).includes('after')), 'after to be applied');
    assert.ok(c.errors.length + c.warnings.length > 0, 'the failure was reported');
  });
}

// saveLog (the incremental extension) failing on the leader: as saveMeta; and since a failed or
// timed-out delta may not be on disk, the next ones carry its entries again: every node's stored
// log ends up whole (contiguous, the same entry at the same index everywhere).
for (const mode of ['throw', 'error', 'never']) {
  test(`saveLog ${mode} on the leader`, async (t) => {
    const persistence = new MemoryPersistence({ incremental: true });
    const c = await startCluster(t, 3, { persistence, nodeOptions: { commandTimeout: 600 } });
    const leader = await c.waitForLeader();
    c.persistence.fail('saveLog', mode, 2, leader.id);
    await Promise.allSettled([0, 1, 2].map((i) => leader.command({ during: i }, { timeout: 5000 })));
    await waitUntil(() => c.persistence.faults.list.length === 0, 'the faults to be used up');
    const now = await c.waitForLeader();
    for (let i = 0; i < 3; i++) await now.command({ after: i }, { timeout: 5000 });
    await waitUntil(() => c.running().every((n) => c.commands(n.id).some((x) => x && x.after === 2)), 'after to be applied');
    assert.ok(c.errors.length + c.warnings.length > 0, 'the failure was reported');
    const stored = c.running().map((n) => persistence.meta(n.id).log);
    const byIndex = new Map();
    for (const log of stored) {
      log.entries.forEach((e, k) => {
        assert.equal(e.index, log.meta.lastIncludedIndex + 1 + k, 'contiguous from the snapshot');
        const seen = byIndex.get(e.index);
        if (seen) assert.deepEqual([e.term, e.uuid], [seen.term, seen.uuid], `the same entry at ${e.index}`);
        else byIndex.set(e.index, e);
      });
    }
    const ends = stored.map((log) => log.entries.length ? log.entries[log.entries.length - 1].index : 0);
    const last = c.commands(leader.id).length; // commands applied on the leader, all in the log
    assert.ok(Math.max(...ends) >= last, `stored logs end at ${ends}, ${last} commands applied`);
  });
}

// applyCommand (or, on the incremental extension, applyCommands) calling back twice: one apply, a
// warning, no duplicate.
for (const method of ['applyCommand', 'applyCommands']) {
  test(`${method} calling back twice`, async (t) => {
    const persistence = new MemoryPersistence({ incremental: method === 'applyCommands' });
    const c = await startCluster(t, 3, { persistence });
    const leader = await c.waitForLeader();
    c.persistence.fail(method, 'twice', 5);
    for (let i = 0; i < 5; i++) await leader.command({ i });
    await c.waitApplied(5);
    for (const n of c.nodes) assert.deepEqual(c.commands(n.id), [0, 1, 2, 3, 4].map((i) => ({ i })));
    await waitUntil(() => reported(c, /EPLUGINCALLBACK/), 'the double callback warning');
    await leader.command('still fine');
  });
}

// applyCommand failing or never calling back on a follower: reported, retried, applied once.
for (const mode of ['error', 'never', 'throw']) {
  test(`applyCommand ${mode} on a follower`, async (t) => {
    const c = await startCluster(t, 3, { nodeOptions: { commandTimeout: 500 } });
    const leader = await c.waitForLeader();
    const follower = c.nodes.find((n) => n !== leader);
    c.persistence.fail('applyCommand', mode, 1, follower.id);
    for (let i = 0; i < 5; i++) await leader.command({ i }, { timeout: 5000 });
    await c.waitApplied(5);
    assert.deepEqual(c.commands(follower.id), [0, 1, 2, 3, 4].map((i) => ({ i })), 'applied once, in order');
    await waitUntil(() => reported(c, /applyCommand|EINJECTED|ETIMEDOUT/), 'the failure to be reported');
  });
}

// The transport throwing on send or connect, and connections emitting `error`.
test('transport send throws, then recovers', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  c.hub.fail(leader.id, 'send', 'throw', 20);
  const settled = await Promise.allSettled([1, 2, 3].map((i) => leader.command(i, { timeout: 3000 })));
  for (const r of settled) if (r.status === 'rejected') assert.equal(typeof r.reason.code, 'string');
  // a leader that cannot send is deposed; the plugin recovers
  c.hub.faults.clear();
  assert.ok(c.hub.faults.hits.length > 0);
  assert.ok(reported(c, /injected failure: send/), 'the send failures were reported');
  const now = await c.waitForLeader();
  await now.command('after');
  await waitUntil(() => c.running().every((n) => c.commands(n.id).includes('after')), 'after everywhere');
});

test('transport connect throws once: the peer is reached anyway', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  const leader = c.add({ id: 'L' });
  await waitForState(leader, 'leader');
  const s = c.add({ id: 'S', standby: true });
  c.hub.fail('L', 'connect', 'throw', 1);
  await leader.join('S');
  await leader.command('x');
  await c.waitApplied(1);
  assert.deepEqual(c.commands('S'), ['x']);
  assert.equal(s.currentLeader(), 'L');
  assert.ok(reported(c, /injected failure: connect/), 'the connect failure was reported');
});

test('connection error events become warnings', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const ends = c.hub.endpointsOf(leader.id);
  assert.ok(ends.length > 0);
  for (const end of ends) end.emit('error', new Error('socket exploded'));
  assert.ok(reported(c, /socket exploded/));
  await leader.command('still works');
  await c.waitApplied(1);
});

// Dropped messages: peer timeouts must not crash (the original crashed on unlistened errors).
test('a lossy network', async (t) => {
  const c = await startCluster(t, 3);
  c.hub.dropRate = 0.2;
  let done = 0;
  for (let i = 0; i < 20; i++) {
    try {
      const leader = await c.waitForLeader(undefined, { timeout: 15000 });
      await leader.command({ lossy: i }, { timeout: 2000 });
      done += 1;
    } catch (err) {
      assert.equal(typeof err.code, 'string', `coded error: ${err.message}`);
    }
  }
  c.hub.dropRate = 0;
  const leader = await c.waitForLeader();
  await leader.command('clean');
  await waitUntil(() => c.running().every((n) => c.commands(n.id).includes('clean')), 'clean everywhere');
  assert.ok(done > 0, 'some commands got through the lossy network');
  const logs = c.nodes.map((n) => JSON.stringify(c.commands(n.id)));
  assert.ok(logs.every((l) => l === logs[0]), 'same log everywhere');
});
