'use strict';

// How the engine batches work, seen from the plugins: group commit under load, and callbacks
// that stay asynchronous now that the engine answers many calls synchronously.

const test = require('node:test');
const assert = require('node:assert/strict');
const { startCluster } = require('./helpers/cluster');

// Each saveMeta hands the plugin the whole log, so saving per entry costs a copy of the log per
// command. With 64 clients each sending its next command as soon as the last one is
// acknowledged, the state machine (one applyCommand at a time) has a backlog and the engine
// holds saves back to carry many entries each: far fewer saves than commands, across 3 nodes.
// Without group commit this ratio is about 3 (one save per command per node).
test('group commit: 64 closed-loop clients need far fewer saves than commands', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const TOTAL = 3000;
  const CLIENTS = 64;
  const savesBefore = c.persistence.stats.saves;
  let sent = 0;
  const client = async () => {
    while (sent < TOTAL) {
      sent += 1;
      await leader.command({ n: sent });
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, client));
  const saves = c.persistence.stats.saves - savesBefore;
  assert.ok(saves < TOTAL / 2, `${saves} saves for ${TOTAL} commands`);
  await c.waitApplied(TOTAL);
  for (const n of c.nodes) {
    assert.equal(c.commands(n.id).length, TOTAL, `${n.id} applied every command once`);
  }
});

// A lone command is not held back: each of a run of sequential commands is saved on its own.
test('sequential commands are each saved at once', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const savesBefore = c.persistence.stats.saves;
  for (let i = 0; i < 50; i++) await leader.command({ i });
  // every command needs a save on the leader and on at least one follower before it commits
  assert.ok(c.persistence.stats.saves - savesBefore >= 100);
});

// The engine may answer a request within the call (a follower refuses a command at once), but
// callbacks and promises still settle after the call has returned.
test('callbacks are never called synchronously', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const follower = c.nodes.find((n) => n !== leader);
  for (const [node, expectError] of [[follower, true], [leader, false]]) {
    let returned = false;
    const outcome = await new Promise((resolve) => {
      node.command('x', (err) => resolve({ err, sync: !returned }));
      returned = true;
    });
    assert.equal(outcome.sync, false, `${node.id}: callback after command() returned`);
    assert.equal(Boolean(outcome.err), expectError);
    if (expectError) assert.equal(outcome.err.code, 'ENOTLEADER');
  }
});

// stop() ends the engine within the call; the commands it fails and its own callback are still
// called back after it has returned.
test('stop() calls back after it returns', async (t) => {
  // a stop without the hand-off, so that the command in flight is failed by the stop itself
  const c = await startCluster(t, 3, { nodeOptions: { transferOnStop: false } });
  const leader = await c.waitForLeader();
  let returned = false;
  const seen = [];
  const both = new Promise((resolve) => {
    const note = (what) => {
      seen.push(what);
      if (seen.length === 2) resolve();
    };
    leader.command('in flight', (err) => note({ what: 'command', code: err && err.code, sync: !returned }));
    leader.stop((err) => note({ what: 'stop', err, sync: !returned }));
    returned = true;
  });
  await both;
  const command = seen.find((s) => s.what === 'command');
  const stop = seen.find((s) => s.what === 'stop');
  assert.equal(command.sync, false, 'command callback after stop() returned');
  assert.equal(command.code, 'ESTOPPED');
  assert.equal(stop.sync, false, 'stop callback after stop() returned');
  assert.equal(stop.err, null);
});

// Plugins that call back synchronously, transport included: a request runs the remote node's
// engine inside the sender's call. Batches that arrive while another runs wait their turn, so
// nothing re-enters the engine, the stack stays flat and every node applies every command once,
// in the same order.
function syncPlugins() {
  const handlers = new Map(); // node id -> receive handler of its incoming connection
  const transport = {
    listen(id, options, onConnection, cb) {
      handlers.set(id, { onConnection });
      if (cb) cb(null);
      return { close(done) { handlers.delete(id); if (done) done(); } };
    },
    connect(localId, localMeta, peerId) {
      const { EventEmitter } = require('events');
      const out = new EventEmitter();
      const inbound = new EventEmitter();
      let handler = null;
      inbound.receive = (fn) => { handler = fn; };
      inbound.send = () => {};
      inbound.close = (done) => { if (done) done(); };
      let hooked = false;
      out.receive = () => {};
      out.close = (done) => { if (done) done(); };
      out.send = (type, args, cb) => {
        const remote = handlers.get(peerId);
        if (!remote) return cb(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }));
        if (!hooked) {
          hooked = true;
          remote.onConnection(localId, localMeta, inbound);
        }
        if (!handler) return cb(Object.assign(new Error('no handler'), { code: 'ECONNREFUSED' }));
        return handler(type, JSON.parse(JSON.stringify(args)), (err, result) =>
          cb(err, result === undefined ? undefined : JSON.parse(JSON.stringify(result))));
      };
      return out;
    },
  };
  const meta = new Map();
  const applied = new Map(); // id -> [commands]
  const at = new Map(); // id -> last applied index
  const persistence = {
    loadMeta: (id, cb) => cb(null, meta.has(id) ? JSON.parse(meta.get(id)) : null),
    saveMeta: (id, state, cb) => { meta.set(id, JSON.stringify(state)); cb(null); },
    applyCommand: (id, index, command, cb) => {
      if (index > (at.get(id) || 0)) {
        at.set(id, index);
        if (!applied.has(id)) applied.set(id, []);
        applied.get(id).push(command);
      }
      cb(null);
    },
    lastAppliedCommitIndex: (id, cb) => cb(null, at.get(id) || 0),
    saveCommitIndex: (id, index, cb) => { at.set(id, Math.max(at.get(id) || 0, index)); cb(null); },
    removeAllState: (id, cb) => { applied.set(id, []); at.set(id, 0); cb(null); },
    createReadStream: () => require('stream').Readable.from([], { objectMode: true }),
    createWriteStream: () => new (require('stream').Writable)({ objectMode: true, write: (c, e, d) => d() }),
  };
  return { transport, persistence, applied };
}

test('plugins that call back synchronously', async (t) => {
  const { Node, waitForState, waitUntil } = require('./helpers/cluster');
  const { transport, persistence, applied } = syncPlugins();
  const nodes = [];
  t.after(() => Promise.all(nodes.map((n) => n.stop().catch(() => {}))));
  const add = (id, extra) => {
    const n = Node(Object.assign({ id, transport, persistence }, extra));
    n.on('warning', () => {});
    n.on('error', () => {});
    n.listen(id);
    nodes.push(n);
    return n;
  };
  const leader = add('s1', {});
  await waitForState(leader, 'leader');
  for (const id of ['s2', 's3']) {
    add(id, { standby: true });
    await leader.join(id);
  }
  const all = Array.from({ length: 1000 }, (_, i) => ({ n: i }));
  await Promise.all(all.map((cmd) => leader.command(cmd)));
  for (let i = 0; i < 100; i++) await leader.command({ seq: i });
  await waitUntil(() => nodes.every((n) => (applied.get(n.id) || []).length === 1100), 'every node to apply all');
  const order = applied.get('s1');
  for (const n of nodes) assert.deepEqual(applied.get(n.id), order, `${n.id} applied the same sequence`);
  assert.deepEqual(order.slice(1000), Array.from({ length: 100 }, (_, i) => ({ seq: i })));
});
