'use strict';

// The file persistence's incremental extension: saveLog's write-ahead log (round trip, truncation,
// group commit, compaction by whole segments, torn tail, corruption, a folder of the saveMeta
// format converting) and applyCommands' batched journal; then a 3-node cluster on it.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const createFilePersistence = require('../lib/persistence/file');
const createKvStateMachine = require('../lib/persistence/kv-state-machine');
const { tmpDirs } = require('./helpers/tmp');
const { promised } = require('./helpers/promised');
const Node = require('..');
const { MemoryNetwork } = require('../lib/memory');

const tmpDir = tmpDirs('skiff-file-wal-');

const ID = 'node-a';
const nodeDir = (dir) => path.join(dir, createFilePersistence.safeName(ID));
const segments = (dir) => fs.readdirSync(nodeDir(dir)).filter((n) => /^wal-\d{16}$/.test(n)).sort();

function entry(index, term = 1) {
  return { term, index, command: { op: 'put', key: `k${index}`, value: index }, uuid: `u${index}` };
}

function range(from, to, term) {
  const out = [];
  for (let i = from; i <= to; i++) out.push(entry(i, term));
  return out;
}

function delta(truncateFrom, entries, { term = 1, lastIncludedIndex = 0, votedFor = 'node-b' } = {}) {
  return {
    currentTerm: term, votedFor, peers: [{ id: 'node-b', metadata: {} }],
    meta: { lastIncludedIndex, lastIncludedTerm: lastIncludedIndex ? 1 : 0 }, truncateFrom, entries,
  };
}

function state(entries, { term = 1, lastIncludedIndex = 0, votedFor = 'node-b' } = {}) {
  return {
    currentTerm: term, votedFor,
    log: { meta: { lastIncludedIndex, lastIncludedTerm: lastIncludedIndex ? 1 : 0 }, entries },
    peers: [{ id: 'node-b', metadata: {} }],
  };
}

// What a new plugin object reads from `dir` (closed again, also on failure).
async function loadFresh(dir, options = {}) {
  const p = createFilePersistence(Object.assign({ dir }, options));
  try {
    return await promised(p).loadMeta(ID);
  } finally {
    await p.close();
  }
}

// Counts FileHandle datasync calls while `fn` runs.
async function countSyncs(p, fn) {
  const fh = await fs.promises.open(__filename, 'r');
  const proto = Object.getPrototypeOf(fh);
  await fh.close();
  const original = proto.datasync;
  let n = 0;
  proto.datasync = function counted(...args) {
    n++;
    return original.apply(this, args);
  };
  try {
    await fn();
  } finally {
    proto.datasync = original;
  }
  return n;
}

test('saveLog round trip: appends, a truncation, a hard-state-only delta; across instances', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const a = promised(p);
  assert.equal(await a.loadMeta(ID), null);
  await a.saveLog(ID, delta(1, range(1, 5)));
  await a.saveLog(ID, delta(6, range(6, 8)));
  await a.saveLog(ID, delta(4, range(4, 6, 2), { term: 2 })); // a new leader replaced 4..8
  await a.saveLog(ID, delta(7, [], { term: 3, votedFor: null })); // a vote: no entries
  const expected = state([...range(1, 3), ...range(4, 6, 2)], { term: 3, votedFor: null });
  assert.deepEqual(await a.loadMeta(ID), expected);
  await p.close();
  const q = createFilePersistence({ dir });
  assert.deepEqual(await promised(q).loadMeta(ID), expected);
  // a delta that cuts without adding: 5 and 6 go
  await promised(q).saveLog(ID, delta(5, [], { term: 3 }));
  assert.deepEqual((await promised(q).loadMeta(ID)).log.entries, [...range(1, 3), entry(4, 2)]);
  // values come back exactly as JSON gave them, `__proto__` keys too
  const odd = JSON.parse('{"term":3,"index":5,"command":{"__proto__":{"x":1},"n":1.5},"uuid":"u"}');
  await promised(q).saveLog(ID, delta(5, [odd], { term: 3 }));
  await q.close();
  const back = (await loadFresh(dir)).log.entries[4];
  assert.deepEqual(Object.keys(back.command), ['__proto__', 'n']);
  assert.equal(JSON.stringify(back), JSON.stringify(odd));
});

