'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Writable } = require('node:stream');
const { pipeline } = require('node:stream/promises');

const createFilePersistence = require('../lib/persistence/file');
const { tmpDirs } = require('./helpers/tmp');
const { promised } = require('./helpers/promised');
const createKvStateMachine = require('../lib/persistence/kv-state-machine');

const tmpDir = tmpDirs('skiff-file-persistence-');

// Promise forms of the callback API.

const ID = 'tcp://127.0.0.1:9001';

function nodeDir(dir, id) {
  return path.join(dir, createFilePersistence.safeName(id));
}

const sampleState = (term) => ({
  currentTerm: term,
  votedFor: 'node-b',
  log: {
    meta: { lastIncludedIndex: 120, lastIncludedTerm: 2 },
    entries: [
      { term: 3, index: 121, command: 'x', uuid: 'u1' },
      { term: 3, index: 122, command: ['add peer', 'node-d', { zone: 'b' }], topologyChange: true, uuid: 'u2' },
    ],
  },
  peers: [{ id: 'node-b', metadata: {} }, { id: 'node-c', metadata: { zone: 'c' } }],
});

test('saveMeta / loadMeta round trip, across instances; queued saves keep the last one', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const a = promised(p);
  assert.equal(await a.loadMeta(ID), null, 'nothing saved yet');
  await a.saveMeta(ID, sampleState(3));
  assert.deepEqual(await a.loadMeta(ID), sampleState(3));

  // Many saves without waiting: every callback fires, the last state wins.
  let called = 0;
  await Promise.all(Array.from({ length: 25 }, (_, i) => a.saveMeta(ID, sampleState(10 + i)).then(() => called++)));
  assert.equal(called, 25);
  assert.equal((await a.loadMeta(ID)).currentTerm, 34);
  // A load issued right behind a save sees it.
  const saving = a.saveMeta(ID, sampleState(99));
  assert.equal((await a.loadMeta(ID)).currentTerm, 99);
  await saving;
  await p.close();

  const q = createFilePersistence({ dir });
  assert.deepEqual(await promised(q).loadMeta(ID), sampleState(99));
  assert.equal(await promised(q).loadMeta('another node'), null);
  await assert.rejects(promised(q).saveMeta(ID, { bad: 10n }), TypeError);
  await q.close();
});

test('a crash mid-write (temp files, torn journal tail) corrupts nothing', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const a = promised(p);
  await a.saveMeta(ID, sampleState(5));
  for (let i = 1; i <= 10; i++) await a.applyCommand(ID, i, { op: 'put', key: `k${i}`, value: i });
  await p.close();

  // What a crash in the middle of each kind of write leaves behind.
  const nd = nodeDir(dir, ID);
  fs.writeFileSync(path.join(nd, 'meta.json.tmp-4242-deadbeef'), '{"currentTerm": 6, "vot');
  fs.writeFileSync(path.join(nd, 'checkpoint.tmp-4242-deadbeef'), Buffer.from([0, 0, 1, 0, 9, 9]));
  const journal = fs.readdirSync(nd).find((n) => n.startsWith('journal-'));
  fs.appendFileSync(path.join(nd, journal), Buffer.from([0, 0, 0, 40, 1, 2, 3, 4, 5, 6])); // a torn record

  const q = createFilePersistence({ dir });
  const b = promised(q);
  assert.deepEqual(await b.loadMeta(ID), sampleState(5));
  assert.equal(await b.lastAppliedCommitIndex(ID), 10);
  assert.equal(q.stateMachine(ID).get('k10'), 10);
  assert.equal(q.stateMachine(ID).size, 10);
  // The damaged tail was cut off: appends after it survive the next restart.
  await b.applyCommand(ID, 11, { op: 'put', key: 'k11', value: 11 });
  await b.saveMeta(ID, sampleState(6));
  await q.close();
  assert.deepEqual(fs.readdirSync(nd).filter((n) => n.includes('.tmp-')), [], 'temp files were removed');

  const r = createFilePersistence({ dir });
  assert.equal(await promised(r).lastAppliedCommitIndex(ID), 11);
  assert.equal(r.stateMachine(ID).get('k11'), 11);
  assert.equal((await promised(r).loadMeta(ID)).currentTerm, 6);
  await r.close();
});

