'use strict';

// Attacks from the network on the TCP transport and the key-value store, with raw sockets
// (issue 10): no secret, a wrong secret, another cluster, msgpack references, a peer that never
// reads, idle and half-frame sockets, too many sockets or requests, a lying store, a store that
// pushes requests, oversized puts; and a 3-process cluster with `secret` and with `tls`.

const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const tls = require('node:tls');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { once } = require('node:events');
const { Packr } = require('msgpackr');

const createTcpTransport = require('../lib/transport/tcp');
const { createKvStore, createKvClient, REQUEST_TYPE } = require('../lib/kv');
const { Member, waitForLeader } = require('../demo/control');
const { makeTestCerts } = require('./helpers/certs');
const { freePort } = require('./helpers/ports');

const packr = new Packr({ useRecords: false });
const SECRET = 'correct horse battery staple 42';

function frame(payload) {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(payload.length, 0);
  return Buffer.concat([head, payload]);
}

const closeP = (x) => new Promise((resolve) => x.close(() => resolve()));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function listen(transport, id, onConnection) {
  return new Promise((resolve, reject) => {
    const server = transport.listen(id, undefined, onConnection, (err) => (err ? reject(err) : resolve(server)));
  });
}

// A server that records what reaches its handler.
async function recordingServer(t, transportOptions, reply = (type, args, cb) => cb(null, args)) {
  const transport = createTcpTransport(transportOptions);
  const port = await freePort();
  const id = `tcp://127.0.0.1:${port}`;
  const handled = [];
  const connections = [];
  const warnings = [];
  const server = await listen(transport, id, (peerId, metadata, conn) => {
    connections.push({ peerId, metadata, conn });
    conn.on('error', (e) => warnings.push(e));
    conn.receive((type, args, cb) => {
      handled.push({ type, args });
      reply(type, args, cb);
    });
  });
  server.on('warning', (e) => warnings.push(e));
  t.after(() => closeP(server));
  return { transport, port, id, handled, connections, warnings, server };
}

// A raw socket speaking frames by hand.
class Raw {
  constructor(socket) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.frames = [];
    this.waiters = [];
    this.closed = new Promise((resolve) => socket.once('close', resolve));
    this.isClosed = false;
    socket.once('close', () => { this.isClosed = true; this._wake(); });
    socket.on('error', () => {});
    socket.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length - 4 >= this.buf.readUInt32BE(0)) {
        const n = this.buf.readUInt32BE(0);
        this.frames.push(packr.unpack(this.buf.subarray(4, 4 + n)));
        this.buf = this.buf.subarray(4 + n);
      }
      this._wake();
    });
  }

  static async connect(port) {
    const socket = net.connect(port, '127.0.0.1');
    const raw = new Raw(socket);
    await once(socket, 'connect');
    return raw;
  }

  _wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  send(msg) { this.socket.write(frame(packr.pack(msg))); }

  async next(ms = 3000) {
    const deadline = Date.now() + ms;
    while (!this.frames.length) {
      if (this.isClosed) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('no frame arrived');
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
    return this.frames.shift();
  }

  async closedWithin(ms) {
    const timer = sleep(ms).then(() => 'open');
    const r = await Promise.race([this.closed.then(() => 'closed'), timer]);
    return r === 'closed';
  }

  destroy() { this.socket.destroy(); }
}

// hello → welcome (→ auth with `secret`); returns the welcome.
async function handshake(raw, { id = 'tcp://127.0.0.1:1', cluster = null, secret = null, metadata = {} } = {}) {
  const nonce = crypto.randomBytes(32);
  raw.send({ hello: { id, metadata, cluster, nonce } });
  // (Without a welcome, as before the handshake existed, the raw socket goes on regardless.)
  const welcome = await raw.next(1000).catch(() => null);
  if (welcome && welcome.welcome && secret) {
    const proof = createTcpTransport.handshakeProof(Buffer.from(secret), 'client', id, cluster, nonce,
      Buffer.from(welcome.welcome.nonce));
    raw.send({ auth: proof });
  }
  return welcome;
}

