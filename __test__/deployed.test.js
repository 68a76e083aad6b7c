'use strict';

// The key-value store as deployed (issue 13): operations arriving together become one batch
// command with a result per operation; the client pipelines requests on one connection (bounded
// by maxInflight) and concurrent clients share log entries; 256 concurrent clients on one
// connection raise no listener warning; and a leader process killed with SIGKILL under load at 64 clients (3 store
// processes over TCP with a secret, file persistence with fsync) loses no acknowledged put.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');

const { createKvStore, createKvClient } = require('../lib/kv');
const createTcpTransport = require('../lib/transport/tcp');
const createKvStateMachine = require('../lib/persistence/kv-state-machine');
const { Member, waitForLeader } = require('../demo/control');
const { runLoad } = require('../bench/deployed-load');
const { freePort } = require('./helpers/ports');

function tmpDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-deployed-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// A started one-member store in a temp folder (bootstrapped: it leads), stopped after the test.
async function startStore(t, extra = {}) {
  const dir = tmpDir(t);
  const id = `tcp://127.0.0.1:${await freePort()}`;
  const store = createKvStore(Object.assign({ id, dir, bootstrap: true }, extra));
  t.after(() => store.stop());
  await store.start();
  return store;
}

// Calls `see(command)` for every command the store's persistence applies, whichever way the
// engine hands them over (applyCommand, or applyCommands batches).
function watchApplies(store, see) {
  const p = store.persistence;
  const one = p.applyCommand.bind(p);
  p.applyCommand = (nodeId, index, command, cb) => {
    see(command);
    return one(nodeId, index, command, cb);
  };
  const many = p.applyCommands.bind(p);
  p.applyCommands = (nodeId, batch, cb) => {
    for (const { command } of batch) see(command);
    return many(nodeId, batch, cb);
  };
}

test('a batch command applies its operations in order and answers each', () => {
  const sm = createKvStateMachine();
  const results = sm.apply({
    op: 'batch',
    ops: [
      { op: 'put', key: 'a', value: 1 },
      { op: 'get', key: 'a' },
      { op: 'del', key: 'a' },
      { op: 'del', key: 'a' },
      { op: 'put', key: 'b' },
      'not a command',
      { op: 'batch', ops: [{ op: 'put', key: 'nested', value: 1 }] },
    ],
  }, 1);
  assert.deepEqual(results, [undefined, 1, true, false, undefined, undefined, undefined]);
  assert.deepEqual(sm.toObject(), { b: null }, 'batches do not nest');
  assert.equal(sm.apply({ op: 'batch', ops: 'nope' }, 2), undefined);
});

test('operations arriving together share log entries, each answered with its own result', async (t) => {
  const store = await startStore(t);
  let applied = 0;
  watchApplies(store, () => { applied++; });
  await store.put('seed', 0);
  applied = 0;

  const n = 200;
  const ops = [];
  for (let i = 0; i < n; i++) ops.push(store.put(`k${i}`, i));
  ops.push(store.get('seed'), store.del('seed'), store.del('missing'));
  const results = await Promise.all(ops);
  assert.deepEqual(results.slice(n), [0, true, false]);
  for (let i = 0; i < n; i++) assert.equal(await store.localGet(`k${i}`), i);
  assert.ok(applied <= 10, `${n + 3} operations took ${applied} log entries`);

  // A lone operation is proposed as itself, at once.
  applied = 0;
  await store.put('alone', 1);
  assert.equal(applied, 1);
  assert.equal(await store.get('alone'), 1);
});

test('a batch stays within maxCommandBytes', async (t) => {
  const store = await startStore(t, { maxCommandBytes: 4096 });
  const seen = [];
  watchApplies(store, (command) => seen.push(Buffer.byteLength(JSON.stringify(command))));
  const value = 'v'.repeat(1000);
  await Promise.all(Array.from({ length: 40 }, (_, i) => store.put(`big${i}`, value)));
  assert.ok(seen.length >= 10, `40 puts of 1 KB in ${seen.length} entries under a 4 KB limit`);
  assert.ok(Math.max(...seen) <= 4096, `largest entry ${Math.max(...seen)} bytes`);
  for (let i = 0; i < 40; i++) assert.equal(await store.localGet(`big${i}`), value);
});

// A stand-in store on the TCP transport that holds every request until `hold` of them are in
// flight at once, then answers them in reverse order: a client that did not pipeline (or did not
// match replies by id) would stall or get the wrong answers.
async function holdingStore(t, hold) {
  const id = `tcp://127.0.0.1:${await freePort()}`;
  const seen = { connections: 0, inflight: 0, maxInflight: 0 };
  let held = [];
  let server;
  await new Promise((resolve, reject) => {
    server = createTcpTransport().listen(id, undefined, (peerId, metadata, conn) => {
      seen.connections++;
      conn.receive((type, args, reply) => {
        seen.inflight++;
        seen.maxInflight = Math.max(seen.maxInflight, seen.inflight);
        held.push(() => {
          seen.inflight--;
          reply(null, { value: `value of ${args.key}` });
        });
        if (held.length >= hold) {
          const answers = held.reverse();
          held = [];
          setImmediate(() => { for (const answer of answers) answer(); });
        }
      });
    }, (err) => (err ? reject(err) : resolve()));
  });
  t.after(() => new Promise((resolve) => server.close(resolve)));
  return { id, seen };
}

