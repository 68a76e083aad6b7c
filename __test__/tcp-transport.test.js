'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const crypto = require('node:crypto');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { once } = require('node:events');
const { Packr } = require('msgpackr');

const createTcpTransport = require('../lib/transport/tcp');
const { freePort } = require('./helpers/ports');

const packr = new Packr({ useRecords: false });

function listen(transport, id, onConnection, options) {
  return new Promise((resolve, reject) => {
    const server = transport.listen(id, options, onConnection, (err) => (err ? reject(err) : resolve(server)));
  });
}

function send(conn, type, args) {
  return new Promise((resolve, reject) => {
    conn.send(type, args, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

// The msgpack messages in a byte stream of length-prefixed frames (complete ones only).
function splitFrames(buf) {
  const out = [];
  let pos = 0;
  while (buf.length - pos >= 4) {
    const n = buf.readUInt32BE(pos);
    if (buf.length - pos - 4 < n) break;
    out.push(packr.unpack(buf.subarray(pos + 4, pos + 4 + n)));
    pos += 4 + n;
  }
  return out;
}

const closeP = (x) => new Promise((resolve) => x.close(() => resolve()));

function frame(payload) {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(payload.length, 0);
  return Buffer.concat([head, payload]);
}

// A server that echoes, fails on request, or never answers; remembers its connections.
async function echoServer(transport, id) {
  const seen = [];
  const server = await listen(transport, id, (peerId, metadata, conn) => {
    seen.push({ peerId, metadata, conn });
    conn.receive((type, args, reply) => {
      if (type === 'echo') reply(null, args);
      else if (type === 'fail') reply(Object.assign(new Error('nope'), { code: 'ENOPE', leader: 'x' }));
      else if (type === 'delay') setTimeout(() => reply(null, args), args.ms);
      else if (type === 'never') { /* no reply */ }
      else if (type === 'throw') throw new Error('handler threw');
      else reply(new Error(`unknown ${type}`));
    });
  });
  return { server, seen };
}

test('round trip of JSON and Buffer payloads, errors with codes, hello metadata', async (t) => {
  const transport = createTcpTransport();
  const port = await freePort();
  const id = `tcp://127.0.0.1:${port}`;
  const { server, seen } = await echoServer(transport, id);
  const conn = transport.connect('tcp://127.0.0.1:1', { zone: 'a' }, id, {});
  t.after(async () => { await closeP(conn); await closeP(server); });

  const json = { a: 1, b: [1, 2.5, 'x', null, true, { c: 'héllo ☃' }], big: 2 ** 53 - 1, neg: -7, e: {}, l: [] };
  assert.deepEqual(await send(conn, 'echo', json), json);
  assert.deepEqual(await send(conn, 'echo', 'a string'), 'a string');
  assert.deepEqual(await send(conn, 'echo', [1, 'two', [3]]), [1, 'two', [3]]);
  assert.equal(await send(conn, 'echo', null), null);
  const buf = Buffer.from([0, 1, 2, 255, 254]);
  const got = await send(conn, 'echo', { data: buf, nested: [buf] });
  assert.ok(Buffer.isBuffer(got.data), 'a Buffer comes back as a Buffer');
  assert.deepEqual(Buffer.from(got.data), buf);
  assert.ok(Buffer.isBuffer(got.nested[0]));
  const big = Buffer.alloc(3 * 1024 * 1024, 7); // several socket chunks per frame
  assert.ok((await send(conn, 'echo', big)).equals(big));

  await assert.rejects(send(conn, 'fail', {}), (err) => {
    assert.ok(err instanceof Error);
    assert.equal(err.message, 'nope');
    assert.equal(err.code, 'ENOPE');
    assert.equal(err.leader, 'x');
    return true;
  });
  await assert.rejects(send(conn, 'throw', {}), /handler threw/);

  assert.equal(seen.length, 1);
  assert.equal(seen[0].peerId, 'tcp://127.0.0.1:1');
  assert.deepEqual(seen[0].metadata, { zone: 'a' });

  // The server side can send requests too.
  conn.receive((type, args, reply) => reply(null, { type, args }));
  assert.deepEqual(await send(seen[0].conn, 'ping', [1]), { type: 'ping', args: [1] });
});

test('the README form onConnection(peerId, connection) works: connection is the third argument', async (t) => {
  const transport = createTcpTransport();
  const port = await freePort();
  const id = `tcp+msgpack://127.0.0.1:${port}`;
  const args = [];
  const server = await listen(transport, id, (...a) => {
    args.push(a);
    a[2].receive((type, x, reply) => reply(null, x));
  });
  const conn = transport.connect('me', undefined, id, null);
  t.after(async () => { await closeP(conn); await closeP(server); });
  assert.equal(await send(conn, 'x', 5), 5);
  assert.equal(args[0][0], 'me');
  assert.equal(args[0][1], null);
  assert.equal(typeof args[0][2].send, 'function');
});

test('concurrent requests are matched to their replies', async (t) => {
  const transport = createTcpTransport();
  const port = await freePort();
  const id = `tcp://127.0.0.1:${port}`;
  const { server } = await echoServer(transport, id);
  const conn = transport.connect('c', {}, id, {});
  t.after(async () => { await closeP(conn); await closeP(server); });
  const n = 500;
  const results = await Promise.all(Array.from({ length: n }, (_, i) =>
    send(conn, 'delay', { ms: Math.floor(Math.random() * 20), i })));
  results.forEach((r, i) => assert.equal(r.i, i));
});

test('frames written in one tick leave together: requests out, and the replies to them', async (t) => {
  const transport = createTcpTransport();
  const id = `tcp://127.0.0.1:${await freePort()}`;
  const { server } = await echoServer(transport, id);
  const conn = transport.connect('tcp://127.0.0.1:1', null, id, {});
  t.after(async () => { await closeP(conn); await closeP(server); });
  await send(conn, 'echo', 'warm up');
  // Counts the writes the sockets of this process hand to the operating system.
  const proto = net.Socket.prototype;
  const { _write: write, _writev: writev } = proto;
  let writes = 0;
  proto._write = function countedWrite(...args) { writes++; return write.apply(this, args); };
  proto._writev = function countedWritev(...args) { writes++; return writev.apply(this, args); };
  let results;
  try {
    results = await Promise.all(Array.from({ length: 50 }, (_, i) => send(conn, 'echo', i)));
  } finally {
    proto._write = write;
    proto._writev = writev;
  }
  assert.deepEqual(results, Array.from({ length: 50 }, (_, i) => i));
  // One write for the requests, and one for the replies to each chunk the server reads
  // (usually one, maybe a few).
  assert.ok(writes <= 6, `50 requests and their replies took ${writes} socket writes`);
});

test('reconnects after the server restarts; queued requests go out when connected', async (t) => {
  const transport = createTcpTransport({ minReconnectDelay: 20, maxReconnectDelay: 100 });
  const port = await freePort();
  const id = `tcp://127.0.0.1:${port}`;
  let { server } = await echoServer(transport, id);
  const conn = transport.connect('c', {}, id, {});
  const events = [];
  for (const ev of ['connecting', 'connected', 'disconnected', 'close']) conn.on(ev, () => events.push(ev));
  t.after(async () => { await closeP(conn); await closeP(server); });

  assert.equal(await send(conn, 'echo', 1), 1);
  // A request in flight when the server goes away fails (it cannot be answered any more).
  const inflight = send(conn, 'never', {});
  await closeP(server);
  await assert.rejects(inflight, { code: 'ECONNRESET' });
  if (conn.connected) await once(conn, 'disconnected');

  // Sent while disconnected: waits in the queue and goes out after reconnecting.
  const queued = send(conn, 'echo', 'queued');
  await new Promise((r) => setTimeout(r, 150)); // a few failed attempts
  ({ server } = await echoServer(transport, id));
  assert.equal(await queued, 'queued');
  assert.equal(await send(conn, 'echo', 2), 2);
  assert.ok(events.includes('disconnected'));
  assert.ok(events.filter((e) => e === 'connected').length >= 2, events.join(','));
  assert.ok(events.filter((e) => e === 'connecting').length >= 3, events.join(','));
});

test('request timeout (ETIMEDOUT) and no connection (ENOTCONNECTED); callbacks once', async (t) => {
  const transport = createTcpTransport({ requestTimeout: 150, maxQueue: 2 });
  const port = await freePort();
  const id = `tcp://127.0.0.1:${port}`;
  const { server } = await echoServer(transport, id);
  const conn = transport.connect('c', {}, id, {});
  t.after(async () => { await closeP(conn); await closeP(server); });
  let calls = 0;
  const started = Date.now();
  await assert.rejects(new Promise((resolve, reject) => conn.send('never', {}, (err) => {
    calls++;
    reject(err);
  })), { code: 'ETIMEDOUT' });
  assert.ok(Date.now() - started >= 140);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(calls, 1);

  // Nobody listens on this port: requests wait, then fail with ENOTCONNECTED; a full queue fails at once.
  const deadPort = await freePort();
  const dead = transport.connect('c', {}, `tcp://127.0.0.1:${deadPort}`, {});
  t.after(() => closeP(dead));
  const a = send(dead, 'echo', 1);
  const b = send(dead, 'echo', 2);
  const t0 = Date.now();
  await assert.rejects(send(dead, 'echo', 3), { code: 'ENOTCONNECTED' });
  assert.ok(Date.now() - t0 < 100, 'the third fails fast: the queue holds two');
  await assert.rejects(a, { code: 'ENOTCONNECTED' });
  await assert.rejects(b, { code: 'ENOTCONNECTED' });
});

test('oversized or garbage frames close that socket; the process and the server live on', async (t) => {
  const transport = createTcpTransport({ maxFrameSize: 1024 });
  const port = await freePort();
  const id = `tcp://127.0.0.1:${port}`;
  const { server, seen } = await echoServer(transport, id);
  const serverErrors = [];
  server.on('warning', (e) => serverErrors.push(e));
  t.after(() => closeP(server));

  async function rawSession(bytes) {
    const sock = net.connect(port, '127.0.0.1');
    sock.on('error', () => {});
    await once(sock, 'connect');
    const received = [];
    sock.on('data', (d) => received.push(d));
    for (const b of bytes) {
      if (typeof b === 'function') await b(received);
      else sock.write(b);
    }
    const timer = setTimeout(() => sock.destroy(new Error('socket was not closed by the server')), 2000);
    await once(sock, 'close');
    clearTimeout(timer);
    return Buffer.concat(received);
  }
  const hello = frame(packr.pack({ hello: { id: 'raw', metadata: {}, nonce: crypto.randomBytes(32) } }));

  // Oversized length prefix before the hello.
  await rawSession([Buffer.from([0x7f, 0xff, 0xff, 0xff])]);
  // Garbage instead of a hello.
  await rawSession([frame(Buffer.from([0xc1, 0xc1, 0xc1]))]);
  // A hello, then an undecodable frame.
  const errorsBefore = seen.length;
  await rawSession([hello, frame(Buffer.from([0xc1]))]);
  assert.equal(seen.length, errorsBefore + 1);
  // A hello, then a valid request, then an oversized frame: the request is answered first.
  const waitForReply = async (received) => {
    while (splitFrames(Buffer.concat(received)).length < 2) await new Promise((r) => setTimeout(r, 5));
  };
  const out = await rawSession([hello, frame(packr.pack({ req: 1, type: 'echo', args: 'hi' })),
    waitForReply, frame(Buffer.alloc(2000))]);
  const [welcome, reply] = splitFrames(out);
  assert.ok(welcome.welcome, 'the server answers the hello with a welcome');
  assert.deepEqual(reply, { res: 1, result: 'hi' });
  // A hello, then a decodable frame that is not a message.
  await rawSession([hello, frame(packr.pack(42))]);
  assert.ok(serverErrors.length >= 2, 'protocol errors reach the listener when there is one');

  // The server still serves well-behaved clients.
  const conn = transport.connect('c', {}, id, {});
  t.after(() => closeP(conn));
  assert.equal(await send(conn, 'echo', 'ok'), 'ok');
  // A request too large to send fails with a code instead of being written.
  await assert.rejects(send(conn, 'echo', Buffer.alloc(5000)), { code: 'EFRAMETOOLARGE' });
  assert.equal(await send(conn, 'echo', 'still ok'), 'still ok');
});

test('a client receiving garbage drops the socket, emits error only to listeners, and reconnects', async (t) => {
  const transport = createTcpTransport({ minReconnectDelay: 10, maxReconnectDelay: 50 });
  const port = await freePort();
  let sessions = 0;
  const raw = net.createServer((sock) => {
    sessions++;
    sock.on('error', () => {});
    sock.resume(); // read (and drop) the hello, so the socket sees the client hang up
    sock.write(frame(Buffer.from([0xc1, 0x00])));
  });
  await new Promise((r) => raw.listen(port, '127.0.0.1', r));
  t.after(() => new Promise((r) => raw.close(r)));
  const quiet = transport.connect('c', {}, `tcp://127.0.0.1:${port}`, {}); // no error listener: no crash
  const loud = transport.connect('c', {}, `tcp://127.0.0.1:${port}`, {});
  const [err] = await once(loud, 'error');
  assert.equal(err.code, 'EBADFRAME');
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(sessions >= 3, `reconnected (${sessions} sessions)`);
  await closeP(quiet);
  await closeP(loud);
});

test('close() fails pending requests with ECLOSED, stops reconnecting, calls back once', async (t) => {
  const transport = createTcpTransport({ requestTimeout: 5000 });
  const port = await freePort();
  const id = `tcp://127.0.0.1:${port}`;
  const { server, seen } = await echoServer(transport, id);
  t.after(() => closeP(server));
  const conn = transport.connect('c', {}, id, {});
  assert.equal(await send(conn, 'echo', 1), 1);
  const events = [];
  for (const ev of ['connecting', 'connected', 'disconnected', 'close']) conn.on(ev, () => events.push(ev));
  const pending = send(conn, 'never', {});
  let closeCalls = 0;
  const closed = new Promise((resolve) => conn.close(() => { closeCalls++; resolve(); }));
  await assert.rejects(pending, { code: 'ECLOSED' });
  await closed;
  await assert.rejects(send(conn, 'echo', 1), { code: 'ECLOSED' });
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(events, ['disconnected', 'close']);
  assert.equal(closeCalls, 1);
  await closeP(conn); // closing twice is fine
  // The server side saw the connection go away.
  assert.equal(seen[0].conn.closed, true);
  await assert.rejects(send(seen[0].conn, 'x', 1), { code: 'ECLOSED' });
});

test('after close() nothing keeps the process alive (child process exits on its own)', async () => {
  const script = `
    const createTcpTransport = require(${JSON.stringify(path.join(__dirname, '..', 'lib', 'transport', 'tcp.js'))});
    const net = require('net');
    const transport = createTcpTransport({ requestTimeout: 60000, minReconnectDelay: 20, maxReconnectDelay: 40 });
    const probe = net.createServer();
    probe.listen(0, '127.0.0.1', () => {
      const port = probe.address().port;
      probe.close(() => {
        const id = 'tcp://127.0.0.1:' + port;
        const server = transport.listen(id, {}, (peer, meta, conn) => {
          conn.receive((type, args, reply) => { if (type === 'echo') reply(null, args); });
        }, (err) => {
          if (err) throw err;
          const conn = transport.connect('child', {}, id, {});
          // A peer that is not there: reconnecting with back-off until closed.
          const dead = transport.connect('child', {}, 'tcp://127.0.0.1:1', {});
          dead.send('echo', 1, (e) => console.log('dead:' + (e && e.code)));
          conn.send('echo', 'hi', (e, r) => {
            console.log('echo:' + r);
            conn.send('never', {}, (e2) => console.log('pending:' + (e2 && e2.code)));
            setTimeout(() => {
              conn.close(); dead.close(); server.close(() => console.log('server closed'));
            }, 100);
          });
        });
      });
    });
  `;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
  const [code, signal] = await once(child, 'exit');
  clearTimeout(timer);
  assert.equal(signal, null, `the child had to be killed: handles were left open\n${stdout}\n${stderr}`);
  assert.equal(code, 0, stderr);
  assert.match(stdout, /echo:hi/);
  assert.match(stdout, /pending:ECLOSED/);
  assert.match(stdout, /dead:ECLOSED/);
  assert.match(stdout, /server closed/);
});

test('parseAddress and option checks', () => {
  assert.deepEqual(createTcpTransport.parseAddress('tcp://127.0.0.1:9001'), { host: '127.0.0.1', port: 9001 });
  assert.deepEqual(createTcpTransport.parseAddress('tcp://[::1]:9001'), { host: '::1', port: 9001 });
  assert.deepEqual(createTcpTransport.parseAddress('tcp+msgpack://localhost:1'), { host: 'localhost', port: 1 });
  assert.throws(() => createTcpTransport.parseAddress('http://x:1'), { code: 'EINVALIDADDRESS' });
  assert.throws(() => createTcpTransport.parseAddress('tcp://x'), { code: 'EINVALIDADDRESS' });
  assert.throws(() => createTcpTransport.parseAddress('node-a'), { code: 'EINVALIDADDRESS' });
  assert.throws(() => createTcpTransport({ requestTimeout: -1 }), TypeError);
  assert.throws(() => createTcpTransport({ bogus: 1 }), TypeError);
  assert.equal(createTcpTransport.createTcpTransport, createTcpTransport);
});

test('listen: options {host, port} override the id; failure reaches the callback', async (t) => {
  const transport = createTcpTransport();
  const server = await listen(transport, 'tcp://127.0.0.1:1', () => {}, { host: '127.0.0.1', port: 0 });
  t.after(() => closeP(server));
  const { port } = server.address();
  assert.ok(port > 0);
  await assert.rejects(listen(transport, `tcp://127.0.0.1:${port}`, () => {}), { code: 'EADDRINUSE' });
});

test('a server closed before it is listening releases its port and calls back', async () => {
  const transport = createTcpTransport();
  const port = await freePort();
  const id = `tcp://127.0.0.1:${port}`;
  let listenErr;
  const server = transport.listen(id, {}, () => {}, (err) => { listenErr = err; });
  await closeP(server);
  assert.equal(listenErr && listenErr.code, 'ECLOSED');
  const again = await listen(transport, id, () => {});
  await closeP(again);
});