// ------------------------------------------------------------------ secret

test('secret: a raw socket without the secret is closed before any of its frames is processed', async (t) => {
  const srv = await recordingServer(t, { secret: SECRET });
  // The old hello (no nonce), then requests: refused, nothing handled.
  let raw = await Raw.connect(srv.port);
  raw.send({ hello: { id: 'tcp://127.0.0.1:1', metadata: {} } });
  raw.send({ req: 1, type: 'AppendEntries', args: { term: 1e9 } });
  assert.ok(await raw.closedWithin(3000), 'closed');
  // A proper hello but no proof: the welcome proves the server's side, then requests are refused.
  raw = await Raw.connect(srv.port);
  const welcome = await handshake(raw);
  assert.ok(welcome.welcome.proof, 'the server asks for a proof');
  raw.send({ req: 1, type: 'InstallSnapshot', args: { term: 1e9 } });
  raw.send({ req: 2, type: 'AppendEntries', args: { term: 1e9 } });
  assert.deepEqual(await raw.next(), { refused: { code: 'EAUTH', message: 'authentication failed' } });
  assert.ok(await raw.closedWithin(3000), 'closed');
  assert.equal(srv.handled.length, 0, 'no frame reached the handler');
  assert.equal(srv.connections.length, 0, 'no connection was handed over');
  assert.ok(srv.warnings.some((w) => w.code === 'EAUTH'), 'the refusal is a warning');
});

test('secret: a wrong secret is refused; the right one works, the secret never on the wire', async (t) => {
  const srv = await recordingServer(t, { secret: SECRET });
  const raw = await Raw.connect(srv.port);
  const wire = [];
  raw.socket.on('data', (d) => wire.push(d));
  await handshake(raw, { secret: 'not the secret, but just as long' });
  raw.send({ req: 1, type: 'RequestVote', args: { term: 1e9 } });
  assert.equal((await raw.next()).refused.code, 'EAUTH');
  assert.ok(await raw.closedWithin(3000));
  assert.equal(srv.handled.length, 0);

  // Control: a raw socket with the secret gets its request through.
  const ok = await Raw.connect(srv.port);
  await handshake(ok, { secret: SECRET });
  ok.send({ req: 1, type: 'echo', args: 'hi' });
  assert.deepEqual(await ok.next(), { res: 1, result: 'hi' });
  ok.destroy();
  assert.ok(!Buffer.concat(wire).includes(Buffer.from(SECRET)), 'the secret is not sent');

  // The transport's own client: right secret works, wrong secret gets EAUTH.
  const good = createTcpTransport({ secret: SECRET }).connect('me', {}, srv.id, {});
  t.after(() => closeP(good));
  assert.equal(await new Promise((resolve, reject) => good.send('echo', 'x', (e, r) => (e ? reject(e) : resolve(r)))), 'x');
  const bad = createTcpTransport({ secret: 'another secret of 16+ bytes' }).connect('me', {}, srv.id, {});
  t.after(() => closeP(bad));
  const [err] = await once(bad, 'error');
  assert.equal(err.code, 'EAUTH');
  // A server without the secret cannot fool a client that has it.
  const open = await recordingServer(t, {});
  const wary = createTcpTransport({ secret: SECRET }).connect('me', {}, open.id, {});
  t.after(() => closeP(wary));
  const [err2] = await once(wary, 'error');
  assert.equal(err2.code, 'EAUTH');
  assert.equal(open.handled.length, 0, 'nothing was sent to the impostor');
});