test('applyCommand is idempotent by index and returns results; get reads through the log', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const a = promised(p);
  assert.equal(await a.lastAppliedCommitIndex(ID), 0);
  assert.equal(await a.applyCommand(ID, 1, { op: 'put', key: 'a', value: 1 }), undefined);
  await a.applyCommand(ID, 1, { op: 'put', key: 'a', value: 'again' }); // the same index again: a no-op
  assert.equal(p.stateMachine(ID).get('a'), 1);
  assert.equal(await a.applyCommand(ID, 2, { op: 'get', key: 'a' }), 1);
  assert.equal(await a.applyCommand(ID, 3, { op: 'del', key: 'a' }), true);
  assert.equal(await a.applyCommand(ID, 4, { op: 'del', key: 'a' }), false);
  await a.applyCommand(ID, 2, { op: 'put', key: 'a', value: 'late' }); // lower index: a no-op
  assert.equal(p.stateMachine(ID).has('a'), false);
  // Commands that are not key-value operations still advance the index (the original's tests use them).
  await a.applyCommand(ID, 5, 'a string command');
  await a.applyCommand(ID, 6, ['an', 'array']);
  await a.applyCommand(ID, 7, 42);
  await a.applyCommand(ID, 8, { op: 'put', key: 'buf', value: Buffer.from([1, 2, 3]) });
  // Many queued at once: applied in order, one fsync per batch.
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) =>
    a.applyCommand(ID, 9 + i, i % 2 ? { op: 'get', key: 'n' } : { op: 'put', key: 'n', value: i })));
  results.forEach((r, i) => { if (i % 2) assert.equal(r, i - 1); });
  assert.equal(await a.lastAppliedCommitIndex(ID), 108);
  await assert.rejects(a.applyCommand(ID, -1, {}), { code: 'EBADARGS' });
  await p.close();

  const q = createFilePersistence({ dir });
  const b = promised(q);
  assert.equal(await b.lastAppliedCommitIndex(ID), 108);
  await b.applyCommand(ID, 1, { op: 'put', key: 'a', value: 'replayed?' }); // re-applying is a no-op
  assert.equal(q.stateMachine(ID).has('a'), false);
  assert.ok(Buffer.isBuffer(q.stateMachine(ID).get('buf')));
  assert.deepEqual([...q.stateMachine(ID).get('buf')], [1, 2, 3]);
  assert.equal(q.stateMachine(ID).get('n'), 98);
  await q.close();
});

test('lastAppliedCommitIndex and saveCommitIndex across restarts; compaction keeps the state', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir, compactBytes: 2048 });
  const a = promised(p);
  let index = 0;
  for (let round = 0; round < 20; round++) {
    const batch = [];
    for (let k = 0; k < 25; k++) {
      index++;
      batch.push(a.applyCommand(ID, index, { op: 'put', key: `k${index % 97}`, value: { round, index, pad: 'x'.repeat(20) } }));
    }
    await Promise.all(batch);
  }
  await a.saveCommitIndex(ID, index + 3); // a membership entry the state machine does not see
  await a.saveCommitIndex(ID, 2); // never goes back
  assert.equal(await a.lastAppliedCommitIndex(ID), index + 3);
  const expected = p.stateMachine(ID).toObject();
  await p.close();
  const nd = nodeDir(dir, ID);
  const files = fs.readdirSync(nd).sort();
  assert.equal(files.filter((n) => n.startsWith('journal-')).length, 1, files.join());
  assert.ok(fs.statSync(path.join(nd, 'checkpoint')).size > 0, 'compaction wrote a checkpoint');

  const q = createFilePersistence({ dir });
  assert.equal(await promised(q).lastAppliedCommitIndex(ID), index + 3);
  assert.deepEqual(q.stateMachine(ID).toObject(), expected);
  await q.close();
});