// `n` concurrent gets from one client through a holdingStore(hold): each answered with its own
// value. Returns what the store saw.
async function concurrentGets(t, hold, n, clientOptions) {
  const { id, seen } = await holdingStore(t, hold);
  const client = createKvClient([id], Object.assign({ timeout: 5000 }, clientOptions));
  t.after(() => client.close());
  const keys = Array.from({ length: n }, (_, i) => `k${i}`);
  const values = await Promise.all(keys.map((k) => client.get(k)));
  assert.deepEqual(values, keys.map((k) => `value of ${k}`));
  return seen;
}

test('the KV client pipelines: many requests in flight on one connection, replies matched by id', async (t) => {
  const seen = await concurrentGets(t, 64, 64);
  assert.equal(seen.connections, 1);
  assert.equal(seen.maxInflight, 64);
});

test('the KV client keeps at most maxInflight requests in flight; the rest wait their turn', async (t) => {
  const seen = await concurrentGets(t, 8, 40, { transport: { maxInflight: 8 } });
  assert.equal(seen.connections, 1);
  assert.equal(seen.maxInflight, 8);
});

test('concurrent clients over TCP share log entries at the store', async (t) => {
  const store = await startStore(t);
  let applied = 0;
  const applyCommand = store.persistence.applyCommand.bind(store.persistence);
  store.persistence.applyCommand = (...args) => { applied++; return applyCommand(...args); };
  const client = createKvClient([store.id]);
  t.after(() => client.close());
  await client.put('seed', 0);
  applied = 0;
  const n = 128;
  await Promise.all(Array.from({ length: n }, (_, i) => client.put(`k${i}`, i)));
  assert.ok(applied <= n / 8, `${n} puts from one client took ${applied} log entries`);
  const got = await Promise.all(Array.from({ length: n }, (_, i) => client.get(`k${i}`)));
  assert.deepEqual(got, Array.from({ length: n }, (_, i) => i));
});

test('256 concurrent clients on one connection: no listener warning, no error', async (t) => {
  const store = await startStore(t);
  const warnings = [];
  const onWarning = (w) => warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  t.after(() => process.off('warning', onWarning));
  const res = await runLoad({ addresses: [store.id], clients: 256, warmupMs: 0, durationMs: 1500 });
  assert.equal(res.errors, 0, res.firstError);
  assert.ok(res.puts >= 256, `${res.puts} puts`);
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(warnings, []);
});

test('a leader killed with SIGKILL under load at 64 clients loses no acknowledged put', { timeout: 90000 }, async (t) => {
  const dir = tmpDir(t);
  const secret = crypto.randomBytes(32).toString('hex');
  const env = Object.assign({}, process.env, { SKIFF_SECRET: secret });
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push(`tcp://127.0.0.1:${await freePort()}`);
  const members = ids.map((id) => new Member(id, [], { env, stdio: 'ignore' }));
  t.after(() => Promise.all(members.map((m) => m.stop(5000))));
  const [a, b, c] = members;
  const opts = {};
  await b.request('start', { id: b.id, dir, options: opts }, 20000);
  await c.request('start', { id: c.id, dir, options: opts }, 20000);
  await a.request('start', { id: a.id, dir, bootstrap: true, peers: [b.id, c.id], options: opts }, 20000);
  const { leader } = await waitForLeader(members, 20000);

  const acked = new Map();
  let ackedAfterKill = 0;
  let killed = false;
  const stopSignal = { stopped: false };
  const load = runLoad({
    addresses: ids, clients: 64, warmupMs: 0, durationMs: 60000, stopSignal,
    clientOptions: { secret, timeout: 30000, requestTimeout: 5000 },
    onAck: (key, value) => {
      acked.set(key, value);
      if (killed) ackedAfterKill++;
    },
  });
  const waitFor = async (fn, what, timeout) => {
    const deadline = Date.now() + timeout;
    while (!fn()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  try {
    await waitFor(() => acked.size >= 300, '300 acknowledged puts', 20000);
    await leader.kill('SIGKILL');
    killed = true;
    // The survivors elect a leader, and the clients go on with it.
    await waitFor(() => ackedAfterKill >= 300, '300 puts acknowledged by a new leader', 30000);
  } finally {
    stopSignal.stopped = true;
  }
  const res = await load;
  const survivors = members.filter((m) => m !== leader);
  const { leader: next } = await waitForLeader(survivors, 20000);
  assert.notEqual(next, leader);

  // Every acknowledged put reads back, through the log, from the new leader.
  const client = createKvClient(survivors.map((m) => m.id), { secret, timeout: 20000 });
  t.after(() => client.close());
  const keys = [...acked.keys()];
  const missing = [];
  for (let i = 0; i < keys.length; i += 64) {
    const chunk = keys.slice(i, i + 64);
    const values = await Promise.all(chunk.map((k) => client.get(k)));
    chunk.forEach((k, j) => {
      if (JSON.stringify(values[j]) !== JSON.stringify(acked.get(k))) missing.push(k);
    });
  }
  assert.deepEqual(missing.slice(0, 10), [], `${missing.length} of ${keys.length} acknowledged puts are lost ` +
    `(${res.errors} put errors during the run)`);
  t.diagnostic(`${keys.length} acknowledged puts (${ackedAfterKill} after the kill) all read back; ` +
    `${res.errors} puts failed (not acknowledged)`);
});