test('cluster id: a hello from another cluster is refused, and a client refuses a server of another', async (t) => {
  const srv = await recordingServer(t, { cluster: 'blue' });
  const raw = await Raw.connect(srv.port);
  const answer = await handshake(raw, { cluster: 'green' });
  assert.equal(answer.refused.code, 'ECLUSTER');
  assert.ok(await raw.closedWithin(3000));
  const none = await Raw.connect(srv.port);
  assert.equal((await handshake(none)).refused.code, 'ECLUSTER', 'no cluster id is another cluster');
  assert.equal(srv.connections.length, 0);
  const client = createTcpTransport({ cluster: 'green' }).connect('me', {}, srv.id, {});
  t.after(() => closeP(client));
  const [err] = await once(client, 'error');
  assert.equal(err.code, 'ECLUSTER');
  const same = createTcpTransport({ cluster: 'blue' }).connect('me', {}, srv.id, {});
  t.after(() => closeP(same));
  await once(same, 'connected');
  assert.equal(srv.connections.length, 1);
});

// ------------------------------------------------------------------ frames and limits

// msgpack's structured-clone references: each level holds the previous one twice, so 30 levels
// are a few hundred bytes that expand to 2^30 leaves once anything walks them.
function referenceBomb(levels = 30) {
  let v = ['x'];
  for (let i = 0; i < levels; i++) v = [v, v];
  return new Packr({ structuredClone: true, useRecords: false }).pack({ req: 1, type: 'echo', args: v });
}

test('a msgpack reference bomb is refused quickly, before it reaches anyone', async (t) => {
  // (The handler does not echo: before the fix, packing the expanded bomb would hang the test.)
  const srv = await recordingServer(t, {}, (type, args, cb) => cb(null, null));
  const bomb = referenceBomb();
  assert.ok(bomb.length < 1000, `the bomb is small (${bomb.length} bytes)`);
  const raw = await Raw.connect(srv.port);
  await handshake(raw);
  const t0 = Date.now();
  raw.socket.write(frame(bomb));
  assert.ok(await raw.closedWithin(3000), 'the socket is closed');
  assert.ok(Date.now() - t0 < 1000, `quickly (${Date.now() - t0} ms)`);
  assert.equal(srv.handled.length, 0, 'the handler never saw it');
  assert.ok(srv.warnings.some((w) => w.code === 'EBADFRAME'));
  // Records (shared structures) and other extension types are refused the same way.
  const records = new Packr({ useRecords: true }).pack({ req: 1, type: 'echo', args: [{ a: 1 }, { a: 2 }] });
  const raw2 = await Raw.connect(srv.port);
  await handshake(raw2);
  raw2.socket.write(frame(records));
  assert.ok(await raw2.closedWithin(3000));
  assert.equal(srv.handled.length, 0);
  // And the sender cannot make one by mistake: a Date (an extension type) fails at send() with a code.
  const client = srv.transport.connect('me', {}, srv.id, {});
  t.after(() => closeP(client));
  await assert.rejects(new Promise((resolve, reject) => client.send('echo', { d: new Date() }, (e) => (e ? reject(e) : resolve()))),
    { code: 'EBADARGS' });
});

test('a frame of the wrong shape is refused before it is used', async (t) => {
  const srv = await recordingServer(t, {});
  for (const bad of [
    { req: 1, type: { toString: 'x' }, args: 1 },
    { req: 'one', type: 'echo' },
    { req: 1, type: 'echo', args: 1, extra: 1 },
    { res: 1, error: { message: 'x', nested: { deep: [1, 2, 3] } } },
    { hello: { id: 'again' } },
  ]) {
    const raw = await Raw.connect(srv.port);
    await handshake(raw);
    raw.send(bad);
    assert.ok(await raw.closedWithin(3000), `closed after ${JSON.stringify(bad)}`);
  }
  assert.equal(srv.handled.length, 0);
});

