'use strict';

// The JS wrapper (lib/node.js) against a stand-in engine, so these run without the native
// binding: how each PROTOCOL.md operation drives the plugins, and that plugins which throw, call
// back twice or return what JSON cannot carry end as coded results instead of crashes.

const test = require('node:test');
const assert = require('node:assert/strict');
const { EventEmitter } = require('events');
const { createNodeClass } = require('../lib/node');

// ---- a stand-in for the native RaftNode that records every call

class FakeNative {
  constructor(configJson, dispatch) {
    this.config = JSON.parse(configJson);
    this.dispatch = dispatch;
    this.calls = [];
    this.hints = [];
    this.listened = null;
    this.status = { term: 0, leader: null, state: 'idle', peers: {} };
    FakeNative.last = this;
  }

  record(name, ...args) {
    this.calls.push([name, ...args]);
  }

  callsOf(name) {
    return this.calls.filter((c) => c[0] === name).map((c) => c.slice(1));
  }

  start() { this.record('start'); }
  // The wrapper passes how far its state machine got as a trailing hint (`applied`): kept apart
  // so that the recorded calls read as the protocol's arguments.
  hint(a, n) {
    this.hints.push(a[n]);
    return a.slice(0, n);
  }

  propose(...a) { this.record('propose', ...this.hint(a, 4)); }
  join(...a) { this.record('join', ...a); }
  leave(...a) { this.record('leave', ...a); }
  complete(...a) { this.record('complete', ...this.hint(a, 3)); }
  progress(...a) { this.record('progress', ...this.hint(a, 2)); }
  receive(...a) { this.record('receive', ...this.hint(a, 3)); }
  setListened(names) {
    this.listened = names.slice();
    this.record('setListened', names.slice());
  }
  stop(...a) { this.record('stop', ...a); }
  term() { return this.status.term; }
  leader() { return this.status.leader; }
  stateName() { return this.status.state; }
  peerMeta(id) {
    return id in this.status.peers ? JSON.stringify(this.status.peers[id]) : null;
  }

  // engine → JS
  send(...ops) {
    this.dispatch(JSON.stringify(ops));
  }
}

const Node = createNodeClass(() => FakeNative);

function tick() {
  return new Promise((resolve) => setImmediate(resolve));
}

async function until(fn, what, timeout = 2000) {
  const deadline = Date.now() + timeout;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick();
  }
}

// A persistence whose behaviour each test sets per method.
function persistence(overrides = {}) {
  const p = {
    loadMeta: (id, cb) => setImmediate(cb, null, null),
    saveMeta: (id, state, cb) => setImmediate(cb, null),
    applyCommand: (id, index, command, cb) => setImmediate(cb, null),
    lastAppliedCommitIndex: (id, cb) => setImmediate(cb, null, 0),
    saveCommitIndex: (id, index, cb) => setImmediate(cb, null),
    createReadStream: () => null,
    createWriteStream: () => null,
    removeAllState: (id, cb) => setImmediate(cb, null),
  };
  return Object.assign(p, overrides);
}

function fakeConnection() {
  const c = new EventEmitter();
  c.sent = [];
  c.closed = false;
  c.send = (type, args, cb) => c.sent.push({ type, args, cb });
  c.receive = (fn) => { c.handler = fn; };
  c.close = (cb) => {
    c.closed = true;
    if (cb) setImmediate(cb);
  };
  return c;
}

function transport() {
  const t = {
    listens: [],
    connects: [],
    connections: [],
    server: { closed: false, close(cb) { this.closed = true; if (cb) setImmediate(cb); } },
    listen(id, options, onConnection, cb) {
      t.listens.push({ id, options, onConnection, cb });
      return t.server;
    },
    connect(localId, localMeta, peerId, peerMeta) {
      t.connects.push({ localId, localMeta, peerId, peerMeta });
      if (t.connectThrows) {
        t.connectThrows -= 1;
        throw new Error('connect exploded');
      }
      const c = fakeConnection();
      t.connections.push(c);
      return c;
    },
  };
  return t;
}

function make(t, opts = {}) {
  const tr = opts.transport || transport();
  const node = Node(Object.assign({ id: 'me', transport: tr, persistence: persistence() }, opts));
  const native = FakeNative.last;
  t.after(async () => {
    if (node.state.name !== 'stopped') {
      const p = node.stop();
      const req = native.callsOf('stop').at(-1)[0];
      native.send({ op: 'done', req, error: null }, { op: 'stopped' });
      await p;
    }
  });
  return { node, native, transport: tr };
}

function completes(native, io) {
  return native.callsOf('complete').filter((c) => c[0] === io);
}

// ---- construction