test('saveLog: one write and one fdatasync per call, one for calls queued together; bad deltas refused', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const a = promised(p);
  await a.saveLog(ID, delta(1, range(1, 1)));
  assert.equal(await countSyncs(p, () => a.saveLog(ID, delta(2, range(2, 3)))), 1);
  const together = await countSyncs(p, () => Promise.all(
    Array.from({ length: 10 }, (_, i) => a.saveLog(ID, delta(4 + i, [entry(4 + i)])))));
  // the first call is under way when the others queue: they share the second sync
  assert.ok(together <= 2, `ten calls made at once took ${together} syncs`);
  assert.deepEqual((await a.loadMeta(ID)).log.entries, range(1, 13));
  // each entry is written once: the WAL is about the size of the entries, not of the log per save
  const bytes = segments(dir).reduce((n, s) => n + fs.statSync(path.join(nodeDir(dir), s)).size, 0);
  assert.ok(bytes < 13 * JSON.stringify(entry(10)).length + 600, `${bytes} bytes for 13 entries`);
  for (const bad of [null, { truncateFrom: 0, entries: [] }, { truncateFrom: 3, entries: [entry(4)] },
    { truncateFrom: 1, entries: 'x' }, Object.assign(delta(14, []), { peers: [10n] })].entries()) {
    await assert.rejects(a.saveLog(ID, bad[1]), (e) => e.code === 'EBADARGS' || e instanceof TypeError, `bad delta ${bad[0]}`);
  }
  assert.deepEqual((await a.loadMeta(ID)).log.entries, range(1, 13), 'a refused delta changes nothing');
  await p.close();
});

test('compaction drops whole segments below lastIncludedIndex; the rest still loads', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir, segmentBytes: 300 });
  const a = promised(p);
  for (let i = 1; i <= 40; i++) await a.saveLog(ID, delta(i, [entry(i)]));
  const before = segments(dir);
  assert.ok(before.length >= 8, `${before.length} segments`);
  // a snapshot at 30: segments holding only entries up to 30 go
  await a.saveLog(ID, delta(41, [entry(41)], { lastIncludedIndex: 30 }));
  const after = segments(dir);
  assert.ok(after.length < before.length / 2, `${before.length} -> ${after.length} segments`);
  assert.ok(after[0] > before[0], 'the oldest went');
  const expected = state(range(31, 41), { lastIncludedIndex: 30 });
  assert.deepEqual(await a.loadMeta(ID), expected);
  await p.close();
  assert.deepEqual(await loadFresh(dir), expected);
  // a follower's log replaced from above after a snapshot install: the old segments all go
  const q = createFilePersistence({ dir, segmentBytes: 300 });
  await promised(q).saveLog(ID, delta(61, [entry(61, 2)], { lastIncludedIndex: 60, term: 2 }));
  await promised(q).saveLog(ID, delta(62, [entry(62, 2)], { lastIncludedIndex: 60, term: 2 }));
  // all but the one that was being appended to
  assert.ok(segments(dir).every((name) => name >= after[after.length - 1]), segments(dir).join());
  assert.deepEqual((await promised(q).loadMeta(ID)).log.entries, [entry(61, 2), entry(62, 2)]);
  await q.close();
});

test('a torn tail of the last segment is cut off with an ETORN warning; saving goes on', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  await promised(p).saveLog(ID, delta(1, range(1, 3)));
  await p.close();
  const file = path.join(nodeDir(dir), segments(dir)[0]);
  const good = fs.statSync(file).size;
  // half of a record: a crash mid-append
  const rec = Buffer.from(JSON.stringify({ f: 4, e: [entry(4)] }));
  const header = Buffer.alloc(8);
  header.writeUInt32BE(rec.length, 0);
  fs.appendFileSync(file, Buffer.concat([header, rec.subarray(0, 10)]));
  const q = createFilePersistence({ dir });
  const warnings = [];
  q.on('warning', (w) => warnings.push(w));
  assert.deepEqual((await promised(q).loadMeta(ID)).log.entries, range(1, 3));
  assert.equal(warnings.length, 1);
  assert.equal(warnings[0].code, 'ETORN');
  assert.equal(warnings[0].offset, good);
  assert.equal(warnings[0].file, file);
  assert.equal(fs.statSync(file).size, good);
  await promised(q).saveLog(ID, delta(4, [entry(4)]));
  await q.close();
  assert.deepEqual((await loadFresh(dir)).log.entries, range(1, 4));
});