test('a peer that never reads is dropped once its replies pass maxWriteBuffer', async (t) => {
  const srv = await recordingServer(t, { maxFrameSize: 256 * 1024, maxWriteBuffer: 1024 * 1024 });
  const raw = await Raw.connect(srv.port);
  await handshake(raw);
  raw.socket.pause(); // never read again
  const payload = Buffer.alloc(100 * 1024, 7);
  for (let i = 1; i <= 400; i++) {
    if (raw.isClosed) break;
    raw.send({ req: i, type: 'echo', args: payload });
    if (i % 20 === 0) await sleep(5);
  }
  assert.ok(await raw.closedWithin(10000), 'the server closed the socket');
  assert.ok(srv.warnings.some((w) => w.code === 'EWRITEBUFFER'), 'with EWRITEBUFFER');
  assert.ok(srv.handled.length < 400, `it stopped reading (${srv.handled.length} handled)`);
});

test('idle and half-frame sockets are closed after the hello; a quiet client is kept alive by pings', async (t) => {
  const srv = await recordingServer(t, { idleTimeout: 400, frameTimeout: 300 });
  const idle = await Raw.connect(srv.port);
  await handshake(idle);
  assert.ok(await idle.closedWithin(3000), 'an idle socket is closed');
  // A frame dribbled a byte at a time never completes.
  const slow = await Raw.connect(srv.port);
  await handshake(slow);
  const f = frame(packr.pack({ req: 1, type: 'echo', args: 'x'.repeat(200) }));
  let closedEarly = false;
  for (let i = 0; i < f.length - 1 && !slow.isClosed; i++) {
    slow.socket.write(f.subarray(i, i + 1));
    await sleep(50);
    if (i * 50 < 250 && slow.isClosed) closedEarly = true;
  }
  assert.ok(slow.isClosed, 'a half frame is not waited for forever');
  assert.ok(!closedEarly);
  assert.equal(srv.handled.length, 0);
  assert.ok(srv.warnings.filter((w) => w.code === 'ETIMEDOUT').length >= 2);
  // The transport's own client pings while idle: its connection survives several idle periods.
  const client = createTcpTransport({ idleTimeout: 400 }).connect('me', {}, srv.id, {});
  t.after(() => closeP(client));
  await once(client, 'connected');
  let drops = 0;
  client.on('disconnected', () => drops++);
  await sleep(1500);
  assert.equal(drops, 0, 'not dropped while idle');
});

test('maxConnections caps the sockets a listener holds; maxInflight answers the excess with EBUSY', async (t) => {
  const srv = await recordingServer(t, { maxConnections: 3, maxInflight: 2 }, (type, args, cb) => {
    if (type !== 'never') cb(null, args);
  });
  const raws = [];
  for (let i = 0; i < 5; i++) raws.push(await Raw.connect(srv.port));
  t.after(() => raws.forEach((r) => r.destroy()));
  await sleep(200);
  assert.equal(raws.filter((r) => r.isClosed).length, 2, 'two sockets over the cap were closed');
  assert.ok(srv.warnings.some((w) => w.code === 'ECONNLIMIT'));
  const open = raws.find((r) => !r.isClosed);
  await handshake(open);
  for (let i = 1; i <= 4; i++) open.send({ req: i, type: 'never', args: i });
  const a = await open.next();
  const b = await open.next();
  assert.deepEqual([a.res, b.res].sort(), [3, 4]);
  assert.equal(a.error.code, 'EBUSY');
  assert.equal(srv.handled.length, 2, 'only two are held');
});

// ------------------------------------------------------------------ the key-value store and client