// The engine gets the validated config, every event is listened until the first tick, and
// start() is called from the constructor.
test('construction hands the config to the engine and starts it', async (t) => {
  const { native } = make(t, { id: 'n1', metadata: { a: 1 }, cluster: 'cl' });
  assert.equal(native.config.id, 'n1');
  assert.equal(native.config.clusterId, 'cl');
  assert.deepEqual(native.config.metadata, { a: 1 });
  assert.equal(native.config.heartbeatInterval, 50);
  // loading starts on the next tick, once listeners attached right after construction are known
  assert.equal(native.callsOf('start').length, 0);
  assert.ok(native.listened.includes('leader'), 'all events listened before the first tick');
  await tick();
  assert.equal(native.callsOf('start').length, 1);
  assert.deepEqual(native.listened, ['error', 'state', 'warning']);
});

// setListened follows the listeners the user adds and removes (once-listeners included).
test('setListened tracks listeners', async (t) => {
  const { node, native } = make(t);
  await tick();
  const fn = () => {};
  node.on('applied log', fn);
  node.once('leader', () => {});
  await tick();
  assert.deepEqual(native.listened, ['applied log', 'error', 'leader', 'state', 'warning']);
  node.removeListener('applied log', fn);
  await tick();
  assert.deepEqual(native.listened, ['error', 'leader', 'state', 'warning']);
  native.send({ op: 'event', name: 'leader', args: [{ $node: true }] });
  await tick();
  assert.deepEqual(native.listened, ['error', 'state', 'warning'], 'fired once-listener removed');
});

// ---- persistence ops

// loadMeta / lastApplied results travel as JSON text; undefined becomes null.
test('loadMeta and lastApplied complete with JSON text', async (t) => {
  const state = { currentTerm: 3, votedFor: null, log: { meta: {}, entries: [] }, peers: [] };
  const { native } = make(t, {
    persistence: persistence({
      loadMeta: (id, cb) => setImmediate(cb, null, state),
      lastAppliedCommitIndex: (id, cb) => setImmediate(cb),
    }),
  });
  native.send({ op: 'loadMeta', io: 1 }, { op: 'lastApplied', io: 2 });
  await until(() => native.callsOf('complete').length === 2, 'two completes');
  assert.deepEqual(completes(native, 1), [[1, null, JSON.stringify(state)]]);
  assert.deepEqual(completes(native, 2), [[2, null, 'null']]);
});

// A plugin that throws synchronously completes its IO with the error instead of crashing.
test('a throwing plugin completes the IO with its error', async (t) => {
  const { native } = make(t, {
    persistence: persistence({
      saveMeta: () => {
        const e = new Error('disk on fire');
        e.code = 'EDISK';
        throw e;
      },
    }),
  });
  native.send({ op: 'saveMeta', io: 7, state: { currentTerm: 1 } });
  assert.deepEqual(completes(native, 7), [[7, { message: 'disk on fire', code: 'EDISK' }, null]]);
});

// A second callback is ignored (one complete) and reported as a warning.
test('a plugin calling back twice completes once and warns', async (t) => {
  const { node, native } = make(t, {
    persistence: persistence({
      saveMeta: (id, state, cb) => setImmediate(() => { cb(null); cb(new Error('late')); }),
    }),
  });
  const warnings = [];
  node.on('warning', (w) => warnings.push(w));
  native.send({ op: 'saveMeta', io: 3, state: {} });
  await until(() => warnings.length === 1, 'a warning');
  assert.deepEqual(completes(native, 3), [[3, null, null]]);
  assert.equal(warnings[0].code, 'EPLUGINCALLBACK');
  assert.match(warnings[0].message, /saveMeta called back more than once/);
});

// Non-Error error values are converted; results JSON cannot carry give EBADRESULT.
test('odd errors and unserialisable results', async (t) => {
  const cyclic = {};
  cyclic.self = cyclic;
  const { native } = make(t, {
    persistence: persistence({
      loadMeta: (id, cb) => setImmediate(cb, null, cyclic),
      lastAppliedCommitIndex: (id, cb) => setImmediate(cb, 'just a string'),
      saveCommitIndex: (id, index, cb) => setImmediate(cb, { message: 'obj err', code: 42 }),
    }),
  });
  native.send({ op: 'loadMeta', io: 1 }, { op: 'lastApplied', io: 2 },
    { op: 'apply', io: 3, entries: [{ index: 5 }] });
  await until(() => native.callsOf('complete').length === 3, 'three completes');
  const [c1] = completes(native, 1);
  assert.equal(c1[1].code, 'EBADRESULT');
  assert.equal(c1[2], null);
  assert.deepEqual(completes(native, 2), [[2, { message: 'just a string' }, null]]);
  assert.deepEqual(completes(native, 3), [[3, { message: 'obj err', code: '42' }, 'null']]);
});

