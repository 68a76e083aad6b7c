'use strict';

// Snapshot catch-up under load: a new member joining after concurrent commands, a partitioned
// (not stopped) follower that falls behind compaction, a restart right after a snapshot install,
// and a 100k-key state machine streamed to a new member with bounded read-ahead.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster, startCluster, waitForEvent, waitForState, waitUntil, sleep, pool, untilLeaderLetsGo } = require('./helpers/cluster');
const { MapPersistence } = require('./helpers/map-persistence');

// Records the node ids removeAllState is called for.
function spyResets(persistence) {
  const resets = [];
  const original = persistence.removeAllState;
  persistence.removeAllState = (id, cb) => {
    resets.push(id);
    return original(id, cb);
  };
  return resets;
}

function strictlyIncreasing(xs) {
  for (let i = 1; i < xs.length; i++) if (!(xs[i] > xs[i - 1])) return false;
  return true;
}

// ------------------------------------------------------------------------------------------------

test('100 concurrent commands, then a new member catches up by snapshot and keeps up', async (t) => {
  const c = await startCluster(t, 3, { nodeOptions: { retainedLogEntries: 10 } });
  const leader = await c.waitForLeader();
  const N = 100;
  const results = await Promise.allSettled(
    Array.from({ length: N }, (_, i) => leader.command({ seq: i }, { timeout: 10000 })));
  const failed = results.filter((r) => r.status === 'rejected').map((r) => `${r.reason.code} ${r.reason.message}`);
  assert.deepEqual(failed, [], 'every concurrent command succeeded');
  await c.waitApplied(N);

  const resets = spyResets(c.persistence);
  const j = c.add({ id: 'joiner', standby: true });
  const installs = [];
  j.on('InstallSnapshot', (args) => installs.push(args));
  await leader.join(j.id);
  // the leader compacts after applying and saves the shorter log with its next entry (the join)
  const lii = c.persistence.meta(leader.id).log.meta.lastIncludedIndex;
  assert.ok(lii > 0, `leader compacted (lastIncludedIndex ${lii})`);
  await c.waitApplied(N, [j], { timeout: 15000 });

  const expected = c.commands(leader.id);
  assert.equal(expected.length, N);
  assert.deepEqual(c.commands(j.id), expected, 'the joiner has every command once, in the leader\'s order');
  assert.equal(new Set(expected.map((x) => x.seq)).size, N, 'each command once on the leader');
  assert.deepEqual(c.persistence.indexes(j.id), c.persistence.indexes(leader.id));
  assert.deepEqual(resets, [j.id], 'the joiner reset its state (snapshot, not log replay)');
  assert.ok(installs.length > 0, 'InstallSnapshot received by the joiner');

  const MORE = 20;
  for (let i = 0; i < MORE; i++) await leader.command({ later: i });
  await c.waitApplied(N + MORE, undefined, { timeout: 10000 });
  const all = c.commands(leader.id);
  assert.deepEqual(all.slice(N), Array.from({ length: MORE }, (_, i) => ({ later: i })));
  for (const n of c.running()) {
    assert.deepEqual(c.commands(n.id), all, `${n.id} has the same ${N + MORE} commands`);
    assert.ok(strictlyIncreasing(c.persistence.indexes(n.id)), `${n.id} indexes strictly increase`);
  }
  assert.deepEqual(resets, [j.id], 'no further resets');
});

// ------------------------------------------------------------------------------------------------

test('a partitioned follower falls behind compaction and catches up by snapshot after healing', async (t) => {
  const c = await startCluster(t, 3, { nodeOptions: { retainedLogEntries: 20 } });
  const leader = await c.waitForLeader();
  for (let i = 0; i < 5; i++) await leader.command({ early: i });
  await c.waitApplied(5);
  const f = c.nodes.find((n) => n !== leader);
  const others = c.nodes.filter((n) => n !== f).map((n) => n.id);
  const installs = [];
  f.on('InstallSnapshot', (args) => installs.push(args));
  const resets = spyResets(c.persistence);
  c.hub.partition(f.id, others);
  await untilLeaderLetsGo();

  const N = 2000;
  const failures = await pool(N, 64, (i) => leader.command({ bulk: i }, { timeout: 10000 }));
  assert.deepEqual(failures, [], 'the majority kept committing');
  assert.equal(leader.state.name, 'leader', 'the leader kept its role during the partition');
  const fApplied = c.persistence.indexes(f.id).at(-1);
  assert.equal(c.commands(f.id).length, 5, 'the partitioned follower applied nothing new');
  const lii = c.persistence.meta(leader.id).log.meta.lastIncludedIndex;
  assert.ok(lii > fApplied, `leader compacted past the follower (lastIncludedIndex ${lii} > ${fApplied})`);
  assert.equal(f.state.name !== 'stopped', true, 'the follower was partitioned, not stopped');

  c.hub.heal();
  await c.waitApplied(5 + N, undefined, { timeout: 20000 });
  const now = await c.waitForLeader();
  const expected = c.commands(now.id);
  assert.equal(expected.length, 5 + N);
  assert.deepEqual(c.commands(f.id), expected, 'the follower has exactly the leader\'s commands');
  assert.deepEqual(c.persistence.indexes(f.id), c.persistence.indexes(now.id));
  assert.ok(installs.length > 0, 'InstallSnapshot received by the healed follower');
  assert.deepEqual([...new Set(resets)], [f.id], 'only the healed follower reset its state');
  for (const n of c.running()) assert.deepEqual(c.commands(n.id), expected, `${n.id} agrees`);
});

