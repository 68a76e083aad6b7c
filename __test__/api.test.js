'use strict';

// The public API surface: Promises when no callback is given (callbacks otherwise, and then no
// Promise), events with the original's names and arguments (`state`, `leader`, `applied log`,
// `joined`, `connected`), and status reads.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster, waitForState, waitUntil } = require('./helpers/cluster');

// command/join/leave/stop return Promises without a callback and undefined with one.
test('Promises when no callback is given', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  const a = c.add({ id: 'a' });
  await waitForState(a, 'leader');
  const b = c.add({ id: 'b', standby: true });

  const p = a.command('p');
  assert.ok(p instanceof Promise);
  assert.equal(await p, undefined);
  let cbErr = 'not called';
  const r = a.command('cb', (err) => { cbErr = err; });
  assert.equal(r, undefined);
  await waitUntil(() => cbErr !== 'not called', 'the callback');
  assert.equal(cbErr, null);
  // options and callback
  await new Promise((resolve, reject) => a.command('opt', { timeout: 1000 }, (err) => (err ? reject(err) : resolve())));

  const j = a.join('b', { m: 1 });
  assert.ok(j instanceof Promise);
  await j;
  let left = 'not called';
  assert.equal(a.leave('b', (err) => { left = err; }), undefined);
  await waitUntil(() => left !== 'not called', 'leave callback');
  assert.equal(left, null);

  const s = b.stop();
  assert.ok(s instanceof Promise);
  await s;
  assert.equal(b.state.name, 'stopped');
  let closed = false;
  assert.equal(a.close(() => { closed = true; }), undefined);
  await waitUntil(() => closed, 'close callback');
  assert.deepEqual(c.commands('a'), ['p', 'cb', 'opt']);
});

// A rejected Promise nobody handles does not crash the process (the README calls
// `leader.join(id)` without a callback); awaiting it still sees the error.
test('fire-and-forget calls do not cause unhandled rejections', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  const follower = c.add({ id: 'f', standby: true });
  const unhandled = [];
  const onUnhandled = (reason) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  t.after(() => process.removeListener('unhandledRejection', onUnhandled));
  follower.join('x');
  follower.command('y');
  follower.leave('z');
  await assert.rejects(follower.command('w'), { code: 'ENOTLEADER' });
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.deepEqual(unhandled, []);
});

// Events carry the original's arguments: state(name, node), <state>(node), leader(node),
// applied log(index), joined(peer{id, metadata}), connected(peer).
test('events', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  const a = c.add({ id: 'a', metadata: { me: 'a' } });
  const log = [];
  a.on('state', (name, node) => log.push(['state', name, node === a]));
  a.on('follower', (node) => log.push(['follower', node === a]));
  a.on('candidate', (node) => log.push(['candidate', node === a]));
  a.on('leader', (node) => log.push(['leader', node === a]));
  await waitForState(a, 'leader');
  assert.deepEqual(log.slice(-6), [
    ['state', 'follower', true], ['follower', true],
    ['state', 'candidate', true], ['candidate', true],
    ['state', 'leader', true], ['leader', true],
  ]);

  const applied = [];
  a.on('applied log', (index) => applied.push(index));
  await a.command('one');
  await a.command('two');
  const indexes = c.persistence.indexes('a');
  assert.deepEqual(applied.filter((i) => indexes.includes(i)), indexes);
  assert.ok(applied.every((i) => Number.isInteger(i)));

  const joined = [];
  const connected = [];
  a.on('joined', (peer) => joined.push(peer));
  a.on('connected', (peer) => connected.push(peer.id));
  const b = c.add({ id: 'b', standby: true, metadata: { me: 'b' } });
  const bStates = [];
  b.on('state', (name) => bStates.push(name));
  await a.join('b', { zone: 'z' });
  assert.equal(joined.length, 1);
  assert.equal(joined[0].id, 'b');
  assert.deepEqual(joined[0].metadata, { zone: 'z' });
  await waitUntil(() => connected.includes('b'), 'connected(b)');
  await waitForState(b, 'follower');
  assert.ok(bStates.includes('follower'));
  assert.equal(b.currentLeader(), 'a');
  assert.equal(b.currentTerm(), a.currentTerm());
});

// An `error` event with no listener must not throw (EventEmitter would): it becomes a warning.
test('errors without listeners become warnings', async (t) => {
  const c = new Cluster();
  t.after(() => c.stop());
  // no cluster listeners here: build the node by hand
  const Node = require('..');
  const node = Node({ id: 'lonely', transport: c.hub, persistence: c.persistence });
  c.all.push(node);
  const warnings = [];
  node.on('warning', (w) => warnings.push(w));
  c.persistence.fail('saveMeta', 'error', 1, 'lonely');
  await waitForState(node, 'leader');
  await waitUntil(() => warnings.some((w) => /injected/.test(w.message)), 'the saveMeta failure as a warning');
  assert.ok(warnings.every((w) => w instanceof Error));
});
