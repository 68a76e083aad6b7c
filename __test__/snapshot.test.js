'use strict';

// Log compaction and snapshots end to end: with a small retainedLogEntries, a follower that was
// down (or joins late) gets the state machine through createReadStream → InstallSnapshot →
// removeAllState/createWriteStream, ends with the same commands as everyone, applies nothing
// twice, and the leader keeps committing while the follower is away. Also: the value
// applyCommand calls back with is what command() resolves with.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster, startCluster, waitForState, waitUntil, untilLeaderLetsGo } = require('./helpers/cluster');

function spyResets(persistence) {
  const resets = [];
  const original = persistence.removeAllState;
  persistence.removeAllState = (id, cb) => {
    resets.push(id);
    return original(id, cb);
  };
  return resets;
}

// A follower down while the leader compacts: the leader keeps committing (2 of 3 is a majority),
// the follower comes back and catches up by snapshot.
test('a follower that was down catches up by snapshot', async (t) => {
  const c = await startCluster(t, 3, { nodeOptions: { retainedLogEntries: 10 } });
  const leader = await c.waitForLeader();
  const away = c.nodes.find((n) => n !== leader);
  for (let i = 0; i < 5; i++) await leader.command({ early: i });
  await c.waitApplied(5);
  await away.stop();
  await untilLeaderLetsGo();
  const resets = spyResets(c.persistence);
  // enough entries to exceed what a leader keeps for a lagging follower
  const LATE = 600;
  const failures = [];
  for (let i = 0; i < LATE && failures.length < 3; i++) {
    try {
      await leader.command({ late: i }, { timeout: 2000 });
    } catch (err) {
      failures.push(`command ${i}: ${err.code} ${err.message}`);
    }
  }
  assert.deepEqual(failures, [], 'the leader kept committing while the follower was away');
  const meta = c.persistence.meta(leader.id);
  assert.ok(meta.log.meta.lastIncludedIndex > c.persistence.indexes(away.id).at(-1), 'compacted past it');
  assert.ok(meta.log.entries.length < LATE, `log compacted (${meta.log.entries.length} entries kept)`);

  const back = c.add({ id: away.id });
  const installs = [];
  back.on('InstallSnapshot', (args) => installs.push(args));
  await c.waitApplied(5 + LATE, undefined, { timeout: 15000 });
  const expected = c.commands(leader.id);
  assert.equal(expected.length, 5 + LATE);
  for (const n of c.running()) assert.deepEqual(c.commands(n.id), expected, `${n.id} has every command once`);
  assert.deepEqual(resets, [away.id], 'only the returning follower reset its state');
  assert.ok(installs.length > 0, 'InstallSnapshot received');
  await leader.command('after');
  await waitUntil(() => c.commands(away.id).includes('after'), 'normal replication afterwards');
});

// A node joining a cluster whose log was compacted starts from a snapshot.
test('a late joiner starts from a snapshot', async (t) => {
  const c = new Cluster({ nodeOptions: { retainedLogEntries: 5 } });
  t.after(() => c.stop());
  const leader = c.add({ id: 'L' });
  await waitForState(leader, 'leader');
  for (let i = 0; i < 60; i++) await leader.command({ i, blob: Buffer.from([i]) });
  const resets = spyResets(c.persistence);
  c.add({ id: 'J', standby: true });
  await leader.join('J');
  await c.waitApplied(60);
  assert.deepEqual(resets, ['J']);
  const got = c.commands('J');
  assert.equal(got.length, 60);
  assert.deepEqual(got.map((x) => x.i), [...Array(60).keys()]);
  assert.deepEqual(c.persistence.indexes('J'), c.persistence.indexes('L'));
});

// command() resolves with what applyCommand called back with (reads through the log).
test('command() resolves with the applyCommand result', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  const original = c.persistence.applyCommand;
  c.persistence.applyCommand = (id, index, command, cb) =>
    original(id, index, command, (err) => cb(err, err ? undefined : { index, echo: command }));
  const leader = c.add({ id: 'R' });
  await waitForState(leader, 'leader');
  const result = await leader.command({ get: 'k' });
  assert.equal(typeof result.index, 'number');
  assert.deepEqual(result.echo, { get: 'k' });
  const viaCallback = await new Promise((resolve, reject) =>
    leader.command('v', (err, value) => (err ? reject(err) : resolve(value))));
  assert.deepEqual(viaCallback.echo, 'v');
  assert.ok(viaCallback.index > result.index);
});