// `apply` runs its entries in order, one at a time: commands (Buffers revived) go to
// applyCommand, the others to saveCommitIndex; `applied log` per entry; completes with the last
// index.
test('apply chains applyCommand and saveCommitIndex in order', async (t) => {
  const seen = [];
  let inFlight = 0;
  const { node, native } = make(t, {
    persistence: persistence({
      applyCommand: (id, index, command, cb) => {
        assert.equal(inFlight++, 0, 'one at a time');
        seen.push(['apply', index, command]);
        setImmediate(() => { inFlight--; cb(null); });
      },
      saveCommitIndex: (id, index, cb) => {
        assert.equal(inFlight++, 0, 'one at a time');
        seen.push(['save', index]);
        setImmediate(() => { inFlight--; cb(null); });
      },
    }),
  });
  const appliedLog = [];
  node.on('applied log', (i) => appliedLog.push(i));
  native.send({
    op: 'apply',
    io: 9,
    entries: [
      { index: 1, command: 'a' },
      { index: 2 },
      { index: 3, command: { b: { type: 'Buffer', data: [104, 105] } } },
      { index: 4, command: null },
    ],
  });
  await until(() => completes(native, 9).length === 1, 'apply complete');
  assert.deepEqual(completes(native, 9), [[9, null, '4']]);
  // the engine also hears how far the state machine got, with that same call
  assert.equal(native.hints[native.hints.length - 1], 4);
  assert.deepEqual(seen.map((s) => s.slice(0, 2)), [['apply', 1], ['save', 2], ['apply', 3], ['apply', 4]]);
  assert.equal(seen[0][2], 'a');
  assert.ok(Buffer.isBuffer(seen[2][2].b));
  assert.equal(seen[2][2].b.toString(), 'hi');
  assert.equal(seen[3][2], null);
  assert.deepEqual(appliedLog, [1, 2, 3, 4]);
});

// A failure at item k completes with the error and the index of item k-1, and stops the chain;
// synchronous callbacks do not grow the stack.
test('apply stops at the first failure', async (t) => {
  const applied = [];
  const { native } = make(t, {
    persistence: persistence({
      applyCommand: (id, index, command, cb) => {
        if (index === 5003) return cb(new Error('full'));
        applied.push(index);
        return cb(null); // synchronous on purpose
      },
    }),
  });
  const entries = [];
  for (let i = 1; i <= 5005; i++) entries.push({ index: i, command: i });
  native.send({ op: 'apply', io: 4, entries });
  assert.equal(applied.length, 5002);
  const [c] = completes(native, 4);
  assert.equal(c[1].message, 'full');
  assert.equal(c[2], '5002');

  native.send({ op: 'apply', io: 5, entries: [{ index: 1, command: 1 }] });
  assert.deepEqual(completes(native, 5), [[5, null, '1']]);
});

// A newer apply op supersedes an older chain still running.
// A retried apply chain starts only once the call it replaces has called back, and the old
// chain stops there.
test('a newer apply supersedes an older chain', async (t) => {
  const calls = [];
  const pending = [];
  const { native } = make(t, {
    persistence: persistence({
      applyCommand: (id, index, command, cb) => {
        calls.push(index);
        pending.push(cb);
      },
    }),
  });
  native.send({ op: 'apply', io: 1, entries: [{ index: 1, command: 'x' }, { index: 2, command: 'y' }] });
  native.send({ op: 'apply', io: 2, entries: [{ index: 1, command: 'x' }, { index: 2, command: 'y' }] });
  // the retry waits behind the call it replaces: plugin calls never overlap
  assert.deepEqual(calls, [1]);
  pending.shift()(null); // old chain: must not go on; the new one starts
  assert.deepEqual(calls, [1, 1]);
  pending.shift()(null); // new chain goes on to index 2
  assert.deepEqual(calls, [1, 1, 2]);
  pending.shift()(null);
  assert.deepEqual(completes(native, 1), []);
  assert.deepEqual(completes(native, 2), [[2, null, '2']]);
});

// Unknown ops with an io are completed with EUNKNOWNOP so the engine does not wait. Ops come
// only as `{op: name, ...}` (serde's `tag = "op"`): any other shape is reported, not guessed at.
test('unknown operations', async (t) => {
  const { node, native } = make(t);
  const warnings = [];
  node.on('warning', (w) => warnings.push([w.code, w.message]));
  native.send({ op: 'fancyNewThing', io: 77 });
  assert.equal(completes(native, 77)[0][1].code, 'EUNKNOWNOP');
  native.send({ saveMeta: { io: 78, state: {} } }, 'stopped', { op: 'saveCommitIndex', io: 79, index: 3 });
  await tick();
  assert.deepEqual(completes(native, 78), []);
  assert.equal(completes(native, 79)[0][1].code, 'EUNKNOWNOP', 'saveCommitIndex is not an op');
  assert.deepEqual(warnings.map((w) => w[0]), ['EUNKNOWNOP', 'EUNKNOWNOP', 'EUNKNOWNOP', 'EUNKNOWNOP']);
  assert.equal(node.state.name === 'stopped', false, 'a bare string is not the stopped op');
});

