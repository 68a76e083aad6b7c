'use strict';

// The replicated key-value store (lib/kv.js): three in-process stores on loopback TCP with the
// durable file persistence in temp folders. put/get/del through the leader, followers refusing
// with ENOTLEADER + err.leader, the redirecting client, membership, a restart from disk; then
// `node demo/run.js` as a child process.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');

const Node = require('..');
const { createKvStore, createKvClient } = require('../lib/kv');

const ROOT = path.join(__dirname, '..');

function tmpDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-kv-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function freePorts(n) {
  const servers = [];
  for (let i = 0; i < n; i++) {
    const srv = net.createServer();
    await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
    servers.push(srv);
  }
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  return ports;
}

async function waitUntil(fn, what, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// Starts 3 stores: [0] bootstraps and joins the others. Registers their stop with t.after.
async function startStores(t, dir, ids, extra = {}) {
  const stores = ids.map((id, i) => createKvStore(Object.assign({ id, dir }, extra,
    i === 0 ? { bootstrap: true, peers: ids.slice(1) } : {})));
  t.after(() => Promise.all(stores.map((s) => s.stop().catch(() => {}))));
  await stores[1].start();
  await stores[2].start();
  await stores[0].start();
  return stores;
}

function leaderOf(stores) {
  return waitUntil(() => {
    const leaders = stores.filter((s) => s.status().state === 'leader');
    if (leaders.length !== 1) return null;
    const l = leaders[0].status();
    return stores.every((s) => s === leaders[0] ||
      (s.status().state === 'follower' && s.status().leader === l.id && s.status().term === l.term))
      ? leaders[0] : null;
  }, 'one agreed leader');
}

test('the built-ins are exported from the package entry', () => {
  assert.equal(typeof Node, 'function');
  assert.equal(Node.createKvStore, createKvStore);
  assert.equal(Node.createKvClient, createKvClient);
  assert.equal(Node.createTcpTransport, require('../lib/transport/tcp'));
  assert.equal(Node.createFilePersistence, require('../lib/persistence/file'));
  assert.equal(Node.createKvStateMachine, require('../lib/persistence/kv-state-machine'));
});

test('bad options are refused', () => {
  assert.throws(() => createKvStore(), { code: 'EINVALIDOPTIONS' });
  assert.throws(() => createKvStore({ id: 'tcp://127.0.0.1:1' }), { code: 'EINVALIDOPTIONS' });
  assert.throws(() => createKvStore({ id: 'nope', dir: '/tmp' }), { code: 'EINVALIDADDRESS' });
  assert.throws(() => createKvStore({ id: 'tcp://127.0.0.1:1', dir: '/tmp', standby: true }), { code: 'EINVALIDOPTIONS' });
  assert.throws(() => createKvStore({ id: 'tcp://127.0.0.1:1', dir: '/tmp', peers: ['tcp://127.0.0.1:1'] }),
    { code: 'EINVALIDOPTIONS' });
  assert.throws(() => createKvClient([]), { code: 'EINVALIDOPTIONS' });
});

test('a store that cannot listen fails to start and leaves nothing running', async (t) => {
  const dir = tmpDir(t);
  const busy = net.createServer();
  await new Promise((resolve) => busy.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => busy.close(resolve)));
  const store = createKvStore({ id: `tcp://127.0.0.1:${busy.address().port}`, dir, bootstrap: true });
  await assert.rejects(store.start(), { code: 'EADDRINUSE' });
  assert.equal(store.status().state, 'stopped');
  await store.stop();
});