test('damage followed by valid records, or in a segment before the last, is ECORRUPT with file and offset', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir, segmentBytes: 300 });
  for (let i = 1; i <= 12; i++) await promised(p).saveLog(ID, delta(i, [entry(i)]));
  await p.close();
  const names = segments(dir);
  assert.ok(names.length >= 3);
  const flip = (file, at) => {
    const buf = fs.readFileSync(file);
    buf[at] ^= 0xff;
    fs.writeFileSync(file, buf);
  };
  // in the last segment, with a valid record after the damage
  const last = path.join(nodeDir(dir), names[names.length - 1]);
  const lastBytes = fs.readFileSync(last);
  flip(last, 12);
  await assert.rejects(loadFresh(dir), (e) => {
    assert.equal(e.code, 'ECORRUPT');
    assert.equal(e.file, last);
    assert.equal(e.offset, 0);
    return true;
  });
  assert.deepEqual(fs.readFileSync(last), (() => { const b = Buffer.from(lastBytes); b[12] ^= 0xff; return b; })(),
    'left as it is');
  fs.writeFileSync(last, lastBytes);
  // the tail of a segment that is not the last
  const first = path.join(nodeDir(dir), names[0]);
  const size = fs.statSync(first).size;
  flip(first, size - 2);
  await assert.rejects(loadFresh(dir), (e) => e.code === 'ECORRUPT' && e.file === first &&
    e.offset > 0 && e.offset < size);
  flip(first, size - 2);
  // a missing segment leaves a gap in the log
  fs.unlinkSync(path.join(nodeDir(dir), names[1]));
  await assert.rejects(loadFresh(dir), (e) => e.code === 'ECORRUPT');
});

test('a folder of the saveMeta format loads, converts on the first saveLog, and keeps working', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const old = state(range(1, 4), { term: 2 });
  await promised(p).saveMeta(ID, old); // meta.json, as written before the WAL
  await p.close();
  assert.deepEqual(fs.readdirSync(nodeDir(dir)), ['meta.json']);
  const q = createFilePersistence({ dir });
  const b = promised(q);
  assert.deepEqual(await b.loadMeta(ID), old);
  await b.saveLog(ID, delta(4, range(4, 6, 2), { term: 2 }));
  const expected = state([...range(1, 3), ...range(4, 6, 2)], { term: 2 });
  assert.deepEqual(await b.loadMeta(ID), expected);
  assert.deepEqual(fs.readdirSync(nodeDir(dir)).sort(), ['meta.json', 'wal-0000000000000001']);
  // meta.json now only says where the state went, in a form an older version refuses to load
  assert.throws(() => JSON.parse(fs.readFileSync(path.join(nodeDir(dir), 'meta.json'), 'utf8')), SyntaxError);
  // saveMeta on a WAL folder writes into the WAL
  await b.saveMeta(ID, state(range(1, 2), { term: 5 }));
  assert.deepEqual(await b.loadMeta(ID), state(range(1, 2), { term: 5 }));
  await q.close();
  assert.deepEqual(await loadFresh(dir), state(range(1, 2), { term: 5 }));
});

test('applyCommands: the batch as one journal record and one sync, results per command, re-applied indexes skipped', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const a = promised(p);
  const put = (i) => ({ index: i, command: { op: 'put', key: `k${i}`, value: i } });
  assert.equal(await a.lastAppliedCommitIndex(ID), 0);
  const syncs = await countSyncs(p, () => a.applyCommands(ID, [1, 2, 3, 4].map(put)));
  assert.equal(syncs, 1);
  const results = await a.applyCommands(ID, [put(3), put(4), { index: 5, command: { op: 'get', key: 'k2' } }]);
  assert.deepEqual(results, [undefined, undefined, 2]);
  assert.equal(await a.lastAppliedCommitIndex(ID), 5);
  await assert.rejects(a.applyCommands(ID, [put(7), put(6)]), { code: 'EBADARGS' });
  await assert.rejects(a.applyCommands(ID, []), { code: 'EBADARGS' });
  await p.close();
  const q = createFilePersistence({ dir });
  assert.equal(await promised(q).lastAppliedCommitIndex(ID), 5);
  assert.equal(q.stateMachine(ID).get('k4'), 4);
  await q.close();
});