// ---- events

// `event` ops: {$node:true} becomes the node, error args become Errors, state is tracked.
test('event ops are emitted with the node and Errors', async (t) => {
  const { node, native } = make(t);
  const got = [];
  node.on('state', (name, n) => got.push(['state', name, n === node, node.state.name]));
  node.on('joined', (peer) => got.push(['joined', peer]));
  node.on('warning', (w) => got.push(['warning', w instanceof Error, w.message, w.code]));
  native.send(
    { op: 'event', name: 'state', args: ['candidate', { $node: true }] },
    { op: 'event', name: 'joined', args: [{ id: 'p', metadata: { z: 1 } }] },
    { op: 'event', name: 'warning', args: [{ message: 'meh', code: 'EMEH' }] });
  assert.deepEqual(got, [
    ['state', 'candidate', true, 'candidate'],
    ['joined', { id: 'p', metadata: { z: 1 } }],
    ['warning', true, 'meh', 'EMEH'],
  ]);
  assert.equal(node.state.name, 'candidate');
});

// `error` with no listener never throws: it becomes a warning, else a process warning.
test('unlistened errors do not crash', async (t) => {
  const { node, native } = make(t);
  const warnings = [];
  node.on('warning', (w) => warnings.push(w));
  native.send({ op: 'event', name: 'error', args: [{ message: 'bad', code: 'EBAD', leader: 'x' }] });
  assert.equal(warnings.length, 1);
  assert.ok(warnings[0] instanceof Error);
  assert.equal(warnings[0].code, 'EBAD');
  assert.equal(warnings[0].leader, 'x');
  node.removeAllListeners('warning');

  const processWarnings = [];
  const onProcessWarning = (w) => processWarnings.push(w);
  process.on('warning', onProcessWarning);
  t.after(() => process.removeListener('warning', onProcessWarning));
  native.send({ op: 'event', name: 'error', args: [{ message: 'worse', code: 'EWORSE' }] });
  await until(() => processWarnings.length === 1, 'process warning');
  assert.equal(processWarnings[0].code, 'EWORSE');

  const errors = [];
  node.on('error', (e) => errors.push(e));
  native.send({ op: 'event', name: 'error', args: [{ message: 'x', code: 'EX' }] });
  assert.equal(errors.length, 1);
});

// ---- client API

// Commands are validated and encoded before anything reaches the engine.
test('command encoding and options', async (t) => {
  const { node, native } = make(t, { commandTimeout: 1234 });
  for (const bad of [() => 1, NaN, Symbol('x'), 1n, { c: Infinity }, undefined, new Uint16Array(1)]) {
    await assert.rejects(node.command(bad), { code: 'EBADCOMMAND' });
  }
  const cyclic = {};
  cyclic.me = cyclic;
  await new Promise((resolve) => node.command(cyclic, (err) => {
    assert.equal(err.code, 'EBADCOMMAND');
    resolve();
  }));
  await assert.rejects(node.command('x', { timeout: -5 }), { code: 'EINVALIDOPTIONS' });
  await assert.rejects(node.command('x', { waitForNode: 5 }), { code: 'EINVALIDOPTIONS' });
  assert.deepEqual(native.callsOf('propose'), [], 'nothing proposed');

  const p1 = node.command({ buf: Buffer.from('ab') });
  const p2 = node.command('y', { timeout: 50, waitForNode: 'other' });
  const proposes = native.callsOf('propose');
  assert.equal(proposes.length, 2);
  assert.deepEqual(proposes[0].slice(1), ['{"buf":{"type":"Buffer","data":[97,98]}}', 1234, null]);
  assert.deepEqual(proposes[1].slice(1), ['"y"', 50, 'other']);
  native.send({ op: 'done', req: proposes[0][0], error: null },
    { op: 'done', req: proposes[1][0], error: { message: 'not the leader', code: 'ENOTLEADER', leader: 'L' } });
  assert.equal(await p1, undefined);
  await assert.rejects(p2, (err) => {
    assert.ok(err instanceof Error);
    assert.equal(err.message, 'not the leader');
    assert.equal(err.code, 'ENOTLEADER');
    assert.equal(err.leader, 'L');
    return true;
  });
});

// join/leave: self-join refused at once, metadata carried as JSON, callback or Promise.
test('join and leave', async (t) => {
  const { node, native } = make(t);
  await assert.rejects(node.join('me'), (err) => err.message === 'can\'t join self' && err.code === 'EJOINSELF');
  await assert.rejects(node.join(''), { code: 'EINVALIDPEER' });
  const done = new Promise((resolve) => node.join('p1', { zone: 'b' }, resolve));
  const p2 = node.join('p2');
  const p3 = node.leave('p1');
  const joins = native.callsOf('join');
  assert.deepEqual(joins.map((j) => j.slice(1)), [['p1', '{"zone":"b"}'], ['p2', 'null']]);
  const leaves = native.callsOf('leave');
  assert.deepEqual(leaves.map((l) => l.slice(1)), [['p1']]);
  native.send({ op: 'done', req: joins[0][0], error: null }, { op: 'done', req: joins[1][0], error: null },
    { op: 'done', req: leaves[0][0], error: null });
  assert.equal(await done, null);
  await p2;
  await p3;
});

