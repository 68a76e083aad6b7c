'use strict';

// The in-memory plugins (lib/memory.js): the transport delivers JSON-cloned requests and
// replies asynchronously and obeys partitions, drops and injected faults; the persistence follows
// the plugin contract (idempotent applyCommand, streams over applied commands). And they drive
// the original skiff-algorithm 0.8.2 too, so they implement the same plugin contract.

const test = require('node:test');
const assert = require('node:assert/strict');
const { MemoryNetwork: Hub, MemoryPersistence: Persistence } = require('../lib/memory');

function listen(hub, id, handler) {
  const incoming = [];
  const server = hub.listen(id, {}, (peerId, peerMeta, conn) => {
    incoming.push({ peerId, peerMeta, conn });
    conn.receive((type, args, reply) => handler(type, args, reply, peerId));
  });
  return { server, incoming };
}

function send(conn, type, args) {
  return new Promise((resolve) => conn.send(type, args, (err, result) => resolve({ err, result })));
}

// A request reaches the remote's receive handler as a copy, asynchronously, and so does the reply.
test('hub delivers cloned requests and replies asynchronously', async () => {
  const hub = new Hub();
  const seen = [];
  const b = listen(hub, 'b', (type, args, reply) => {
    seen.push({ type, args });
    args.mutated = true;
    reply(null, { ok: true, echo: args.n });
  });
  const conn = hub.connect('a', { meta: 'a' }, 'b', { meta: 'b' });
  const args = { n: 1, nested: { x: [1] } };
  let sync = true;
  const p = send(conn, 'Ping', args);
  sync = false;
  const { err, result } = await p;
  assert.equal(sync, false);
  assert.equal(err, null);
  assert.deepEqual(result, { ok: true, echo: 1 });
  assert.equal(args.mutated, undefined, 'sender args not shared');
  assert.deepEqual(seen, [{ type: 'Ping', args: { n: 1, nested: { x: [1] }, mutated: true } }]);
  assert.equal(b.incoming.length, 1);
  assert.equal(b.incoming[0].peerId, 'a');
  assert.deepEqual(b.incoming[0].peerMeta, { meta: 'a' });
});

// Sending to a node that does not listen fails; partitions and isolation fail or drop; heal.
test('hub faults: refused, partition, isolate, heal, drop', async () => {
  const hub = new Hub();
  const conn = hub.connect('a', {}, 'b', {});
  assert.equal((await send(conn, 'X', {})).err.code, 'ECONNREFUSED');
  listen(hub, 'b', (type, args, reply) => reply(null, 'pong'));
  assert.equal((await send(conn, 'X', {})).result, 'pong', 'works once b listens');

  hub.partition('a', 'b');
  assert.equal((await send(conn, 'X', {})).err.code, 'EHOSTUNREACH');
  hub.heal();
  assert.equal((await send(conn, 'X', {})).result, 'pong');
  hub.isolate('b');
  assert.equal((await send(conn, 'X', {})).err.code, 'EHOSTUNREACH');
  hub.heal('b');
  assert.equal((await send(conn, 'X', {})).result, 'pong');

  hub.partitionMode = 'drop';
  hub.partition(['a'], ['b', 'c']);
  let answered = false;
  conn.send('X', {}, () => { answered = true; });
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(answered, false, 'dropped: never called back');
  hub.heal();

  hub.dropRate = 1;
  answered = false;
  conn.send('X', {}, () => { answered = true; });
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(answered, false);
  assert.ok(hub.stats.dropped >= 1);
});

// A restarted remote (new listener) gets a fresh incoming connection on the next send; closing a
// connection closes both ends and later sends fail.
test('hub reconnects to a restarted listener, close closes both ends', async () => {
  const hub = new Hub();
  const first = listen(hub, 'b', (type, args, reply) => reply(null, 'v1'));
  const conn = hub.connect('a', {}, 'b', {});
  assert.equal((await send(conn, 'X', {})).result, 'v1');
  await new Promise((resolve) => first.server.close(resolve));
  assert.equal((await send(conn, 'X', {})).err.code, 'ECONNREFUSED');
  const second = listen(hub, 'b', (type, args, reply) => reply(null, 'v2'));
  assert.equal((await send(conn, 'X', {})).result, 'v2');
  assert.equal(second.incoming.length, 1);

  const closes = [];
  conn.on('close', () => closes.push('a'));
  second.incoming[0].conn.on('close', () => closes.push('b'));
  await new Promise((resolve) => conn.close(resolve));
  assert.deepEqual(closes.sort(), ['a', 'b']);
  assert.equal((await send(conn, 'X', {})).err.code, 'ECONNRESET');
});