async function readAll(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

test('read stream → removeAllState → write stream restores the identical state', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const a = promised(p);
  let i = 0;
  for (; i < 700; i++) await a.applyCommand(ID, i + 1, { op: 'put', key: i % 3 ? `k${i}` : i, value: i % 5 ? { i, s: 'v'.repeat(i % 50) } : Buffer.from([i & 255]) });
  await a.applyCommand(ID, ++i, { op: 'del', key: 'k1' });
  const before = [...p.stateMachine(ID).entries()];
  assert.equal(before.length, 699);

  const rs = p.createReadStream(ID);
  const chunks = await readAll(rs);
  assert.equal(rs.lastIncludedIndex, 701);
  assert.ok(chunks.length >= 3, 'several bounded chunks');

  // The same node: clear it, then write the chunks back.
  await a.removeAllState(ID);
  assert.equal(p.stateMachine(ID).size, 0);
  assert.equal(await a.lastAppliedCommitIndex(ID), 0);
  const ws = p.createWriteStream(ID);
  await pipeline(async function* () { yield* chunks; }, ws);
  await a.saveCommitIndex(ID, 701); // what the engine does after a snapshot
  assert.deepEqual([...p.stateMachine(ID).entries()], before);

  // Another node fed straight from the stream (what a follower gets), and a restart of both.
  await a.removeAllState('follower');
  await pipeline(p.createReadStream(ID), p.createWriteStream('follower'));
  await a.saveCommitIndex('follower', 701);
  await p.close();
  const q = createFilePersistence({ dir });
  const b = promised(q);
  assert.equal(await b.lastAppliedCommitIndex(ID), 701);
  assert.equal(await b.lastAppliedCommitIndex('follower'), 701);
  assert.deepEqual([...q.stateMachine(ID).entries()], before);
  assert.deepEqual([...q.stateMachine('follower').entries()], before);
  await q.close();
});

test('a write stream destroyed half way leaves the old state and releases the node', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const a = promised(p);
  for (let i = 1; i <= 5; i++) await a.applyCommand(ID, i, { op: 'put', key: `k${i}`, value: i });
  const ws = p.createWriteStream(ID);
  await new Promise((resolve) => ws.write({ entries: [['other', 1]] }, resolve));
  ws.destroy();
  await new Promise((resolve) => ws.on('close', resolve));
  assert.equal(await a.lastAppliedCommitIndex(ID), 5, 'the node works again');
  assert.equal(p.stateMachine(ID).get('k5'), 5);
  assert.equal(p.stateMachine(ID).has('other'), false);

  // A bad chunk fails the stream; the state is untouched.
  const bad = p.createWriteStream(ID);
  await assert.rejects(pipeline(async function* () { yield { entries: [['x', 1]] }; yield { nope: true }; }, bad),
    { code: 'EBADCHUNK' });
  assert.equal(await a.lastAppliedCommitIndex(ID), 5);
  assert.deepEqual(p.stateMachine(ID).toObject(), { k1: 1, k2: 2, k3: 3, k4: 4, k5: 5 });
  await p.close();
});

test('100k keys: the read stream is bounded and honours back-pressure', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const a = promised(p);
  const N = 100000;
  const value = 'v'.repeat(40);
  for (let start = 1; start <= N; start += 10000) {
    const batch = [];
    for (let i = start; i < start + 10000; i++) batch.push(a.applyCommand(ID, i, { op: 'put', key: `key-${i}`, value: `${value}${i}` }));
    await Promise.all(batch);
  }
  global.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const rs = p.createReadStream(ID);
  let maxBuffered = 0;
  let keys = 0;
  let peak = heapBefore;
  const slow = new Writable({
    objectMode: true,
    highWaterMark: 1,
    write(chunk, _enc, cb) {
      maxBuffered = Math.max(maxBuffered, rs.readableLength);
      keys += chunk.entries.length;
      if (keys % 20000 < chunk.entries.length) peak = Math.max(peak, process.memoryUsage().heapUsed);
      setImmediate(cb);
    },
  });
  await pipeline(rs, slow);
  assert.equal(keys, N);
  assert.equal(rs.lastIncludedIndex, N);
  assert.ok(maxBuffered <= rs.readableHighWaterMark, `buffered ${maxBuffered} chunks`);
  const mb = (n) => `${(n / 1048576).toFixed(1)} MiB`;
  console.log(`# 100k keys: heap before streaming ${mb(heapBefore)}, peak while streaming ${mb(peak)}, ` +
    `checkpoint ${mb(fs.statSync(path.join(nodeDir(dir, ID), 'checkpoint')).size)}`);

  // And into another node, then compare.
  await pipeline(p.createReadStream(ID), p.createWriteStream('copy'));
  assert.equal(p.stateMachine('copy').size, N);
  assert.equal(p.stateMachine('copy').get('key-77777'), `${value}77777`);
  await p.close();
});