// stop: the engine is told, pending work fails, everything is released on `stopped`, and every
// method afterwards fails with ESTOPPED.
test('stop releases everything', async (t) => {
  const tr = transport();
  const { node, native } = make(t, { transport: tr });
  node.listen({ port: 1 });
  native.send({ op: 'connect', peer: 'p', metadata: {} });
  const conn = tr.connections[0];
  const incoming = fakeConnection();
  tr.listens[0].onConnection('q', {}, incoming);
  const pending = node.command('x');
  const stopped = node.stop();
  assert.equal(native.callsOf('stop').length, 1);
  await assert.rejects(node.command('late'), { code: 'ESTOPPED' });
  await assert.rejects(node.join('z'), { code: 'ESTOPPED' });
  native.send({ op: 'done', req: native.callsOf('stop')[0][0], error: null }, { op: 'stopped' });
  await stopped;
  await assert.rejects(pending, { code: 'ESTOPPED' });
  assert.equal(node.state.name, 'stopped');
  assert.ok(conn.closed, 'outgoing connection closed');
  assert.ok(incoming.closed, 'incoming connection closed');
  assert.ok(tr.server.closed, 'listener closed');
  await assert.rejects(node.command('later'), { code: 'ESTOPPED' });
  await assert.rejects(node.leave('z'), { code: 'ESTOPPED' });
  await node.stop(); // stopping again is fine
  await new Promise((resolve) => node.close(resolve));
});

// ---- transport

// listen() calls transport.listen(id, options, onConnection, cb); both onConnection forms work;
// requests go to the engine and replies come back; connection events are re-emitted.
test('incoming connections and requests', async (t) => {
  const tr = transport();
  const { node, native } = make(t, { transport: tr, id: 'me' });
  let listened = false;
  node.listen('addr', () => { listened = true; });
  assert.equal(tr.listens.length, 1);
  assert.equal(tr.listens[0].id, 'me');
  assert.equal(tr.listens[0].options, 'addr');
  tr.listens[0].cb(null);
  assert.ok(listened);

  const connected = [];
  node.on('connected', (peer) => connected.push(peer));
  node.on('disconnected', (peer) => connected.push(['disconnected', peer.id]));
  const warnings = [];
  node.on('warning', (w) => warnings.push(w));

  const c3 = fakeConnection();
  tr.listens[0].onConnection('peer3', { m: 3 }, c3); // (peerId, metadata, connection)
  const c2 = fakeConnection();
  tr.listens[0].onConnection('peer2', c2); // the README's (peerId, connection)
  assert.deepEqual(connected, [{ id: 'peer3', metadata: { m: 3 } }, { id: 'peer2', metadata: null }]);
  c3.emit('disconnected');
  assert.deepEqual(connected.at(-1), ['disconnected', 'peer3']);
  c3.emit('error', new Error('socket hang up')); // never unhandled
  assert.equal(warnings.length, 1);

  const replies = [];
  c3.handler('AppendEntries', { term: 1, entries: [] }, (err, res) => replies.push([err, res]));
  c2.handler('RequestVote', { term: 2 }, (err, res) => replies.push([err, res]));
  const receives = native.callsOf('receive');
  assert.equal(receives.length, 2);
  assert.deepEqual(receives[0].slice(1), ['AppendEntries', '{"term":1,"entries":[]}']);
  native.send({ op: 'reply', id: receives[0][0], error: null, result: { term: 1, success: true } },
    { op: 'reply', id: receives[1][0], error: { message: 'nope', code: 'ENOPE' }, result: null },
    { op: 'reply', id: receives[0][0], error: null, result: { again: true } });
  assert.equal(replies.length, 2);
  assert.deepEqual(replies[0], [null, { term: 1, success: true }]);
  assert.ok(replies[1][0] instanceof Error);
  assert.equal(replies[1][0].code, 'ENOPE');

  // arguments JSON cannot carry: answered with an error at once, and a warning
  const cyclic = {};
  cyclic.c = cyclic;
  let badReply;
  c3.handler('AppendEntries', cyclic, (err) => { badReply = err; });
  assert.equal(badReply.code, 'EBADARGS');
  assert.equal(native.callsOf('receive').length, 2);
  assert.equal(warnings.at(-1).code, 'EBADARGS');
});

