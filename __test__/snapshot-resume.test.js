'use strict';

// Snapshots that do not stall commands, and transfers that resume: with the point-in-time
// extension (`createSnapshotReadStream`) a leader streams a large snapshot to a follower while
// its commands keep completing, and a transfer cut midway goes on from the chunk the follower
// has instead of from zero. Both beside the same file persistence without the extension.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const Node = require('..');
const { Readable } = require('node:stream');
const { MemoryNetwork } = require('../lib/memory');
const { waitForState, waitUntil, untilLeaderLetsGo } = require('./helpers/cluster');

const KEYS = 50000;
const PER_COMMAND = 500;
const VALUE = 'v'.repeat(160);

// Runs the cleanups a test registers, last first (nodes stop before their persistence closes).
function cleanups(t) {
  const list = [];
  t.after(async () => {
    for (const fn of list.reverse()) await fn();
  });
  return list;
}

// The file persistence in a temporary folder; `pointInTime: false` hides the extension, so the
// engine falls back to holding applying back while it reads.
function persistenceFor(cleanup, { pointInTime }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-resume-'));
  const file = Node.createFilePersistence({ dir });
  cleanup.push(async () => {
    await file.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  if (pointInTime) return file;
  const plain = { stateMachine: file.stateMachine.bind(file) };
  for (const m of ['loadMeta', 'saveMeta', 'applyCommand', 'lastAppliedCommitIndex', 'saveCommitIndex',
    'createReadStream', 'createWriteStream', 'removeAllState']) {
    plain[m] = file[m].bind(file);
  }
  return plain;
}

// Three nodes on one in-memory network; resolves with them, the leader first.
async function threeNodes(cleanup, persistence) {
  const net = new MemoryNetwork();
  const nodes = [];
  cleanup.push(async () => {
    await Promise.all(nodes.map((n) => n.stop().catch(() => undefined)));
    net.shutdown();
  });
  // long election timeouts: one process carries three nodes and a 10 MB snapshot, and a busy
  // event loop must not look like a dead leader
  const options = { transport: net, persistence, retainedLogEntries: 10, commandTimeout: 20000,
    heartbeatInterval: 100, minElectionTimeout: 1000, maxElectionTimeout: 1500 };
  const leader = Node({ ...options, id: 'a' });
  nodes.push(leader);
  leader.listen('a');
  await waitForState(leader, 'leader');
  for (const id of ['b', 'c']) {
    const n = Node({ ...options, id, standby: true });
    nodes.push(n);
    n.listen(id);
    await leader.join(id);
  }
  return { net, leader, b: nodes[1], c: nodes[2] };
}

// Cuts `c` off, waits until the leader no longer keeps its log for it (two election timeouts
// after it last heard from it: until then `c` would go on from the log, and no snapshot would be
// read for it), and puts KEYS keys through `leader`, PER_COMMAND to a command.
async function cutOffAndFill(net, leader) {
  net.isolate('c');
  await untilLeaderLetsGo(1500);
  for (let i = 0; i < KEYS; i += PER_COMMAND) {
    const ops = [];
    for (let k = i; k < i + PER_COMMAND; k++) ops.push({ op: 'put', key: `k${k}`, value: VALUE });
    await leader.command({ op: 'batch', ops });
  }
}

// The InstallSnapshot chunks `from` sends, by seq, in order.
function countChunks(net, from) {
  const seqs = [];
  net.onMessage = (src, dst, type, args) => {
    if (src === from && type === 'InstallSnapshot') seqs.push(args.seq);
  };
  return seqs;
}

// Cuts `c` off while KEYS keys are written, heals it, and measures the commands the leader
// completes (one at a time) while `c` installs the snapshot it now needs.
async function catchUpUnderLoad(cleanup, pointInTime) {
  const persistence = persistenceFor(cleanup, { pointInTime });
  const { net, leader, c } = await threeNodes(cleanup, persistence);
  await cutOffAndFill(net, leader);
  const seqs = countChunks(net, 'a');
  const installed = new Promise((resolve) => c.once('snapshot installed', resolve));
  let done = false;
  installed.then(() => { done = true; });
  net.heal();
  const latencies = [];
  let during = 0;
  let n = 0;
  const giveUp = Date.now() + 60000;
  while (!done) {
    assert.ok(Date.now() < giveUp, `no snapshot installed on c within 60 s (${n} commands)`);
    const t0 = process.hrtime.bigint();
    await leader.command({ op: 'put', key: `during${n++}`, value: n });
    latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (!done && seqs.length > 0) during++;
  }
  await installed;
  const sm = persistence.stateMachine('c');
  await waitUntil(() => sm.size === KEYS + n, `c to have every key (${sm.size})`);
  const size = sm.size;
  return { max: Math.max(...latencies), commands: latencies.length, during, chunks: seqs.length, size };
}

test('commands keep completing while a follower installs a 50k-key snapshot', { timeout: 120000 }, async (t) => {
  const cleanup = cleanups(t);
  const withIt = await catchUpUnderLoad(cleanup, true);
  const without = await catchUpUnderLoad(cleanup, false);
  t.diagnostic(`with createSnapshotReadStream: longest command ${withIt.max.toFixed(1)} ms, ` +
    `${withIt.during} of ${withIt.commands} commands completed during a ${withIt.chunks}-chunk transfer`);
  t.diagnostic(`without (applying held back): longest command ${without.max.toFixed(1)} ms, ` +
    `${without.during} of ${without.commands} commands completed during a ${without.chunks}-chunk transfer`);
  assert.ok(withIt.chunks > 1, 'the snapshot took several InstallSnapshot messages');
  assert.ok(withIt.during >= 3, `commands completed while the transfer ran (${withIt.during})`);
  assert.ok(withIt.max < without.max, 'the longest command waits less than with applying held back');
});

test('a transfer cut at chunk k resumes at k or after, not from zero', { timeout: 120000 }, async (t) => {
  const cleanup = cleanups(t);
  const persistence = persistenceFor(cleanup, { pointInTime: true });
  const { net, leader, c } = await threeNodes(cleanup, persistence);
  await cutOffAndFill(net, leader);
  const CUT = 5;
  const seqs = [];
  const removed = [];
  const original = persistence.removeAllState.bind(persistence);
  persistence.removeAllState = (id, cb) => {
    removed.push(id);
    return original(id, cb);
  };
  let cutAt = -1;
  net.onMessage = (src, dst, type, args) => {
    if (src !== 'a' || type !== 'InstallSnapshot') return;
    seqs.push(args.seq);
    if (args.seq === CUT && cutAt < 0) {
      cutAt = seqs.length; // this chunk and everything after it is lost until the heal
      net.block('a', 'c');
      setTimeout(() => net.heal(), 300);
    }
  };
  const installed = new Promise((resolve) => c.once('snapshot installed', resolve));
  net.heal();
  await installed;
  assert.ok(cutAt > 0, 'the transfer reached chunk k and was cut there');
  const after = seqs.slice(cutAt);
  t.diagnostic(`chunks sent: ${seqs.length}; cut at seq ${CUT}; sent after the cut: ${after.join(',')}`);
  assert.ok(after.length > 0, 'the transfer went on after the cut');
  assert.ok(after.every((s) => s >= CUT), `after the cut every chunk is k or later (${after.join(',')})`);
  assert.equal(seqs.filter((s) => s === 0).length, 1, 'chunk 0 was sent once: no restart from zero');
  assert.deepEqual(removed, ['c'], 'the follower cleared its state machine once');
  await waitUntil(() => persistence.stateMachine('c').size === KEYS, 'c to have every key');
  await leader.command({ op: 'put', key: 'last', value: 1 });
  await waitUntil(() => persistence.stateMachine('c').get('last') === 1, 'normal replication afterwards');
});

test('without the extension a cut transfer starts again from zero (as before)', { timeout: 120000 }, async (t) => {
  const cleanup = cleanups(t);
  const persistence = persistenceFor(cleanup, { pointInTime: false });
  const { net, leader, c } = await threeNodes(cleanup, persistence);
  await cutOffAndFill(net, leader);
  const seqs = [];
  let cut = false;
  net.onMessage = (src, dst, type, args) => {
    if (src !== 'a' || type !== 'InstallSnapshot') return;
    seqs.push(args.seq);
    if (args.seq === 3 && !cut) {
      cut = true;
      net.block('a', 'c');
      setTimeout(() => net.heal(), 300);
    }
  };
  const installed = new Promise((resolve) => c.once('snapshot installed', resolve));
  net.heal();
  await installed;
  assert.ok(cut);
  assert.ok(seqs.filter((s) => s === 0).length >= 2, `the transfer restarted from zero (${seqs.join(',')})`);
  await waitUntil(() => persistence.stateMachine('c').size === KEYS, 'c to have every key');
});

// Reads a readable to its end.
async function readAll(stream) {
  const out = [];
  for await (const chunk of stream) out.push(chunk);
  return out;
}

test('the file persistence reads a snapshot at a point in time while applying goes on', async (t) => {
  const cleanup = cleanups(t);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-pit-'));
  // the built-in key-value state machine (pointInTime), and one without pointInTime (a checkpoint)
  const custom = (id) => {
    const sm = Node.createKvStateMachine({ batchSize: 2 });
    return { apply: (c, i) => sm.apply(c, i), snapshot: () => sm.snapshot(), reset: () => sm.reset(),
      restore: (c) => sm.restore(c), get: (k) => sm.get(k), id };
  };
  const files = [Node.createFilePersistence({ dir: path.join(dir, 'kv') }),
    Node.createFilePersistence({ dir: path.join(dir, 'custom'), stateMachine: custom })];
  cleanup.push(async () => {
    for (const f of files) await f.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const call = (fn) => new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
  for (const file of files) {
    for (let i = 1; i <= 5; i++) {
      await call((cb) => file.applyCommand('n', i, { op: 'put', key: `k${i}`, value: i }, cb));
    }
    const read = await call((cb) => file.createSnapshotReadStream('n', cb));
    assert.equal(read.index, 5);
    // applying goes on before the stream is read: a change, a delete, a new key
    await call((cb) => file.applyCommand('n', 6, { op: 'put', key: 'k1', value: 'changed' }, cb));
    await call((cb) => file.applyCommand('n', 7, { op: 'del', key: 'k2' }, cb));
    await call((cb) => file.applyCommand('n', 8, { op: 'put', key: 'k9', value: 9 }, cb));
    const entries = (await readAll(read.stream)).flatMap((c) => c.entries);
    assert.deepEqual(new Map(entries), new Map([['k1', 1], ['k2', 2], ['k3', 3], ['k4', 4], ['k5', 5]]));
    assert.equal(file.stateMachine('n').get('k1'), 'changed');
  }
});

test('a point-in-time read that gives junk is reported and the leader goes on', { timeout: 60000 }, async (t) => {
  const cleanup = cleanups(t);
  const file = persistenceFor(cleanup, { pointInTime: true });
  const answers = [
    (cb) => cb(null, { index: -1, stream: { read() {}, on() {} } }),
    (cb) => cb(null, null),
    (cb) => { cb(null, { index: 1e6, stream: Readable.from([]) }); cb(null, {}); }, // beyond commit; twice
  ];
  let asked = 0;
  const persistence = Object.create(file);
  persistence.createSnapshotReadStream = (id, cb) => {
    const answer = answers[asked++];
    if (answer) answer(cb);
    else file.createSnapshotReadStream(id, cb);
  };
  const { net, leader, c } = await threeNodes(cleanup, persistence);
  const warnings = [];
  leader.on('warning', (e) => warnings.push(e.code));
  leader.on('error', (e) => warnings.push(e.code));
  net.isolate('c');
  await untilLeaderLetsGo(1500);
  for (let i = 0; i < 40; i++) await leader.command({ op: 'put', key: `k${i}`, value: i });
  const installed = new Promise((resolve) => c.once('snapshot installed', resolve));
  net.heal();
  await installed;
  assert.ok(asked > answers.length, `the leader asked again after each bad answer (${asked})`);
  assert.ok(warnings.includes('EBADRESULT'), `bad results are reported (${warnings.join(',')})`);
  assert.ok(warnings.includes('EPLUGIN'), `a second callback is reported (${warnings.join(',')})`);
  // the snapshot may be of an index before the last command (a read opened while c was still
  // counted as answering); the log brings the rest
  await waitUntil(() => file.stateMachine('c').get('k39') === 39, 'c to have every key');
});

test('the memory persistence has the extension only when asked, and reads at a point in time', async () => {
  const { MemoryPersistence } = require('../lib/memory');
  assert.equal(new MemoryPersistence().createSnapshotReadStream, undefined);
  const p = new MemoryPersistence({ pointInTime: true });
  const call = (fn) => new Promise((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v))));
  await call((cb) => p.applyCommand('n', 1, 'a', cb));
  await call((cb) => p.applyCommand('n', 2, 'b', cb));
  const read = await call((cb) => p.createSnapshotReadStream('n', cb));
  await call((cb) => p.applyCommand('n', 3, 'c', cb));
  assert.equal(read.index, 2);
  assert.deepEqual((await readAll(read.stream)).map((r) => r.command), ['a', 'b']);
});
