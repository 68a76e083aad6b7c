'use strict';

// Restart from our own persisted state: every node of a cluster stops, new Node objects are made
// over the same persistence store (none standby), they elect a leader (the original's nodes stayed
// candidates forever), keep the old commands, accept new ones and apply none twice.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster, startCluster } = require('./helpers/cluster');
const { MemoryNetwork: Hub } = require('../lib/memory');

test('a whole cluster restarts from its persisted state', async (t) => {
  const first = await startCluster(t, 3);
  const leader = await first.waitForLeader();
  const before = [];
  for (let i = 0; i < 20; i++) {
    before.push({ gen: 1, i });
    await leader.command({ gen: 1, i });
  }
  // a learner that never runs (join would wait for it to catch up): it stays a learner, counting
  // toward no majority, before and after the restart
  await leader.addLearner('ghost-member-never-started');
  await first.waitApplied(20);
  const ids = first.nodes.map((n) => n.id);
  await first.stop();

  // the persisted state is in the original's shape
  const meta = first.persistence.meta(leader.id);
  assert.equal(typeof meta.currentTerm, 'number');
  assert.ok('votedFor' in meta);
  assert.ok(Array.isArray(meta.log.entries));
  assert.ok(Array.isArray(meta.peers));
  assert.ok(meta.peers.every((p) => typeof p.id === 'string' && 'metadata' in p));

  const second = new Cluster({ hub: new Hub(), persistence: first.persistence });
  t.after(() => second.stop());
  for (const id of ids) second.add({ id });
  // the ghost learner counts toward no majority: the three voters elect a leader
  const next = await second.waitForLeader();
  assert.deepEqual(next.members().find((m) => m.id === 'ghost-member-never-started'),
    { id: 'ghost-member-never-started', metadata: {}, voter: false }, 'the learner was persisted as one');
  for (const n of second.nodes) assert.deepEqual(second.commands(n.id), before, `${n.id} kept its commands`);

  const after = [];
  for (let i = 0; i < 10; i++) {
    after.push({ gen: 2, i });
    await next.command({ gen: 2, i });
  }
  await second.waitApplied(30);
  for (const n of second.nodes) {
    assert.deepEqual(second.commands(n.id), before.concat(after), `${n.id}: old then new, none twice`);
    const idx = second.persistence.indexes(n.id);
    assert.equal(new Set(idx).size, idx.length);
  }
});

// A single node restarted on its own state resumes as leader with its data and term.
test('a lone node restarts as leader of its old log', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  const a = c.add({ id: 'A' });
  await c.waitForLeader();
  await a.command('one');
  await a.command('two');
  const term = a.currentTerm();
  await a.stop();
  const b = c.add({ id: 'A' });
  await c.waitForLeader([b]);
  assert.ok(b.currentTerm() > term, 'a later term');
  await b.command('three');
  assert.deepEqual(c.commands('A'), ['one', 'two', 'three']);
});