// `connect`/`send`/`disconnect` ops drive transport.connect and connection.send; a failing
// transport.connect is retried when the engine next needs the peer.
test('outgoing connections', async (t) => {
  const tr = transport();
  const { node, native } = make(t, { transport: tr, id: 'me', metadata: { mine: true } });
  const warnings = [];
  node.on('warning', (w) => warnings.push(w));

  native.send({ op: 'send', io: 1, peer: 'p', type: 'AppendEntries', args: {} });
  assert.deepEqual(completes(native, 1), [[1, { message: 'not connected', code: 'ENOTCONNECTED' }, null]]);

  tr.connectThrows = 1;
  native.send({ op: 'connect', peer: 'p', metadata: { theirs: 1 } });
  assert.equal(warnings.length, 1);
  assert.match(warnings[0].message, /connect exploded/);
  native.send({ op: 'send', io: 2, peer: 'p', type: 'AppendEntries', args: { term: 4 } });
  assert.equal(tr.connects.length, 2, 'reconnected for the send');
  assert.deepEqual(tr.connects[1], { localId: 'me', localMeta: { mine: true }, peerId: 'p', peerMeta: { theirs: 1 } });
  const conn = tr.connections[0];
  assert.equal(conn.sent.length, 1);
  assert.equal(conn.sent[0].type, 'AppendEntries');
  assert.deepEqual(conn.sent[0].args, { term: 4 });
  conn.sent[0].cb(null, { term: 4, success: true });
  conn.sent[0].cb(null, { twice: true });
  assert.deepEqual(completes(native, 2), [[2, null, '{"term":4,"success":true}']]);

  native.send({ op: 'send', io: 3, peer: 'p', type: 'RequestVote', args: {} });
  conn.sent[1].cb(new Error('timeout'));
  assert.deepEqual(completes(native, 3), [[3, { message: 'timeout' }, null]]);

  native.send({ op: 'disconnect', peer: 'p' });
  assert.ok(conn.closed);
  native.send({ op: 'send', io: 4, peer: 'p', type: 'RequestVote', args: {} });
  assert.equal(completes(native, 4)[0][1].code, 'ENOTCONNECTED');
  assert.equal(tr.connects.length, 2, 'no reconnect after disconnect');
});

// Reads come from the engine's published status.
test('status reads', async (t) => {
  const { node, native } = make(t);
  native.status = { term: 7, leader: 'L', state: 'follower', peers: { p: { z: 1 } } };
  assert.equal(node.currentTerm(), 7);
  assert.equal(node.currentLeader(), 'L');
  assert.deepEqual(node.peerMeta('p'), { z: 1 });
  assert.equal(node.peerMeta('nobody'), undefined);
});

// ---- command results and snapshots

// Items marked `want` keep applyCommand's result; `done` with that index hands it to the caller.
test('applyCommand results reach command()', async (t) => {
  const { node, native } = make(t, {
    persistence: persistence({
      applyCommand: (id, index, command, cb) => setImmediate(cb, null, { value: command.read, at: index }),
    }),
  });
  const p = node.command({ read: 'k' });
  let cbArgs;
  node.command({ read: 'j' }, (...args) => { cbArgs = args; });
  const [[req1], [req2]] = native.callsOf('propose');
  native.send({ op: 'apply', io: 1, entries: [{ index: 3, command: { read: 'k' }, want: true },
    { index: 4, command: { read: 'j' }, want: true }, { index: 5, command: { read: 'x' } }] });
  await until(() => completes(native, 1).length === 1, 'apply complete');
  assert.equal(node._requests._results.size, 2, 'only wanted results are kept');
  native.send({ op: 'done', req: req1, error: null, index: 3 }, { op: 'done', req: req2, error: null, index: 4 });
  assert.deepEqual(await p, { value: 'k', at: 3 });
  assert.deepEqual(cbArgs, [null, { value: 'j', at: 4 }]);
  assert.equal(node._requests._results.size, 0, 'results are released');
});

// The wrapper answers a command only on its `done`: applying a marked item keeps its result (the
// chain's progress reports tell the engine); a failed `done` drops the result it names.
test('a command completes only on its done; a failure drops its kept result', async (t) => {
  const { node, native } = make(t, {
    persistence: persistence({
      applyCommand: (id, index, command, cb) => setImmediate(cb, null, { at: index }),
    }),
  });
  const settled = [];
  const p1 = node.command({ n: 1 }).then((v) => settled.push(['ok', v]), (e) => settled.push(['err', e.code]));
  const p2 = node.command({ n: 2 }).then((v) => settled.push(['ok', v]), (e) => settled.push(['err', e.code]));
  const [[req1], [req2]] = native.callsOf('propose');
  native.send({ op: 'apply', io: 1, entries: [{ index: 3, command: { n: 1 }, want: true },
    { index: 4, command: { n: 2 }, want: true }] });
  await until(() => completes(native, 1).length === 1, 'apply complete');
  await tick();
  assert.deepEqual(settled, [], 'nothing completes without a done');
  assert.equal(node._requests._results.size, 2);
  native.send({ op: 'done', req: req1, error: { message: 'timedout', code: 'ETIMEDOUT' }, index: 3 });
  assert.equal(node._requests._results.size, 1, 'the failed command\'s result is dropped');
  native.send({ op: 'done', req: req2, error: null, index: 4 });
  await Promise.all([p1, p2]);
  assert.deepEqual(settled, [['err', 'ETIMEDOUT'], ['ok', { at: 4 }]]);
  assert.equal(node._requests._results.size, 0);
});