async function store(t, options = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-security-'));
  const port = await freePort();
  const s = createKvStore({ id: `tcp://127.0.0.1:${port}`, dir, bootstrap: true, ...options });
  t.after(async () => {
    await s.stop().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await s.start();
  return { s, port };
}

test('KV: an oversized put is refused with EBADCOMMAND before it is proposed', async (t) => {
  const { s } = await store(t, { maxCommandBytes: 4096 });
  const client = createKvClient([s.id], { timeout: 3000 });
  t.after(() => client.close());
  await assert.rejects(client.put('big', 'x'.repeat(5000)), { code: 'EBADCOMMAND' });
  await assert.rejects(s.put('big', { nested: ['y'.repeat(5000)] }), { code: 'EBADCOMMAND' });
  await client.put('small', 'x'.repeat(1000));
  assert.equal(await client.get('big'), undefined, 'nothing was committed');
  // The default limit is 1 MiB.
  const { s: d } = await store(t);
  await assert.rejects(d.put('big', Buffer.alloc(600 * 1024)), { code: 'EBADCOMMAND' });
});

test('KV: a reference bomb sent as a put over a raw socket commits nothing', async (t) => {
  const { s, port } = await store(t);
  const raw = await Raw.connect(port);
  await handshake(raw, { id: 'kv-client-raw', metadata: { skiffKvClient: 1 } });
  // 18 levels: 2^18 leaves once expanded (before the fix, a committed entry of a few hundred KB).
  let v = ['x'];
  for (let i = 0; i < 18; i++) v = [v, v];
  raw.socket.write(frame(new Packr({ structuredClone: true, useRecords: false })
    .pack({ req: 1, type: REQUEST_TYPE, args: { op: 'put', key: 'bomb', value: v } })));
  assert.ok(await raw.closedWithin(3000));
  assert.equal(await s.get('bomb'), undefined);
});

test('KV client: never follows a redirect outside its own addresses, refuses pushed requests', async (t) => {
  // The attacker's sink: counts what arrives.
  const sink = await recordingServer(t, {});
  // A lying "store" that always names the sink as the leader, and pushes a request at its clients.
  const pushed = [];
  const liar = await recordingServer(t, {}, (type, args, cb) => {
    cb(Object.assign(new Error('not the leader'), { code: 'ENOTLEADER', leader: sink.id }));
  });
  const origin = liar.connections;
  const client = createKvClient([liar.id], { timeout: 1500, retryDelay: 20 });
  t.after(() => client.close());
  const put = client.put('secret', 'hunter2');
  await assert.rejects(put, { code: 'ENOTLEADER' });
  assert.equal(sink.handled.length, 0, 'nothing was sent to the address the liar named');
  assert.equal(sink.connections.length, 0, 'not even a connection');
  assert.equal(client.leader, null);
  // The liar asks the client something: it is answered with a refusal, not held.
  const conn = origin[0].conn;
  const reply = await new Promise((resolve) => conn.send('SkiffKv', { op: 'get', key: 'x' }, (err, res) => resolve({ err, res })));
  assert.equal(reply.err && reply.err.code, 'EREFUSED');
  pushed.push(reply);
});

test('KV client: 64 concurrent operations before it is connected raise no listener warning', async (t) => {
  const { s } = await store(t);
  const warnings = [];
  const onWarning = (w) => warnings.push(w);
  process.on('warning', onWarning);
  t.after(() => process.removeListener('warning', onWarning));
  const client = createKvClient([s.id]);
  t.after(() => client.close());
  await Promise.all(Array.from({ length: 64 }, (_, i) => client.put(`k${i}`, i)));
  await sleep(50);
  assert.deepEqual(warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message), []);
  assert.equal(await client.get('k63'), 63);
});

// ------------------------------------------------------------------ a 3-process cluster

async function cluster(t, options) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-security-cluster-'));
  const ports = [];
  while (ports.length < 3) {
    const p = await freePort();
    if (!ports.includes(p)) ports.push(p);
  }
  const ids = ports.map((p) => `tcp://127.0.0.1:${p}`);
  const members = [];
  t.after(async () => {
    await Promise.all(members.map((m) => m.stop().catch(() => {})));
    for (const m of members) if (!m.exited) m.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  for (let i = 2; i >= 0; i--) {
    const args = ['--id', ids[i], '--dir', dir, '--options', JSON.stringify(options)];
    if (i === 0) args.push('--bootstrap', '--peers', ids.slice(1).join(','));
    members.unshift(new Member(ids[i], args, { stdio: 'ignore' }));
  }
  await Promise.all(members.map((m) => m.waitEvent((msg) => msg.event === 'started', 20000, 'the member to start')));
  const { leader } = await waitForLeader(members);
  return { members, ports, leader, ids };
}

test('3 processes with a secret: raw sockets without it or with a wrong one are closed unheard', { timeout: 60000 }, async (t) => {
  const { members, ports, leader, ids } = await cluster(t, { secret: SECRET });
  await leader.request('put', { key: 'k', value: 1 });
  const term = (await leader.request('status')).term;
  for (const port of ports) {
    // No secret: a forged AppendEntries with a huge term right after the hello.
    const raw = await Raw.connect(port);
    raw.send({ hello: { id: 'tcp://127.0.0.1:1', metadata: {}, nonce: crypto.randomBytes(32) } });
    raw.send({ req: 1, type: 'RequestVote', args: { term: term + 100, candidateId: 'tcp://127.0.0.1:1', lastLogIndex: 1e6, lastLogTerm: term + 99 } });
    assert.ok(await raw.closedWithin(5000), `${port} closed the socket without the secret`);
    // A wrong secret.
    const wrong = await Raw.connect(port);
    await handshake(wrong, { secret: 'a wrong secret that is long enough' });
    wrong.send({ req: 1, type: 'RequestVote', args: { term: term + 100, candidateId: 'tcp://127.0.0.1:1', lastLogIndex: 1e6, lastLogTerm: term + 99 } });
    const answer = await wrong.next();
    assert.equal(answer && answer.refused && answer.refused.code, 'EAUTH');
    assert.ok(await wrong.closedWithin(5000), `${port} closed the socket with a wrong secret`);
  }
  // Nobody campaigned for the forged term; the cluster still works, clients need the secret too.
  const statuses = await Promise.all(members.map((m) => m.request('status')));
  for (const st of statuses) assert.ok(st.term < term + 100, `term ${st.term} was not taken from a stranger`);
  const r = await leader.request('client', { addresses: ids, ops: [{ op: 'get', key: 'k' }], clientOptions: { secret: SECRET } });
  assert.deepEqual(r.results, [1]);
  await assert.rejects(leader.request('client', { addresses: ids, ops: [{ op: 'get', key: 'k' }], clientOptions: { timeout: 1500 } }));
});

const certs = makeTestCerts();

test('3 processes with tls: a client certificate not signed by the ca is refused', { timeout: 60000, skip: certs ? false : 'openssl is not installed' }, async (t) => {
  const { ports, leader, ids } = await cluster(t, { tls: certs.member });
  await leader.request('put', { key: 'k', value: 2 });
  for (const port of ports) {
    // Control: a raw TLS socket with a certificate from the ca is welcomed.
    const member = new Raw(tls.connect({ host: '127.0.0.1', port, ...certs.member }));
    await once(member.socket, 'secureConnect');
    assert.ok((await handshake(member)).welcome, `${port} welcomes a member certificate`);
    member.destroy();
    // A certificate from another CA: the TLS handshake fails or the socket is closed unheard.
    const socket = tls.connect({ host: '127.0.0.1', port, key: certs.rogue.key, cert: certs.rogue.cert, ca: certs.member.ca });
    const raw = new Raw(socket);
    socket.once('secureConnect', () => raw.send({ hello: { id: 'tcp://127.0.0.1:1', metadata: {}, nonce: crypto.randomBytes(32) } }));
    assert.ok(await raw.closedWithin(5000), `${port} closed the connection`);
    assert.equal(raw.frames.length, 0, 'and answered nothing');
    // No client certificate at all.
    const bare = new Raw(tls.connect({ host: '127.0.0.1', port, ca: certs.member.ca }));
    assert.ok(await bare.closedWithin(5000));
    assert.equal(bare.frames.length, 0);
  }
  // A client with a certificate from the ca works.
  const r = await leader.request('client', { addresses: ids, ops: [{ op: 'get', key: 'k' }], clientOptions: { tls: certs.member } });
  assert.deepEqual(r.results, [2]);
});

test('security options and limits are validated', () => {
  assert.throws(() => createTcpTransport({ secret: 'short' }), /at least 16 bytes/);
  assert.throws(() => createTcpTransport({ secret: 42 }), TypeError);
  assert.throws(() => createTcpTransport({ tls: { key: 'k', cert: 'c' } }), /tls.ca/);
  assert.throws(() => createTcpTransport({ tls: { key: 'k', cert: 'c', ca: 'a', rejectUnauthorized: false } }), /unknown tls option/);
  assert.throws(() => createTcpTransport({ cluster: '' }), TypeError);
  assert.throws(() => createTcpTransport({ maxFrameSize: 1024, maxWriteBuffer: 1000 }), /maxWriteBuffer/);
  for (const key of ['maxInflight', 'idleTimeout', 'frameTimeout', 'maxConnections', 'maxHelloSize']) {
    assert.throws(() => createTcpTransport({ [key]: 0 }), TypeError, key);
  }
  assert.throws(() => createTcpTransport({ maxInflight: 1.5 }), /whole numbers/);
  const d = createTcpTransport().options;
  assert.deepEqual([d.secret, d.tls, d.cluster, d.maxHelloSize, d.maxWriteBuffer, d.maxInflight, d.idleTimeout,
    d.frameTimeout, d.maxConnections], [null, null, null, 65536, 64 * 1024 * 1024, 256, 60000, 30000, 1024]);
  assert.equal(createTcpTransport({ maxFrameSize: 64 * 1024 * 1024 }).options.maxWriteBuffer, 128 * 1024 * 1024 + 8);
  const dir = os.tmpdir();
  assert.throws(() => createKvStore({ id: 'tcp://127.0.0.1:1', dir, secret: 'short' }), { code: 'EINVALIDOPTIONS' });
  assert.throws(() => createKvStore({ id: 'tcp://127.0.0.1:1', dir, maxCommandBytes: -1 }), { code: 'EINVALIDOPTIONS' });
  assert.throws(() => createKvStore({ id: 'tcp://127.0.0.1:1', dir, secret: SECRET, transport: createTcpTransport() }),
    { code: 'EINVALIDOPTIONS' });
  assert.throws(() => createKvClient(['tcp://127.0.0.1:1'], { tls: {} }), { code: 'EINVALIDOPTIONS' });
});

test('tls: a dialler refuses a server whose certificate its ca did not sign', { skip: certs ? false : 'openssl is not installed' }, async (t) => {
  // The impostor accepts members' certificates, but shows one from another CA.
  const impostor = await recordingServer(t, { tls: { ...certs.rogue, ca: certs.member.ca } });
  const client = createTcpTransport({ tls: certs.member }).connect('me', {}, impostor.id, {});
  t.after(() => closeP(client));
  const [err] = await once(client, 'error');
  assert.ok(/certificate|self.signed|verify/i.test(`${err.code} ${err.message}`), `${err.code}: ${err.message}`);
  assert.equal(client.connected, false);
  assert.equal(impostor.connections.length, 0, 'no hello reached the impostor');
  // Control: the real thing connects.
  const real = await recordingServer(t, { tls: certs.member });
  const ok = createTcpTransport({ tls: certs.member }).connect('me', {}, real.id, {});
  t.after(() => closeP(ok));
  await once(ok, 'connected');
  assert.equal(await new Promise((resolve, reject) => ok.send('echo', 'over tls', (e, r) => (e ? reject(e) : resolve(r)))), 'over tls');
});