test('custom state machines: a factory per node id, async apply; one instance serves one id', async () => {
  const dir = tmpDir();
  const counter = () => {
    let total = 0;
    return {
      async apply(cmd) { await new Promise((r) => setImmediate(r)); total += cmd.add; return total; },
      snapshot() { return [{ total }]; },
      reset() { total = 0; },
      async restore(chunk) { total = chunk.total; },
      get total() { return total; },
    };
  };
  const p = createFilePersistence({ dir, stateMachine: counter });
  const a = promised(p);
  assert.equal(await a.applyCommand('n1', 1, { add: 2 }), 2);
  assert.equal(await a.applyCommand('n1', 2, { add: 3 }), 5);
  await a.applyCommand('n1', 2, { add: 3 });
  assert.equal(p.stateMachine('n1').total, 5);
  assert.equal(p.stateMachine('n2').total, 0);
  const chunks = await readAll(p.createReadStream('n1'));
  assert.deepEqual(chunks, [{ total: 5 }]);
  await p.close();
  const q = createFilePersistence({ dir, stateMachine: counter });
  assert.equal(await promised(q).lastAppliedCommitIndex('n1'), 2);
  assert.equal(q.stateMachine('n1').total, 5);
  await q.close();

  const single = createFilePersistence({ dir: tmpDir(), stateMachine: createKvStateMachine() });
  await promised(single).applyCommand('only', 1, { op: 'put', key: 'a', value: 1 });
  await assert.rejects(promised(single).applyCommand('second', 1, {}), { code: 'EPLUGIN' });
  await single.close();
  assert.throws(() => createFilePersistence({}), TypeError);
  assert.throws(() => createFilePersistence({ dir, stateMachine: 5 }), TypeError);
});

test('node ids become distinct, safe folder names', () => {
  const ids = ['tcp://127.0.0.1:9001', '..', '.', '/etc/passwd', 'a/b', 'a%2Fb', 'ünï', 'x'.repeat(400), 'x'.repeat(401), 'A', 'a'];
  const names = ids.map(createFilePersistence.safeName);
  assert.equal(new Set(names).size, ids.length);
  for (const name of names) {
    assert.match(name, /^[A-Za-z0-9_%~-]+$/);
    assert.ok(name.length <= 120);
  }
});

test('a failing apply is passed on, is not recorded, and later commands in its batch are refused', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({
    dir,
    stateMachine: () => {
      const kv = createKvStateMachine();
      const apply = kv.apply.bind(kv);
      kv.apply = (cmd, index) => {
        if (cmd && cmd.op === 'boom') {
          kv.reset(); // a half-done mutation before throwing: memory must be reloaded from disk
          throw Object.assign(new Error('boom'), { code: 'EBOOM' });
        }
        return apply(cmd, index);
      };
      return kv;
    },
  });
  const a = promised(p);
  await a.applyCommand(ID, 1, { op: 'put', key: 'a', value: 1 });
  const outcomes = await Promise.allSettled([
    a.applyCommand(ID, 2, { op: 'put', key: 'b', value: 2 }),
    a.applyCommand(ID, 3, { op: 'boom' }),
    a.applyCommand(ID, 4, { op: 'put', key: 'c', value: 3 }),
  ]);
  assert.equal(outcomes[0].status, 'fulfilled');
  assert.equal(outcomes[1].reason.code, 'EBOOM');
  assert.equal(outcomes[2].reason.code, 'EAPPLY');
  assert.equal(await a.lastAppliedCommitIndex(ID), 2);
  assert.deepEqual(p.stateMachine(ID).toObject(), { a: 1, b: 2 });
  await a.applyCommand(ID, 3, { op: 'put', key: 'c', value: 3 });
  assert.equal(await a.lastAppliedCommitIndex(ID), 3);
  await p.close();
});

test('a read stream is a consistent cut while applies go on', async () => {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const a = promised(p);
  for (let i = 1; i <= 1000; i++) await a.applyCommand(ID, i, { op: 'put', key: `k${i % 300}`, value: i });
  const atCut = p.stateMachine(ID).toObject();
  const rs = p.createReadStream(ID);
  const later = [];
  for (let i = 1001; i <= 2000; i++) later.push(a.applyCommand(ID, i, { op: i % 2 ? 'del' : 'put', key: `k${i % 300}`, value: -i }));
  const chunks = await readAll(rs);
  await Promise.all(later);
  assert.equal(rs.lastIncludedIndex, 1000);
  const kv = createKvStateMachine();
  for (const c of chunks) kv.restore(c);
  assert.deepEqual(kv.toObject(), atCut);
  assert.notDeepEqual(p.stateMachine(ID).toObject(), atCut);
  await p.close();
});