// snapshotRead reads what is asked for from createReadStream, encodes chunks like commands, and
// says when the stream is done; snapshotClose destroys it.
test('snapshotRead', async (t) => {
  const { Readable } = require('stream');
  const items = [];
  for (let i = 0; i < 10; i++) items.push({ key: `k${i}`, value: i === 3 ? Buffer.from('buf') : i });
  let pulled = 0;
  const streams = [];
  const { native } = make(t, {
    persistence: persistence({
      createReadStream: () => {
        let i = 0;
        const s = new Readable({
          objectMode: true,
          highWaterMark: 2,
          read() {
            pulled += 1;
            setImmediate(() => this.push(i < items.length ? items[i++] : null));
          },
        });
        streams.push(s);
        return s;
      },
    }),
  });
  native.send({ op: 'snapshotRead', io: 1, sid: 1, maxChunks: 4, maxBytes: 1 << 20 });
  await until(() => completes(native, 1).length === 1, 'first read');
  const first = JSON.parse(completes(native, 1)[0][2]);
  assert.equal(first.done, false);
  assert.ok(first.chunks.length >= 1 && first.chunks.length <= 4, `got ${first.chunks.length}`);
  assert.ok(pulled <= 8, `read only about what was asked for (pulled ${pulled})`);
  const got = first.chunks.slice();
  let io = 2;
  while (!JSON.parse(completes(native, io - 1)[0][2]).done) {
    native.send({ op: 'snapshotRead', io, sid: 1, maxChunks: 4, maxBytes: 1 << 20 });
    await until(() => completes(native, io).length === 1, `read ${io}`);
    got.push(...JSON.parse(completes(native, io)[0][2]).chunks);
    io += 1;
    assert.ok(io < 20, 'finishes');
  }
  assert.deepEqual(got, JSON.parse(JSON.stringify(items)), 'every chunk, in order, Buffers in JSON form');
  assert.equal(streams.length, 1, 'one stream for the sid');

  // byte limit, then close
  native.send({ op: 'snapshotRead', io: 50, sid: 2, maxChunks: 100, maxBytes: 10 });
  await until(() => completes(native, 50).length === 1, 'byte-limited read');
  assert.equal(JSON.parse(completes(native, 50)[0][2]).chunks.length, 1);
  native.send({ op: 'snapshotClose', sid: 2 });
  assert.ok(streams[1].destroyed);
});

// A failing read stream completes the read with its error.
test('snapshotRead stream errors', async (t) => {
  const { Readable } = require('stream');
  const { native } = make(t, {
    persistence: persistence({
      createReadStream: () => new Readable({
        objectMode: true,
        read() { this.destroy(Object.assign(new Error('disk gone'), { code: 'EIO' })); },
      }),
    }),
  });
  native.send({ op: 'snapshotRead', io: 1, sid: 1, maxChunks: 4, maxBytes: 100 });
  await until(() => completes(native, 1).length === 1, 'read');
  assert.deepEqual(completes(native, 1)[0].slice(1), [{ message: 'disk gone', code: 'EIO' }, null]);
});

// snapshotReset → removeAllState; snapshotWrite writes revived chunks in order (waiting for
// drain), ends the stream, then saveCommitIndex(index); snapshotAbort destroys a stream.
test('snapshotReset, snapshotWrite and snapshotAbort', async (t) => {
  const { Writable } = require('stream');
  const log = [];
  const streams = [];
  const { native } = make(t, {
    persistence: persistence({
      removeAllState: (id, cb) => { log.push(['removeAllState', id]); setImmediate(cb, null); },
      saveCommitIndex: (id, index, cb) => { log.push(['saveCommitIndex', index]); setImmediate(cb, null); },
      createWriteStream: () => {
        const s = new Writable({
          objectMode: true,
          highWaterMark: 1,
          write(chunk, _enc, done) {
            log.push(['write', chunk]);
            setTimeout(done, 2);
          },
          final(done) {
            log.push(['final']);
            done();
          },
        });
        streams.push(s);
        return s;
      },
    }),
  });
  native.send({ op: 'snapshotReset', io: 1 });
  await until(() => completes(native, 1).length === 1, 'reset');
  assert.deepEqual(completes(native, 1), [[1, null, null]]);
  native.send({ op: 'snapshotWrite', io: 2, sid: 7, chunks: [{ a: 1 }, { b: { type: 'Buffer', data: [1, 2] } }, 3],
    end: false, index: 0 });
  native.send({ op: 'snapshotWrite', io: 3, sid: 7, chunks: [4, 5], end: true, index: 42 });
  await until(() => completes(native, 3).length === 1, 'final write');
  assert.deepEqual(completes(native, 2), [[2, null, null]]);
  assert.deepEqual(completes(native, 3), [[3, null, null]]);
  const writes = log.filter((l) => l[0] === 'write').map((l) => l[1]);
  assert.equal(writes.length, 5);
  assert.deepEqual(writes[0], { a: 1 });
  assert.ok(Buffer.isBuffer(writes[1].b), 'chunks revived like commands');
  assert.deepEqual(writes.slice(2), [3, 4, 5]);
  const names = log.map((l) => l[0]);
  assert.deepEqual(names.slice(-2), ['final', 'saveCommitIndex'], 'finish before saveCommitIndex');
  assert.deepEqual(log.at(-1), ['saveCommitIndex', 42]);

  native.send({ op: 'snapshotWrite', io: 4, sid: 8, chunks: [1], end: false, index: 0 });
  native.send({ op: 'snapshotAbort', sid: 8 });
  assert.ok(streams[1].destroyed);
});