test('3 stores: put/get/del, followers refuse writes with ENOTLEADER and serve reads, the client redirects, restart from disk', async (t) => {
  const dir = tmpDir(t);
  const ids = (await freePorts(3)).map((p) => `tcp://127.0.0.1:${p}`);
  const stores = await startStores(t, dir, ids);
  const [a, b, c] = stores;

  // The bootstrapping store resolves start() as the leader of all three.
  assert.equal(a.status().state, 'leader');
  assert.equal(await a.leader(), a.id);
  assert.equal(await b.leader(2000), a.id);
  assert.ok(a.node.peerMeta(b.id) !== undefined && a.node.peerMeta(c.id) !== undefined, 'both joined');
  await leaderOf(stores);

  // put / get / del through the leader, JSON values of every kind, string and number keys.
  const values = { s: 'héllo', n: 42.5, t: true, z: null, arr: [1, 'two', [3]], obj: { deep: { x: [null] } } };
  for (const [k, v] of Object.entries(values)) await a.put(k, v);
  await a.put(7, 'seven');
  for (const [k, v] of Object.entries(values)) assert.deepEqual(await a.get(k), v, k);
  assert.equal(await a.get(7), 'seven');
  // A get writes nothing: 1,000 of them (on the leader and on the followers) leave every log
  // where it was.
  const lastLog = () => stores.map((s) => s.node.stats().lastLogIndex);
  // stats() is what the engine published at the end of its last round: give it a few rounds
  await new Promise((resolve) => setTimeout(resolve, 150));
  await waitUntil(() => new Set(lastLog()).size === 1, 'the followers catching up');
  const before = lastLog();
  const gets = [];
  for (let i = 0; i < 1000; i++) gets.push(stores[i % 3].get(7));
  assert.ok((await Promise.all(gets)).every((v) => v === 'seven'));
  assert.deepEqual(lastLog(), before);
  assert.equal(await a.get('7'), undefined, '7 and "7" are different keys');
  assert.equal(await a.get('missing'), undefined);
  await a.put('s', 'overwritten');
  assert.equal(await a.get('s'), 'overwritten');
  assert.equal(await a.del('s'), true);
  assert.equal(await a.del('s'), false);
  assert.equal(await a.get('s'), undefined);
  await assert.rejects(a.put({}, 1), { code: 'EBADARGS' });
  await assert.rejects(a.get(NaN), { code: 'EBADARGS' });
  await assert.rejects(a.put('bad', { f: 10n }), { code: 'EBADCOMMAND' });

  // Followers do not forward writes: ENOTLEADER with the leader's address. They serve reads
  // (a follower read: the leader's read index, then the local copy).
  for (const f of [b, c]) {
    assert.deepEqual(await f.get('n'), await a.get('n'));
    for (const op of [() => f.put('x', 1), () => f.del('n')]) {
      await assert.rejects(op(), (err) => {
        assert.equal(err.code, 'ENOTLEADER');
        assert.equal(err.message, 'not the leader');
        assert.equal(err.leader, a.id);
        return true;
      });
    }
    await assert.rejects(f.join('tcp://127.0.0.1:1'), { code: 'ENOTLEADER' });
  }
  // Their own copies catch up (local reads: not linearizable).
  await waitUntil(async () => (await b.localGet('n')) === 42.5 && (await c.localGet(7)) === 'seven',
    'the followers to apply');

  // The client: asking a follower first, it is redirected to the leader (one of its own addresses)
  // and remembers it.
  const client = createKvClient([c.id, a.id, b.id]);
  t.after(() => client.close());
  await client.put('via-client', { ok: 1 });
  assert.equal(client.leader, a.id);
  assert.deepEqual(await client.get('via-client'), { ok: 1 });
  assert.deepEqual(await a.get('via-client'), { ok: 1 });
  assert.equal(await client.get('missing'), undefined);
  assert.equal(await client.del('via-client'), true);
  assert.equal(await client.del('via-client'), false);
  await assert.rejects(client.put(null, 1), { code: 'EBADARGS' });
  // An unreachable address in the list is skipped.
  const [deadPort] = await freePorts(1);
  const client2 = createKvClient([`tcp://127.0.0.1:${deadPort}`, b.id, a.id], { connectWait: 200 });
  t.after(() => client2.close());
  assert.equal(await client2.get(7), 'seven'); // a follower serves it, or the leader
  await client2.put('via-client2', 2); // a write finds the leader
  assert.equal(client2.leader, a.id);

  // Leader failover: the leader stops; the client finds the new one; data is all there.
  for (let i = 0; i < 20; i++) await client.put(`k${i}`, i);
  await a.stop();
  await assert.rejects(a.put('x', 1), { code: 'ESTOPPED' });
  const next = await leaderOf([b, c]);
  assert.notEqual(next.id, a.id);
  for (let i = 0; i < 20; i++) assert.equal(await client.get(`k${i}`), i);
  await client.put('after-failover', 1); // a write finds the new leader (a follower serves gets)
  assert.equal(client.leader, next.id);

  // Restart everything from disk: new store objects over the same folders and addresses.
  await Promise.all([b.stop(), c.stop()]);
  // `bootstrap` and `peers` are ignored now that the state is on disk: membership is in the log.
  const again = ids.map((id, i) => createKvStore({ id, dir, bootstrap: i === 0, peers: i === 0 ? ids.slice(1) : [] }));
  t.after(() => Promise.all(again.map((s) => s.stop().catch(() => {}))));
  await Promise.all(again.map((s) => s.start()));
  const restarted = await leaderOf(again);
  assert.equal(await restarted.get('after-failover'), 1);
  for (let i = 0; i < 20; i++) assert.equal(await restarted.get(`k${i}`), i, `k${i} after restart`);
  for (const [k, v] of Object.entries(values)) {
    if (k !== 's') assert.deepEqual(await restarted.get(k), v, `${k} after restart`);
  }
  assert.equal(await restarted.get('s'), undefined, 'a deleted key stays deleted');
  assert.equal(await client.get('after-failover'), 1, 'the client finds the restarted cluster');

  // Membership: the leader removes a follower; the other two go on.
  const gone = again.find((s) => s !== restarted);
  await restarted.leave(gone.id);
  await gone.stop();
  await restarted.put('two-members', true);
  assert.equal(await restarted.get('two-members'), true);
  await Promise.all(again.map((s) => s.stop()));
});

test('npm run demo (node demo/run.js) tells its story and exits 0', async () => {
  const child = spawn(process.execPath, [path.join(ROOT, 'demo', 'run.js')], { cwd: ROOT });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
  const [code, signal] = await new Promise((resolve) => child.on('exit', (c, s) => resolve([c, s])));
  clearTimeout(timer);
  assert.equal(code, 0, `demo exited with ${signal || code}\nstdout:\n${out}\nstderr:\n${err}`);
  assert.match(out, /leader elected: tcp:\/\/127\.0\.0\.1:\d+ \(term \d+\)/);
  assert.match(out, /new leader: tcp:\/\/127\.0\.0\.1:\d+ \(term \d+\)/);
  assert.match(out, /all 50\/50 acknowledged writes survived/);
  const folder = /data folder (\S+)/.exec(out);
  assert.ok(folder, 'the demo names its data folder');
  assert.equal(fs.existsSync(folder[1]), false, 'the demo removed its temp folder');
});