// A folder whose node ID has applied `n` puts, all in its journal; and that journal's path.
async function journalOf(n) {
  const dir = tmpDir();
  const p = createFilePersistence({ dir });
  const a = promised(p);
  for (let i = 1; i <= n; i++) await a.applyCommand(ID, i, { op: 'put', key: `k${i}`, value: i });
  await p.close();
  const nd = nodeDir(dir, ID);
  return { dir, journal: path.join(nd, fs.readdirSync(nd).find((name) => name.startsWith('journal-'))) };
}

test('a flipped byte before the last record fails loading with ECORRUPT, file and offset; nothing is cut', async () => {
  const { dir, journal } = await journalOf(200);
  const before = fs.readFileSync(journal);
  const at = Math.floor(before.length / 2);
  const damaged = Buffer.from(before);
  damaged[at] ^= 0x40;
  fs.writeFileSync(journal, damaged);

  const q = createFilePersistence({ dir });
  const warnings = [];
  q.on('warning', (w) => warnings.push(w));
  await assert.rejects(promised(q).lastAppliedCommitIndex(ID), (err) => {
    assert.equal(err.code, 'ECORRUPT');
    assert.equal(err.file, journal);
    assert.ok(err.offset <= at && err.offset > at - 100, `offset ${err.offset} is the damaged record's (byte ${at})`);
    assert.ok(err.message.includes(journal) && err.message.includes(String(err.offset)), err.message);
    return true;
  });
  // Again: still refused, and the file is exactly as it was.
  await assert.rejects(promised(q).lastAppliedCommitIndex(ID), { code: 'ECORRUPT' });
  await q.close();
  assert.ok(fs.readFileSync(journal).equals(damaged), 'the journal was left untouched');
  assert.deepEqual(warnings, []);

  // Repaired (the byte put back), every acknowledged key is there.
  fs.writeFileSync(journal, before);
  const r = createFilePersistence({ dir });
  assert.equal(await promised(r).lastAppliedCommitIndex(ID), 200);
  assert.equal(r.stateMachine(ID).size, 200);
  await r.close();
});

test('only a torn last record is cut, with an ETORN warning', async () => {
  const { dir, journal } = await journalOf(20);
  const good = fs.statSync(journal).size;
  // The last record with a damaged checksum, then the start of another: a crash mid-append.
  const whole = fs.readFileSync(journal);
  const tail = Buffer.from(whole.subarray(whole.length - 20));
  fs.appendFileSync(journal, Buffer.concat([Buffer.from([0, 0, 0, 12, 1, 2, 3, 4]), Buffer.alloc(12, 9), tail.subarray(0, 7)]));

  const q = createFilePersistence({ dir });
  const warnings = [];
  q.on('warning', (w) => warnings.push(w));
  assert.equal(await promised(q).lastAppliedCommitIndex(ID), 20);
  assert.equal(warnings.length, 1);
  assert.equal(warnings[0].code, 'ETORN');
  assert.equal(warnings[0].offset, good);
  assert.equal(fs.statSync(journal).size, good, 'cut back to the last whole record');
  await q.close();
});

test('files are created 0600 and folders 0700', { skip: process.platform === 'win32' }, async () => {
  const dir = path.join(tmpDir(), 'fresh', 'data');
  const p = createFilePersistence({ dir });
  const a = promised(p);
  await a.saveMeta(ID, sampleState(1));
  await a.applyCommand(ID, 1, { op: 'put', key: 'k', value: 1 });
  await p.close();
  // Compaction writes a checkpoint too.
  const q = createFilePersistence({ dir, compactBytes: 1 });
  await promised(q).applyCommand(ID, 2, { op: 'put', key: 'k2', value: 2 });
  await promised(q).lastAppliedCommitIndex(ID);
  await q.close();
  const nd = nodeDir(dir, ID);
  for (const d of [dir, nd]) assert.equal(fs.statSync(d).mode & 0o777, 0o700, d);
  const names = fs.readdirSync(nd);
  assert.ok(names.includes('meta.json') && names.includes('checkpoint') && names.some((n) => n.startsWith('journal-')), names.join());
  for (const name of names) assert.equal(fs.statSync(path.join(nd, name)).mode & 0o777, 0o600, name);
});