// A removeAllState that calls back after its install was aborted (a newer transfer began) is
// still completed (the engine, matching by io, ignores it) and logged on skiff:snapshot as stale.
test('snapshotReset of an aborted install: completed, and logged as stale', async (t) => {
  const debug = require('debug');
  const { format } = require('node:util');
  const lines = [];
  const before = { log: debug.log, namespaces: debug.disable() };
  debug.enable('skiff:snapshot');
  debug.log = (...args) => lines.push(format(...args));
  t.after(() => {
    debug.log = before.log;
    debug.enable(before.namespaces);
  });
  const callbacks = [];
  const { native } = make(t, { persistence: persistence({ removeAllState: (id, cb) => callbacks.push(cb) }) });
  native.send({ op: 'snapshotReset', io: 1, sid: 9 });
  await until(() => callbacks.length === 1, 'removeAllState called');
  native.send({ op: 'snapshotAbort', sid: 9 });
  callbacks[0](null);
  await until(() => completes(native, 1).length === 1, 'reset completed');
  assert.deepEqual(completes(native, 1), [[1, null, null]]);
  assert.ok(lines.some((l) => /removeAllState of an abandoned install \(stream 9\) finished late: ignored/.test(l)), lines.join('\n'));
  // the reset of an install still under way is not called stale
  native.send({ op: 'snapshotReset', io: 2, sid: 10 });
  await until(() => callbacks.length === 2, 'second removeAllState called');
  callbacks[1](null);
  await until(() => completes(native, 2).length === 1, 'second reset completed');
  assert.equal(lines.filter((l) => /abandoned install/.test(l)).length, 1);
});

// A write stream that fails completes the write with its error.
test('snapshotWrite stream errors', async (t) => {
  const { Writable } = require('stream');
  const { native } = make(t, {
    persistence: persistence({
      createWriteStream: () => new Writable({
        objectMode: true,
        write(chunk, _enc, done) { done(Object.assign(new Error('no space'), { code: 'ENOSPC' })); },
      }),
    }),
  });
  native.send({ op: 'snapshotWrite', io: 1, sid: 1, chunks: [1, 2], end: true, index: 5 });
  await until(() => completes(native, 1).length === 1, 'write');
  assert.deepEqual(completes(native, 1)[0].slice(1), [{ message: 'no space', code: 'ENOSPC' }, null]);
});

// A plugin call that never calls back holds its lane only until the command timeout; the retry
// then runs. A saveMeta that calls back after it was given up on makes the wrapper write the
// newest state again, so an old state can never be the last one written.
test('a hung saveMeta is abandoned, and a late one is followed by the newest state', async (t) => {
  const saves = [];
  const callbacks = [];
  const { native } = make(t, {
    commandTimeout: 50,
    persistence: persistence({
      saveMeta: (id, state, cb) => {
        saves.push(state.n);
        callbacks.push(cb);
      },
    }),
  });
  native.send({ op: 'saveMeta', io: 1, state: { n: 1 } });
  native.send({ op: 'saveMeta', io: 2, state: { n: 2 } });
  assert.deepEqual(saves, [1], 'the second save waits for the first');
  await until(() => saves.length === 2, 'the lane gives up on the hung save');
  assert.deepEqual(saves, [1, 2]);
  callbacks[1](null);
  assert.deepEqual(completes(native, 2), [[2, null, null]]);
  callbacks[0](null); // the abandoned save lands late
  await until(() => saves.length === 3, 're-save of the newest state');
  assert.deepEqual(saves, [1, 2, 2]);
  callbacks[2](null);
  assert.deepEqual(completes(native, 1), [], 'the engine already gave up on io 1');
});