// Injected transport faults.
test('hub injected faults', async () => {
  const hub = new Hub();
  listen(hub, 'b', (type, args, reply) => reply(null, 'ok'));
  hub.fail('a', 'connect', 'throw', 1);
  assert.throws(() => hub.connect('a', {}, 'b', {}), { code: 'EINJECTED' });
  const conn = hub.connect('a', {}, 'b', {});
  hub.fail('a', 'send', 'throw', 1);
  assert.throws(() => conn.send('X', {}, () => {}), { code: 'EINJECTED' });
  hub.fail('a', 'send', 'error', 1);
  assert.equal((await send(conn, 'X', {})).err.code, 'EINJECTED');
  assert.equal((await send(conn, 'X', {})).result, 'ok', 'recovers');
});

// Persistence: meta round-trips as a copy, applyCommand is idempotent per index, streams.
test('persistence contract', async () => {
  const p = new Persistence();
  const call = (method, ...args) => new Promise((resolve, reject) =>
    p[method](...args, (err, value) => (err ? reject(err) : resolve(value))));
  assert.equal(await call('loadMeta', 'n'), null);
  assert.equal(await call('lastAppliedCommitIndex', 'n'), 0);
  const state = { currentTerm: 2, votedFor: 'x', log: { meta: {}, entries: [] }, peers: [] };
  await call('saveMeta', 'n', state);
  state.currentTerm = 99;
  const loaded = await call('loadMeta', 'n');
  assert.equal(loaded.currentTerm, 2, 'saved a copy');
  loaded.currentTerm = 50;
  assert.equal((await call('loadMeta', 'n')).currentTerm, 2, 'loads a copy');

  await call('applyCommand', 'n', 1, 'a');
  await call('applyCommand', 'n', 2, { b: 1 });
  await call('applyCommand', 'n', 2, 'again'); // already applied: no-op
  await call('saveCommitIndex', 'n', 3);
  await call('applyCommand', 'n', 3, 'skip'); // index 3 recorded by saveCommitIndex
  await call('applyCommand', 'n', 4, 'd');
  assert.deepEqual(p.commands('n'), ['a', { b: 1 }, 'd']);
  assert.deepEqual(p.indexes('n'), [1, 2, 4]);
  assert.equal(await call('lastAppliedCommitIndex', 'n'), 4);
  assert.equal(p.stats.reapplied, 2);

  const chunks = [];
  for await (const chunk of p.createReadStream('n')) chunks.push(chunk);
  assert.deepEqual(chunks, [{ index: 1, command: 'a' }, { index: 2, command: { b: 1 } }, { index: 4, command: 'd' }]);

  await call('removeAllState', 'm');
  const ws = p.createWriteStream('m');
  await new Promise((resolve, reject) => {
    ws.on('finish', resolve);
    ws.on('error', reject);
    for (const c of chunks) ws.write(c);
    ws.end();
  });
  await call('saveCommitIndex', 'm', 4);
  assert.deepEqual(p.commands('m'), ['a', { b: 1 }, 'd']);
  assert.equal(await call('lastAppliedCommitIndex', 'm'), 4);
});

// Injected persistence faults behave as documented.
test('persistence injected faults', async () => {
  const p = new Persistence();
  p.fail('saveMeta', 'throw', 1);
  assert.throws(() => p.saveMeta('n', {}, () => {}), { code: 'EINJECTED' });
  p.fail('saveMeta', 'error', 1, 'other'); // only for node "other"
  await new Promise((resolve) => p.saveMeta('n', {}, (err) => { assert.equal(err, null); resolve(); }));
  await new Promise((resolve) => p.saveMeta('other', {}, (err) => { assert.equal(err.code, 'EINJECTED'); resolve(); }));
  p.fail('applyCommand', 'twice', 1);
  let calls = 0;
  p.applyCommand('n', 1, 'x', () => { calls += 1; });
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(calls, 2);
  assert.deepEqual(p.commands('n'), ['x']);
  p.fail('loadMeta', 'value', 1);
  await new Promise((resolve) => p.loadMeta('n', (err) => { assert.equal(typeof err, 'string'); resolve(); }));
});

