'use strict';

// Disruption protection. Pre-vote: a node cut off for many election timeouts does not raise its
// term, so when it comes back it does not depose the healthy leader. Check-quorum: a leader that
// cannot reach a majority steps down instead of believing it still leads.

const test = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, sleep, waitUntil, waitForState } = require('./helpers/cluster');

test('a healed node does not depose a healthy leader', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const term = leader.currentTerm();
  const cut = c.running().find((n) => n !== leader);
  const states = [];
  cut.on('state', (name) => states.push(name));
  c.hub.isolate(cut.id);
  await sleep(1500); // five or more election timeouts
  assert.ok(states.includes('candidate'), `the cut-off node tried to get elected (${states})`);
  assert.equal(cut.currentTerm(), term, 'pre-vote: no term was spent while cut off');
  await leader.command('while cut off');
  c.hub.heal();
  await waitUntil(() => c.commands(cut.id).includes('while cut off'), 'the healed node catches up');
  assert.equal(leader.state.name, 'leader');
  assert.equal(leader.currentTerm(), term, 'the leader kept its term');
  assert.equal(cut.currentLeader(), leader.id);
});

test('a leader that lost its majority steps down', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const others = c.running().filter((n) => n !== leader);
  c.hub.isolate(leader.id);
  const started = Date.now();
  await waitForState(leader, 'follower', { timeout: 3000 });
  const took = Date.now() - started;
  const next = await c.waitForLeader(others);
  assert.notEqual(next.id, leader.id);
  assert.ok(next.currentTerm() > 0);
  await assert.rejects(leader.command('nope'), (err) => err.code === 'ENOTLEADER');
  c.hub.heal();
  await next.command('after heal');
  await waitUntil(() => c.commands(leader.id).includes('after heal'), 'the old leader follows');
  t.diagnostic(`stepped down after ${took} ms`);
});