// ------------------------------------------------------------------------------------------------

// `when`: 'installed' stops the node in the same tick as saveCommitIndex(snapshot index) calls
// back (the install is complete); 'finished' stops it when its snapshot write stream emits `finish`
// and makes its saveCommitIndex never happen, as if the process died between the two (the
// install-in-progress mark stays set, the recorded index stays 0: the restart must redo the install).
async function restartAfterInstall(t, when) {
  const c = await startCluster(t, 3, { nodeOptions: { retainedLogEntries: 10 } });
  const leader = await c.waitForLeader();
  for (let i = 0; i < 5; i++) await leader.command({ early: i });
  await c.waitApplied(5);
  const f = c.nodes.find((n) => n !== leader);
  const fid = f.id;
  const others = c.nodes.filter((n) => n !== f).map((n) => n.id);

  // every applyCommand call the engine makes for fid, over all its lives
  const applied = [];
  const p = c.persistence;
  const origApply = p.applyCommand;
  p.applyCommand = (id, index, command, cb) => {
    if (id === fid) applied.push(index);
    return origApply(id, index, command, cb);
  };
  const resets = spyResets(p);
  let finished = false;
  let installedIndex = null; // saveCommitIndex after the first finished write stream
  let stopped = null;
  const origWrite = p.createWriteStream;
  p.createWriteStream = (id) => {
    const s = origWrite(id);
    if (id === fid) {
      s.on('finish', () => {
        if (finished) return;
        finished = true;
        if (when === 'finished') {
          p.fail('saveCommitIndex', 'never', 1, fid);
          stopped = f.stop();
        }
      });
    }
    return s;
  };
  const origSave = p.saveCommitIndex;
  p.saveCommitIndex = (id, index, cb) => origSave(id, index, (err) => {
    cb(err);
    if (id === fid && f.state.name !== 'stopped' && finished && installedIndex === null && !err) {
      installedIndex = index;
      if (when === 'installed') stopped = f.stop();
    }
  });

  c.hub.partition(fid, others);
  await untilLeaderLetsGo();
  const N = 300;
  const failures = await pool(N, 32, (i) => leader.command({ bulk: i }, { timeout: 10000 }));
  assert.deepEqual(failures, []);
  const lii = c.persistence.meta(leader.id).log.meta.lastIncludedIndex;
  assert.ok(lii > p.indexes(fid).at(-1), 'leader compacted past the follower');
  c.hub.heal();

  await waitUntil(() => stopped !== null, 'the follower to install a snapshot', { timeout: 15000 });
  await stopped;
  p.faults.clear(); // in case the stopped node never reached saveCommitIndex: not for its successor
  if (when === 'installed') assert.ok(installedIndex >= lii, `installed snapshot at ${installedIndex}`);
  if (when === 'finished') assert.equal(p.appliedIndex(fid), 0, 'the snapshot index was not recorded');
  assert.deepEqual(resets, [fid]);
  const appliedBeforeRestart = applied.length;

  const back = c.add({ id: fid });
  assert.notEqual(back, f);
  // Let the restarted node rejoin before loading the leader again: a leader holds its log only for
  // followers in step, so with retainedLogEntries 10 load during the rejoin may legitimately
  // compact past it and cost one more snapshot, which is not what this test is about.
  const leaderNow = await c.waitForLeader();
  const target = p.appliedIndex(leaderNow.id);
  await waitUntil(() => (p.appliedIndex(fid) || 0) >= target && back.state.name === 'follower',
    `the restarted node to be at ${target} (is at ${p.appliedIndex(fid)})`, { timeout: 15000 });
  await waitForEvent(back, 'AppendEntries');
  await sleep(100);
  if (when === 'finished') assert.deepEqual(resets, [fid, fid], 'the interrupted install was redone');
  else assert.deepEqual(resets, [fid], 'the completed install was not redone');
  const resetsAtRestart = resets.length;

  const MORE = 50;
  const more = await pool(MORE, 8, (i) => c.waitForLeader().then((l) => l.command({ after: i }, { timeout: 10000 })));
  assert.deepEqual(more, [], 'commands after the restart succeed');
  await c.waitApplied(5 + N + MORE, undefined, { timeout: 15000 });

  const now = await c.waitForLeader();
  assert.ok(strictlyIncreasing(applied), `applyCommand for ${fid} never repeats an index: ${applied.join(',')}`);
  const afterRestart = applied.slice(appliedBeforeRestart);
  const floor = when === 'installed' ? installedIndex : lii;
  assert.ok(afterRestart.every((i) => i > floor), `nothing at or below the snapshot (${floor}) was applied again`);
  if (resets.length === resetsAtRestart) {
    assert.equal(afterRestart.length, MORE, 'the restarted node applied each new command once');
  }
  assert.ok(strictlyIncreasing(p.indexes(fid)), 'recorded indexes strictly increase');
  assert.deepEqual(p.commands(fid), p.commands(now.id), 'the restarted node ends identical to the leader');
  assert.deepEqual(p.indexes(fid), p.indexes(now.id));
  t.diagnostic(`${when}: leader lastIncludedIndex ${lii}, saveCommitIndex ${installedIndex}; ` +
    `resets ${JSON.stringify(resets)}; applies after restart ${afterRestart.length}`);
}