// The same plugins run the original skiff-algorithm 0.8.2: a leader is elected, two standby
// nodes join, and commands reach every node's state machine.
let Original = null;
try {
  Original = require('skiff-algorithm');
} catch (_) {
  Original = null;
}

test('the plugins drive skiff-algorithm 0.8.2', { skip: !Original && 'skiff-algorithm not installed' }, async (t) => {
  const hub = new Hub();
  const persistence = new Persistence();
  const nodes = [];
  const errors = [];
  const make = (id, standby) => {
    const node = Original({ id, transport: hub, persistence, standby, commandTimeout: 2000 });
    node.on('error', (e) => errors.push(e));
    node.listen(id);
    nodes.push(node);
    return node;
  };
  t.after(() => Promise.all(nodes.map((n) => new Promise((resolve) => n.stop(() => resolve())))));
  const leader = make('o1', false);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('original never elected a leader')), 5000);
    leader.once('leader', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  make('o2', true);
  make('o3', true);
  await new Promise((resolve, reject) => leader.join('o2', (err) => (err ? reject(err) : resolve())));
  await new Promise((resolve, reject) => leader.join('o3', (err) => (err ? reject(err) : resolve())));
  for (let i = 0; i < 5; i++) {
    await new Promise((resolve, reject) => leader.command({ i }, (err) => (err ? reject(err) : resolve())));
  }
  const deadline = Date.now() + 5000;
  while (!['o1', 'o2', 'o3'].every((id) => persistence.commands(id).length >= 5)) {
    if (Date.now() > deadline) {
      throw new Error(`not applied everywhere: ${['o1', 'o2', 'o3'].map((id) => persistence.commands(id).length)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  for (const id of ['o1', 'o2', 'o3']) {
    assert.deepEqual(persistence.commands(id), [0, 1, 2, 3, 4].map((i) => ({ i })), id);
  }
  assert.equal(leader.state.name, 'leader');
});

// The chaos harness replays a seed: the same seed and the same traffic give the same drops,
// duplicates and refusals, so the same messages arrive in the same order.
test('network: a seed replays the same losses, duplicates and order', async () => {
  const { prng } = require('./helpers/prng');
  async function run(seed) {
    const net = new Hub({ rand: prng(seed), partitionMode: 'drop', refuseRate: 0.5 });
    net.dropRate = 0.2;
    net.dupRate = 0.2;
    net.block('a', 'c'); // lost: each one refused (ECONNREFUSED) or never answered, by the draw
    const arrived = [];
    listen(net, 'b', (type, args, reply) => {
      arrived.push(args.i);
      reply(null, args.i);
    });
    const toB = net.connect('a', {}, 'b', {});
    const toC = net.connect('a', {}, 'c', {});
    const answers = [];
    for (let i = 0; i < 60; i++) {
      (i % 3 === 0 ? toC : toB).send('X', { i }, (err) => answers.push(`${i}:${err ? err.code : 'ok'}`));
    }
    await new Promise((resolve) => setTimeout(resolve, 150));
    net.shutdown();
    return { arrived, answers, stats: net.stats };
  }
  const one = await run(42);
  const two = await run(42);
  assert.ok(one.arrived.length > 10 && one.stats.dropped > 0 && one.stats.duplicated > 0, JSON.stringify(one.stats));
  assert.deepEqual(two.stats, one.stats);
  assert.deepEqual(two.arrived, one.arrived);
  assert.deepEqual(two.answers, one.answers);
  const other = await run(43);
  assert.notDeepEqual(other.arrived, one.arrived, 'another seed, another run');
});

// plugin(id) instances: calls complete in order after the disk's latency; a crash loses what was
// not acknowledged and the dead instance never calls back; the next instance sees what was.
test('persistence instances: ordered disk, crash loses the unacknowledged', async () => {
  const p = new Persistence();
  p.setDisk('n1', [5, 5]);
  const first = p.plugin('n1');
  const done = [];
  await new Promise((resolve) => first.saveMeta('n1', { currentTerm: 1 }, () => resolve()));
  first.applyCommand('n1', 1, 'a', () => done.push('apply 1'));
  first.saveMeta('n1', { currentTerm: 2 }, () => done.push('save 2'));
  p.crash('n1');
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.deepEqual(done, [], 'a crashed instance never calls back');
  assert.equal(p.stats.lost, 2);
  const second = p.plugin('n1');
  first.saveMeta('n1', { currentTerm: 9 }, () => done.push('zombie'));
  const meta = await new Promise((resolve) => second.loadMeta('n1', (err, m) => resolve(m)));
  assert.deepEqual(meta, { currentTerm: 1 }, 'only the acknowledged save survived');
  second.applyCommand('n1', 1, 'a', () => done.push('apply 1'));
  second.saveMeta('n1', { currentTerm: 2 }, () => done.push('save 2'));
  await new Promise((resolve) => second.lastAppliedCommitIndex('n1', () => resolve()));
  assert.deepEqual(done, ['apply 1', 'save 2'], 'in the order made');
  assert.equal(p.appliedIndex('n1'), 1);
  p.shutdown();
});

// The incremental extension, with `incremental: true` only: saveLog's log semantics (loadMeta
// rebuilds the whole state, a saveMeta state extends), applyCommands' batches.
test('persistence: saveLog and applyCommands with incremental: true', async () => {
  const { promisify } = require('node:util');
  assert.equal(typeof new Persistence().saveLog, 'undefined', 'not without the option');
  assert.equal(typeof new Persistence().applyCommands, 'undefined');
  const p = new Persistence({ incremental: true });
  const saveLog = promisify(p.saveLog);
  const saveMeta = promisify(p.saveMeta);
  const loadMeta = promisify(p.loadMeta);
  const applyCommands = promisify(p.applyCommands);
  const e = (index, term = 1) => ({ term, index, command: `c${index}`, uuid: `u${index}` });
  const meta = (li) => ({ lastIncludedIndex: li, lastIncludedTerm: li ? 1 : 0 });
  const hard = { currentTerm: 2, votedFor: 'b', peers: [{ id: 'b', metadata: {} }] };
  await saveMeta('a', Object.assign({}, hard, { log: { meta: meta(0), entries: [e(1), e(2), e(3)] } }));
  const entries = [e(3, 2), e(4, 2)];
  const saving = saveLog('a', Object.assign({ meta: meta(0), truncateFrom: 3, entries }, hard));
  entries.push(e(5)); // what is saved is the delta as it was when the call was made
  await saving;
  assert.deepEqual(await loadMeta('a'), Object.assign({}, hard, { log: { meta: meta(0), entries: [e(1), e(2), e(3, 2), e(4, 2)] } }));
  await saveLog('a', Object.assign({ meta: meta(2), truncateFrom: 5, entries: [e(5, 2)] }, hard));
  assert.deepEqual((await loadMeta('a')).log, { meta: meta(2), entries: [e(3, 2), e(4, 2), e(5, 2)] });
  await saveLog('a', Object.assign({ meta: meta(2), truncateFrom: 4, entries: [] }, hard, { currentTerm: 3 }));
  const back = await loadMeta('a');
  assert.equal(back.currentTerm, 3);
  assert.deepEqual(back.log.entries, [e(3, 2)]);
  await assert.rejects(saveLog('a', { truncateFrom: 'x', entries: [] }), { code: 'EBADARGS' });

  const results = await applyCommands('a', [{ index: 1, command: 'x' }, { index: 2, command: 'y' }]);
  assert.deepEqual(results, [undefined, undefined]);
  await applyCommands('a', [{ index: 2, command: 'y' }, { index: 3, command: 'z' }]);
  assert.deepEqual(p.commands('a'), ['x', 'y', 'z']);
  assert.equal(p.stats.reapplied, 1);
  assert.equal(p.appliedIndex('a'), 3);
});

// applyCommands whose state machine throws partway through a batch: the commands before it took
// effect (with their index), and the callback carries their results with the error.
test('persistence: applyCommands failing partway calls back with the results of the prefix', async () => {
  const machine = {
    create: () => ({ index: 0, seen: [] }),
    apply(sm, command) {
      if (command === 'bad') throw Object.assign(new Error('bad command'), { code: 'EBADCMD' });
      sm.seen.push(command);
    },
    records: (sm) => sm.seen,
    restore(sm, record) { sm.seen.push(record); },
  };
  const p = new Persistence({ incremental: true, stateMachine: machine });
  const answer = await new Promise((resolve) => {
    p.applyCommands('a', [{ index: 1, command: 'x' }, { index: 2, command: 'y' }, { index: 3, command: 'bad' }],
      (err, results) => resolve({ err, results }));
  });
  assert.equal(answer.err.code, 'EBADCMD');
  assert.deepEqual(answer.results, [undefined, undefined], 'one result for each command that took effect');
  assert.equal(p.appliedIndex('a'), 2);
});