// A batch whose state machine throws partway: the commands before the failed one took effect,
// are recorded (a restart finds them) and come back as the callback's results, with the error.
test('applyCommands failing partway: the error and the results of the commands that took effect', async () => {
  const dir = tmpDir();
  const stateMachine = () => {
    const kv = createKvStateMachine();
    const apply = kv.apply.bind(kv);
    kv.apply = (command, index) => {
      if (command.op === 'explode') throw Object.assign(new Error('exploded'), { code: 'EBOOM' });
      return apply(command, index);
    };
    return kv;
  };
  const p = createFilePersistence({ dir, stateMachine });
  const get = (i, key) => ({ index: i, command: { op: 'get', key } });
  await promised(p).applyCommands(ID, [{ index: 1, command: { op: 'put', key: 'a', value: 'A' } }]);
  const answer = await new Promise((resolve) => {
    p.applyCommands(ID, [get(1, 'a'), get(2, 'a'), get(3, 'a'), { index: 4, command: { op: 'explode' } }, get(5, 'a')],
      (err, results) => resolve({ err, results }));
  });
  assert.equal(answer.err.code, 'EBOOM');
  assert.deepEqual(answer.results, [undefined, 'A', 'A'], 'index 1 was applied before (no result), 2 and 3 now');
  assert.equal(await promised(p).lastAppliedCommitIndex(ID), 3);
  await p.close();
  const q = createFilePersistence({ dir, stateMachine });
  assert.equal(await promised(q).lastAppliedCommitIndex(ID), 3, 'what took effect is recorded');
  await q.close();
});

test('3 nodes on the file persistence use saveLog and applyCommands; a restart keeps everything', { timeout: 60000 }, async (t) => {
  const dir = tmpDir();
  const ids = ['wal-1', 'wal-2', 'wal-3'];
  const calls = { saveLog: 0, saveMeta: 0, applyCommands: 0, applyCommand: 0 };
  const start = (hub, standby) => ids.map((id, i) => {
    const persistence = createFilePersistence({ dir, segmentBytes: 4096 });
    for (const m of Object.keys(calls)) {
      const f = persistence[m].bind(persistence);
      persistence[m] = (...args) => { calls[m]++; return f(...args); };
    }
    const node = Node({ id, transport: hub, persistence, standby: i > 0 && standby, retainedLogEntries: 50 });
    node.on('warning', () => {});
    node.listen(id);
    return node;
  });
  const stop = (nodes) => Promise.all(nodes.map((n) => new Promise((resolve) => n.stop(() => resolve()))));
  const leaderOf = async (nodes) => {
    for (let k = 0; k < 500; k++) {
      const l = nodes.find((n) => n.state && n.state.name === 'leader');
      if (l) return l;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error('no leader');
  };
  let hub = new MemoryNetwork();
  let nodes = start(hub, true);
  t.after(() => stop(nodes));
  let leader = await leaderOf(nodes);
  for (const id of ids.slice(1)) await leader.join(id);
  for (let i = 0; i < 300; i++) await leader.command({ op: 'put', key: `k${i % 20}`, value: i });
  const last = await Promise.all(Array.from({ length: 50 }, (_, i) => leader.command({ op: 'put', key: `p${i}`, value: i })));
  assert.equal(last.length, 50);
  assert.ok(calls.saveLog > 0 && calls.applyCommands > 0, JSON.stringify(calls));
  assert.equal(calls.saveMeta, 0);
  assert.equal(calls.applyCommand, 0);
  await stop(nodes);
  // about 30 segments of 4 KiB were written per node; snapshots every 50 entries dropped the
  // ones below the retained entries
  for (const id of ids) {
    const seqs = fs.readdirSync(path.join(dir, createFilePersistence.safeName(id)))
      .filter((n) => n.startsWith('wal-')).map((n) => Number(n.slice(4)));
    assert.ok(seqs.length >= 1 && seqs.length <= 8, `${id}: ${seqs.length} WAL segments`);
    assert.ok(Math.max(...seqs) > seqs.length + 5, `${id}: segments ${seqs} (older ones dropped)`);
  }
  hub = new MemoryNetwork();
  nodes = start(hub, false);
  leader = await leaderOf(nodes);
  await leader.command({ op: 'put', key: 'after', value: 1 });
  const deadline = Date.now() + 10000;
  const want = { k19: 299, p49: 49, after: 1 };
  for (const n of nodes) {
    const sm = n.options.persistence.stateMachine(n.id);
    while (Object.keys(want).some((k) => sm.get(k) !== want[k]) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const [k, v] of Object.entries(want)) assert.equal(sm.get(k), v, `${n.id} ${k}`);
  }
});