test('a restart right after installing a snapshot applies nothing twice', (t) => restartAfterInstall(t, 'installed'));

test('a crash between the snapshot write and saveCommitIndex: the restart redoes the install', (t) => restartAfterInstall(t, 'finished'));

// ------------------------------------------------------------------------------------------------

test('a 100k-key state machine streams to a new member with bounded read-ahead', async (t) => {
  const p = new MapPersistence();
  // The join commits only once the new member holds the whole snapshot (it is half of the new
  // configuration): give it as long as the stream is given below, not the 3 s default, which a
  // busy shared machine does not guarantee for 100k keys.
  const c = new Cluster({ persistence: p, nodeOptions: { retainedLogEntries: 10, commandTimeout: 25000 } });
  t.after(() => c.stop());
  const leader = c.add({ id: 'big' });
  await waitForState(leader, 'leader');

  const COMMANDS = 1000;
  const PER = 100;
  const t0 = Date.now();
  const failures = await pool(COMMANDS, 64, (i) => leader.command(
    Array.from({ length: PER }, (_, k) => ({ key: `k${i * PER + k}`, value: i * PER + k })),
    { timeout: 15000 }));
  assert.deepEqual(failures, []);
  const source = p.map(leader.id);
  assert.equal(source.size, COMMANDS * PER);
  t.diagnostic(`built ${source.size} keys in ${Date.now() - t0} ms`);

  if (global.gc) global.gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const t1 = Date.now();
  const j = c.add({ id: 'new', standby: true });
  const installs = [];
  j.on('InstallSnapshot', () => installs.push(1));
  await leader.join(j.id);
  await waitUntil(() => (p.appliedIndex(j.id) || 0) >= (p.appliedIndex(leader.id) || 0) &&
    p.map(j.id).size === source.size,
    `the new member to have ${source.size} keys (has ${p.map(j.id).size})`, { timeout: 25000, interval: 50 });
  const heapAfter = process.memoryUsage().heapUsed;
  t.diagnostic(`streamed in ${Date.now() - t1} ms; ${installs.length} InstallSnapshot messages; ` +
    `${p.readStreams} read stream(s); max read-ahead ${p.maxAhead} chunks`);
  t.diagnostic(`heapUsed before ${(heapBefore / 1e6).toFixed(1)} MB, after ${(heapAfter / 1e6).toFixed(1)} MB`);

  const copy = p.map(j.id);
  assert.equal(copy.size, source.size);
  for (const [k, v] of source) {
    if (copy.get(k) !== v) assert.fail(`key ${k}: ${copy.get(k)} !== ${v}`);
  }
  assert.ok(installs.length > 1, 'the snapshot came in several InstallSnapshot messages');
  assert.ok(p.maxAhead > 0);
  assert.ok(p.maxAhead < 5000, `read-ahead stays bounded (${p.maxAhead} chunks)`);

  await leader.command([{ key: 'last', value: 1 }]);
  await waitUntil(() => p.map(j.id).get('last') === 1, 'normal replication afterwards');
});
