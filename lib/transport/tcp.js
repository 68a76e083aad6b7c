'use strict';

// A TCP transport plugin for skiff-rs (the skiff-algorithm transport contract).
//
//   const createTcpTransport = require('skiff-rs/lib/transport/tcp');
//   const transport = createTcpTransport({ secret: process.env.SKIFF_SECRET, cluster: 'prod' });
//   Node({ id: 'tcp://127.0.0.1:9001', transport, ... });
//
// Node ids are addresses: `tcp://host:port` (also `tcp+msgpack://host:port`, `tcp://[::1]:port`).
//
// Wire format: every frame is a 4-byte big-endian payload length followed by a msgpack payload of
// plain maps (string keys), arrays, strings, numbers, booleans, nil and binary only: no extension
// types, so nothing in a frame can expand (references, records, bundled strings) or build objects
// other than those. A frame is checked byte by byte before it is decoded, and its shape before it
// is handed on.
//
//   client -> server:  { hello: { id, metadata, cluster, nonce } }          (nonce: 32 random bytes)
//   server -> client:  { welcome: { cluster, nonce, proof } }  or  { refused: { code, message } }
//   client -> server:  { auth: proof }                                      (only with `secret`)
//   then, either direction:
//     request:  { req: <id>, type, args }
//     reply:    { res: <id>, error: { message, code, ... } }  or  { res: <id>, result }
//     ping:     { ping: 1 }   (the dialling side, when it has sent nothing for a while)
//
// With `secret`, each side proves it knows the secret by an HMAC-SHA256 over both nonces, the
// client's id and the cluster id (the secret never goes on the wire; proofs are compared in
// constant time). The server proves first; it hands the connection to `onConnection` and reads
// any other frame only once the client's proof checked out. With `tls`, the connection is mutual
// TLS (node:tls): each side verifies the other's certificate against `ca`. With `cluster`, the
// hello and the welcome carry the cluster id and each side refuses the other's if it differs.
// A frame above the size limits, a malformed one, or a limit exceeded closes that socket.

const net = require('node:net');
const tls = require('node:tls');
const crypto = require('node:crypto');
const { EventEmitter } = require('node:events');
const { Packr } = require('msgpackr');
const { makeError, optionError, toWire, toError } = require('../errors');

const DEFAULTS = Object.freeze({
  maxFrameSize: 16 * 1024 * 1024, // bytes of payload
  requestTimeout: 2000, // ms from send() to reply, whatever the connection does
  connectTimeout: 2000, // ms one TCP connection attempt may take
  minReconnectDelay: 50, // ms, first back-off
  maxReconnectDelay: 2000, // ms, back-off cap
  maxQueue: 1000, // requests waiting for a connection or an in-flight slot; more fail at once
  handshakeTimeout: 5000, // ms a new socket may take to complete the hello (and TLS, and proofs)
  noDelay: true,
  keepAlive: 10000, // ms initial keep-alive delay, or false
  secret: null, // shared cluster secret (string or Buffer of at least 16 bytes), or null
  tls: null, // { key, cert, ca, [checkServerIdentity] } for mutual TLS, or null
  cluster: null, // cluster id carried in the handshake; a peer with another one is refused
  maxHelloSize: 64 * 1024, // bytes: largest handshake frame (hello with metadata, welcome, auth)
  maxWriteBuffer: null, // bytes queued on one socket before it is closed [64 MiB or 2 x maxFrameSize + 8]
  maxInflight: 256, // requests per connection being answered (incoming) or awaiting a reply (outgoing)
  idleTimeout: 60000, // ms an accepted connection may go without a complete frame (dialers ping)
  frameTimeout: 30000, // ms a frame may take to arrive once its first byte has
  maxConnections: 1024, // sockets one listener holds at once, handshakes included
});

// Fixed bounds that are not worth an option.
const MAX_DEPTH = 128; // nesting of maps and arrays in one frame (JSON parsers stop near there too)
const MAX_TYPE_LENGTH = 256; // characters of a request type
const MAX_ERROR_FIELDS = 32; // fields of an error carried in a reply
const NONCE_BYTES = 32;
const PROTOCOL_LABEL = 'skiff-tcp/2';

// Plain msgpack both ways: no records, no structured clone, undefined as nil. The byte check
// (`scanMsgpack`) refuses every extension type before msgpackr sees a frame.
const packr = new Packr({
  useRecords: false,
  structuredClone: false,
  moreTypes: false,
  bundleStrings: false,
  mapsAsObjects: true,
  encodeUndefinedAsNil: true,
  int64AsType: 'number',
});

// Calls a user callback; an exception it throws surfaces as an uncaught exception on a fresh
// stack (as EventEmitter would), without unwinding the transport's own bookkeeping.
function safeCall(fn, ...args) {
  try {
    fn(...args);
  } catch (e) {
    process.nextTick(() => { throw e; });
  }
}

function emitError(emitter, err) {
  if (emitter.listenerCount('error') > 0) {
    try {
      emitter.emit('error', err);
    } catch (e) {
      process.nextTick(() => { throw e; });
    }
  }
}

function parseAddress(id) {
  if (typeof id !== 'string') throw makeError(`node id must be a string like tcp://host:port, got ${typeof id}`, 'EINVALIDADDRESS');
  let url;
  try {
    url = new URL(id);
  } catch (_) {
    throw makeError(`node id ${JSON.stringify(id)} is not an address like tcp://host:port`, 'EINVALIDADDRESS');
  }
  if (url.protocol !== 'tcp:' && url.protocol !== 'tcp+msgpack:') {
    throw makeError(`node id ${JSON.stringify(id)}: expected the tcp:// scheme`, 'EINVALIDADDRESS');
  }
  let host = url.hostname;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  const port = Number(url.port);
  if (!host || !url.port || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw makeError(`node id ${JSON.stringify(id)}: expected tcp://host:port`, 'EINVALIDADDRESS');
  }
  return { host, port };
}

function badFrame(what) {
  return makeError(`malformed frame: ${what}`, 'EBADFRAME');
}

/**
 * Walks one msgpack value in `buf` without building anything and throws EBADFRAME unless it is
 * plain data: maps with string keys, arrays, strings, binary, numbers, booleans, nil; no
 * extension types; nested at most MAX_DEPTH deep; exactly filling `buf`. After this, decoding
 * allocates in proportion to the frame's bytes and nothing in it refers to anything else.
 */
function scanMsgpack(buf) {
  const end = buf.length;
  const left = []; // items still to read in each open container (a map's keys and values both count)
  const isMap = [];
  let depth = 0;
  let pos = 0;
  const need = (k) => {
    if (end - pos < k) throw badFrame('truncated');
  };
  for (;;) {
    let key = false;
    if (depth > 0) {
      key = isMap[depth - 1] && left[depth - 1] % 2 === 0;
      left[depth - 1]--;
    }
    need(1);
    const t = buf[pos++];
    if (key && !((t >= 0xa0 && t <= 0xbf) || t === 0xd9 || t === 0xda || t === 0xdb)) {
      throw badFrame('a map key that is not a string');
    }
    let n = 0; // items of a container
    let map = false;
    let skip = 0;
    if (t <= 0x7f || t >= 0xe0) {
      // fixint
    } else if (t <= 0x8f) {
      n = (t & 0x0f) * 2;
      map = true;
    } else if (t <= 0x9f) {
      n = t & 0x0f;
    } else if (t <= 0xbf) {
      skip = t & 0x1f;
    } else {
      switch (t) {
        case 0xc0: case 0xc2: case 0xc3: break; // nil, false, true
        case 0xc4: case 0xd9: need(1); skip = buf[pos]; pos += 1; break; // bin8, str8
        case 0xc5: case 0xda: need(2); skip = buf.readUInt16BE(pos); pos += 2; break; // bin16, str16
        case 0xc6: case 0xdb: need(4); skip = buf.readUInt32BE(pos); pos += 4; break; // bin32, str32
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xca: case 0xce: case 0xd2: skip = 4; break;
        case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
        case 0xdc: need(2); n = buf.readUInt16BE(pos); pos += 2; break; // array16
        case 0xdd: need(4); n = buf.readUInt32BE(pos); pos += 4; break; // array32
        case 0xde: need(2); n = buf.readUInt16BE(pos) * 2; pos += 2; map = true; break; // map16
        case 0xdf: need(4); n = buf.readUInt32BE(pos) * 2; pos += 4; map = true; break; // map32
        default:
          throw badFrame(`msgpack type 0x${t.toString(16)} (extensions are not accepted)`);
      }
    }
    if (skip) {
      need(skip);
      pos += skip;
    }
    if (n > 0) {
      if (n > end - pos) throw badFrame('truncated'); // every item takes at least one byte
      if (depth >= MAX_DEPTH) throw badFrame(`nested deeper than ${MAX_DEPTH}`);
      left[depth] = n;
      isMap[depth] = map;
      depth++;
      continue;
    }
    while (depth > 0 && left[depth - 1] === 0) depth--;
    if (depth === 0) break;
  }
  if (pos !== end) throw badFrame('trailing bytes');
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

function onlyKeys(msg, allowed) {
  for (const key of Object.keys(msg)) {
    if (!allowed.includes(key)) throw badFrame(`unexpected field ${JSON.stringify(key.slice(0, 64))}`);
  }
}

const REQUEST_KEYS = ['req', 'type', 'args'];
const REPLY_KEYS = ['res', 'result', 'error'];

// The shape of a frame after the handshake, checked before any of it is used or stringified.
// Returns 'req', 'res' or 'ping'.
function checkMessage(msg) {
  if (!isPlainObject(msg)) throw badFrame('not a map');
  if (msg.req !== undefined) {
    onlyKeys(msg, REQUEST_KEYS);
    if (!Number.isSafeInteger(msg.req) || msg.req < 0) throw badFrame('request id');
    if (typeof msg.type !== 'string' || msg.type.length > MAX_TYPE_LENGTH) throw badFrame('request type');
    return 'req';
  }
  if (msg.res !== undefined) {
    onlyKeys(msg, REPLY_KEYS);
    if (!Number.isSafeInteger(msg.res) || msg.res < 0) throw badFrame('reply id');
    const e = msg.error;
    if (e !== undefined && e !== null) {
      if (!isPlainObject(e)) throw badFrame('reply error');
      const keys = Object.keys(e);
      if (keys.length > MAX_ERROR_FIELDS) throw badFrame('reply error has too many fields');
      for (const k of keys) {
        const v = e[k];
        if (v !== null && typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
          throw badFrame('reply error fields must be scalars');
        }
      }
    }
    return 'res';
  }
  if (msg.ping !== undefined) {
    onlyKeys(msg, ['ping']);
    return 'ping';
  }
  throw badFrame('neither a request nor a reply');
}

function asBuffer(v, length) {
  if (!ArrayBuffer.isView(v) || v.byteLength !== length) return null;
  return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

// HMAC-SHA256 of everything both sides agreed on in this handshake, for one role.
function handshakeProof(secret, role, clientId, cluster, clientNonce, serverNonce) {
  return crypto.createHmac('sha256', secret)
    .update(JSON.stringify([PROTOCOL_LABEL, role, clientId, cluster === null ? '' : cluster,
      clientNonce.toString('hex'), serverNonce.toString('hex')]))
    .digest();
}

function sameProof(got, expected) {
  const buf = asBuffer(got, expected.length);
  return buf !== null && crypto.timingSafeEqual(buf, expected);
}

function encodeFrame(message, maxFrameSize) {
  let payload;
  try {
    payload = packr.pack(message);
    // The receiver refuses anything but plain data; refuse it here, where the caller hears why.
    scanMsgpack(payload);
  } catch (e) {
    throw makeError(`message cannot be sent: ${e && e.message}`, 'EBADARGS');
  }
  if (payload.length > maxFrameSize) {
    throw makeError(`message of ${payload.length} bytes exceeds the maximum frame size (${maxFrameSize})`, 'EFRAMETOOLARGE');
  }
  const header = Buffer.allocUnsafe(4);
  header.writeUInt32BE(payload.length, 0);
  return [header, payload];
}

// Splits a byte stream into frames; never holds more than one frame plus one socket chunk.
class FrameDecoder {
  constructor(maxFrameSize) {
    this.max = maxFrameSize; // raised from maxHelloSize to maxFrameSize once the handshake is over
    this.chunks = [];
    this.length = 0;
    this.need = -1; // payload length of the frame being assembled, -1 while reading the header
    this.startedAt = 0; // when the first byte of the incomplete frame arrived (while length > 0)
    this.lastFrameAt = Date.now(); // when the last frame was completed (or the decoder was made)
    this.error = null; // why the stream stopped making sense; set once
  }

  // Returns the messages completed by `chunk`. An oversized or undecodable frame sets `error`
  // (the messages before it are still returned); nothing is decoded after that.
  push(chunk) {
    const out = [];
    if (this.error) return out;
    const wasEmpty = this.length === 0;
    this.chunks.push(chunk);
    this.length += chunk.length;
    try {
      for (;;) {
        if (this.need < 0) {
          if (this.length < 4) break;
          const head = this._take(4);
          const n = head.readUInt32BE(0);
          if (n > this.max) {
            throw makeError(`frame of ${n} bytes exceeds the maximum frame size (${this.max})`, 'EFRAMETOOLARGE');
          }
          if (n === 0) throw makeError('empty frame', 'EBADFRAME');
          this.need = n;
        }
        if (this.length < this.need) break;
        const payload = this._take(this.need);
        this.need = -1;
        scanMsgpack(payload);
        try {
          out.push(packr.unpack(payload));
        } catch (e) {
          throw makeError(`undecodable frame: ${e && e.message}`, 'EBADFRAME');
        }
      }
    } catch (e) {
      this.error = e;
      this.chunks = [];
      this.length = 0;
      return out;
    }
    if (out.length > 0 || (wasEmpty && this.length > 0)) {
      const now = Date.now();
      if (out.length > 0) this.lastFrameAt = now;
      if (this.length > 0) this.startedAt = now;
    }
    return out;
  }

  _take(n) {
    const first = this.chunks[0];
    let result;
    if (first.length >= n) {
      result = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      result = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const c = this.chunks[0];
        const k = Math.min(c.length, n - filled);
        c.copy(result, filled, 0, k);
        filled += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.length -= n;
    return result;
  }
}

// Feeds a socket's bytes through `decoder` to `handle(msg)` (which may change as the handshake
// goes on); a decoding error or a throwing `handle` goes to `fail(err)`.
function readFrames(socket, decoder, handle, fail) {
  socket.on('data', (chunk) => {
    if (socket.destroyed) return;
    for (const msg of decoder.push(chunk)) {
      if (socket.destroyed) return;
      try {
        handle(msg);
      } catch (e) {
        fail(e);
        return;
      }
    }
    if (decoder.error && !socket.destroyed) fail(decoder.error);
  });
}

// What both ends of a connection share: requests out, requests in, replies, limits.
class Connection extends EventEmitter {
  constructor(opts) {
    super();
    this._opts = opts;
    this._socket = null;
    this._connected = false;
    this._closed = false;
    this._handler = null;
    this._backlog = []; // requests that arrived before receive() was called
    this._serving = 0; // requests received and not answered yet (backlog included)
    this._seq = 0;
    this._inflight = new Map(); // id -> request, written to the current socket
    this._queue = []; // requests waiting for a socket or an in-flight slot
    this._wrote = false; // something was written since the last ping tick
  }

  get connected() { return this._connected; }
  get closed() { return this._closed; }

  send(type, args, cb) {
    if (typeof args === 'function' && cb === undefined) {
      cb = args;
      args = undefined;
    }
    let called = false;
    const done = (err, result) => {
      if (called) return;
      called = true;
      if (typeof cb === 'function') safeCall(cb, err, result);
    };
    if (this._closed) {
      process.nextTick(done, makeError('connection closed', 'ECLOSED'));
      return;
    }
    const id = ++this._seq;
    let frame;
    try {
      frame = encodeFrame(args === undefined ? { req: id, type } : { req: id, type, args }, this._opts.maxFrameSize);
    } catch (e) {
      process.nextTick(done, e);
      return;
    }
    const request = { id, type, frame, done, timer: null, sent: false };
    if (this._connected && this._inflight.size < this._opts.maxInflight) {
      this._write(request);
    } else if (this._queue.length < this._opts.maxQueue) {
      this._queue.push(request);
    } else {
      process.nextTick(done, this._connected
        ? makeError(`${this._opts.maxQueue} requests already wait for a reply slot`, 'EBUSY')
        : makeError('not connected (send queue is full)', 'ENOTCONNECTED'));
      return;
    }
    request.timer = setTimeout(() => this._timeout(request), this._opts.requestTimeout);
    request.timer.unref();
  }

  receive(fn) {
    this._handler = typeof fn === 'function' ? fn : null;
    if (this._handler && this._backlog.length) {
      const backlog = this._backlog;
      this._backlog = [];
      for (const msg of backlog) this._dispatch(msg);
    }
  }

  _write(request) {
    request.sent = true;
    this._inflight.set(request.id, request);
    const frame = request.frame;
    request.frame = null;
    this._writeFrame(this._socket, frame);
  }

  // Writes one frame; a peer that lets more than `maxWriteBuffer` bytes pile up is dropped.
  _writeFrame(socket, frame) {
    this._wrote = true;
    socket.cork();
    socket.write(frame[0]);
    socket.write(frame[1]);
    socket.uncork();
    if (socket.writableLength > this._opts.maxWriteBuffer && !socket.destroyed) {
      this._protocolError(socket, makeError(
        `closed a connection whose peer does not read: ${socket.writableLength} bytes queued ` +
        `(maxWriteBuffer ${this._opts.maxWriteBuffer})`, 'EWRITEBUFFER'));
    }
  }

  // Requests waiting for a slot go out while there is one.
  _pump() {
    while (this._connected && this._queue.length && this._inflight.size < this._opts.maxInflight) {
      this._write(this._queue.shift());
      if (!this._connected) break; // the write closed the socket
    }
  }

  _timeout(request) {
    request.timer = null;
    if (request.sent) {
      this._inflight.delete(request.id);
      request.done(makeError(
        `request ${request.type} timed out after ${this._opts.requestTimeout} ms`, 'ETIMEDOUT'));
      this._pump();
    } else {
      const i = this._queue.indexOf(request);
      if (i >= 0) this._queue.splice(i, 1);
      request.done(this._connected
        ? makeError(`request ${request.type} waited ${this._opts.requestTimeout} ms for a reply slot`, 'ETIMEDOUT')
        : makeError(`not connected: request ${request.type} waited ${this._opts.requestTimeout} ms for a connection`,
          'ENOTCONNECTED'));
    }
  }

  _settle(request, err, result) {
    if (request.timer) clearTimeout(request.timer);
    request.timer = null;
    request.done(err, result);
  }

  // A socket is ready to carry requests (handshake over).
  _up(socket) {
    this._socket = socket;
    this._connected = true;
    this._pump();
  }

  // The current socket is gone: its in-flight requests can no longer be answered.
  _down(err) {
    const wasConnected = this._connected;
    this._connected = false;
    this._socket = null;
    const inflight = this._inflight;
    this._inflight = new Map();
    for (const request of inflight.values()) {
      this._settle(request, err || makeError('connection lost before the reply arrived', 'ECONNRESET'));
    }
    return wasConnected;
  }

  _failQueued(err) {
    const queue = this._queue;
    this._queue = [];
    for (const request of queue) this._settle(request, err);
  }

  _onMessage(socket, msg) {
    const kind = checkMessage(msg);
    if (kind === 'req') {
      this._onRequest(socket, msg);
    } else if (kind === 'res') {
      const request = this._inflight.get(msg.res);
      if (!request) return; // late reply to a request that timed out
      this._inflight.delete(msg.res);
      if (msg.error !== undefined && msg.error !== null) this._settle(request, toError(msg.error, 'EREMOTE'));
      else this._settle(request, null, msg.result);
      this._pump();
    }
  }

  _reply(socket, id, err, result) {
    // Only answer on the socket the request came on; a reconnect means the asker gave up.
    if (!socket || socket !== this._socket || socket.destroyed) return;
    let frame;
    try {
      frame = encodeFrame(err ? { res: id, error: toWire(err, MAX_ERROR_FIELDS) } : { res: id, result },
        this._opts.maxFrameSize);
    } catch (e) {
      frame = encodeFrame({ res: id, error: toWire(e, MAX_ERROR_FIELDS) }, this._opts.maxFrameSize);
    }
    this._writeFrame(socket, frame);
  }

  // Past `maxInflight` unanswered requests, a request is refused at once (and answered).
  _onRequest(socket, msg) {
    if (this._serving >= this._opts.maxInflight) {
      this._reply(socket, msg.req, makeError(
        `${this._serving} requests on this connection are still being answered (maxInflight)`, 'EBUSY'));
      return;
    }
    this._serving++;
    if (this._handler) this._dispatch(msg);
    else this._backlog.push(msg);
  }

  _dispatch(msg) {
    const socket = this._socket;
    let replied = false;
    const reply = (err, result) => {
      if (replied) return;
      replied = true;
      this._serving--;
      this._reply(socket, msg.req, err, result);
    };
    try {
      this._handler(msg.type, msg.args, reply);
    } catch (e) {
      // A throwing handler answers with its error; it never takes the process down.
      reply(e);
      emitError(this, e);
    }
  }

  _protocolError(socket, err) {
    socket.destroy();
    emitError(this, err);
  }
}

class ClientConnection extends Connection {
  constructor(localId, localMetadata, peerId, opts) {
    super(opts);
    this.id = peerId;
    this.localId = localId;
    this._metadata = localMetadata === undefined ? null : localMetadata;
    this._address = parseAddress(peerId);
    this._attempt = 0;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._closeCallbacks = [];
    process.nextTick(() => this._dial());
  }

  _dial() {
    if (this._closed) return;
    this._reconnectTimer = null;
    this.emit('connecting');
    if (this._closed) return;
    const opts = this._opts;
    const { host, port } = this._address;
    const socket = opts.tls
      ? tls.connect({
        host,
        port,
        key: opts.tls.key,
        cert: opts.tls.cert,
        ca: opts.tls.ca,
        servername: net.isIP(host) ? undefined : host,
        checkServerIdentity: opts.tls.checkServerIdentity || tls.checkServerIdentity,
      })
      : net.connect({ host, port });
    this._current = socket;
    socket.setTimeout(opts.connectTimeout, () => {
      socket.destroy(makeError('connect timed out', 'ETIMEDOUT'));
    });
    let reached = false; // TCP connected: failures from here on are worth reporting
    let handshake = null; // timer while waiting for the welcome
    const nonce = crypto.randomBytes(NONCE_BYTES);
    const decoder = new FrameDecoder(opts.maxHelloSize);
    const fail = (err) => {
      if (socket.destroyed) return;
      this._protocolError(socket, err);
    };
    socket.on('connect', () => { reached = true; });
    socket.on('error', (err) => {
      // Before TCP connects, errors just mean reconnecting; after, (TLS) they say why we failed.
      if (reached && !this._closed && this._socket !== socket) emitError(this, err);
    });
    socket.once(opts.tls ? 'secureConnect' : 'connect', () => {
      if (this._closed) {
        socket.destroy();
        return;
      }
      socket.setTimeout(0);
      if (opts.noDelay) socket.setNoDelay(true);
      if (opts.keepAlive) socket.setKeepAlive(true, opts.keepAlive);
      let frame;
      try {
        frame = encodeFrame({ hello: { id: this.localId, metadata: this._metadata, cluster: opts.cluster, nonce } },
          opts.maxHelloSize);
      } catch (e) {
        socket.destroy();
        emitError(this, e);
        this.close();
        return;
      }
      this._writeFrame(socket, frame);
      handshake = setTimeout(() => fail(makeError(
        `${this.id} did not complete the handshake within ${opts.handshakeTimeout} ms`, 'EHANDSHAKE')),
      opts.handshakeTimeout);
      handshake.unref();
    });
    let handle = (msg) => {
      if (!isPlainObject(msg)) throw badFrame('expected a welcome');
      if (msg.refused !== undefined) {
        const r = isPlainObject(msg.refused) ? msg.refused : {};
        throw makeError(`${this.id} refused the connection: ${typeof r.message === 'string' ? r.message : 'no reason'}`,
          typeof r.code === 'string' ? r.code : 'EREFUSED');
      }
      const w = msg.welcome;
      if (!isPlainObject(w)) throw badFrame('expected a welcome');
      const serverCluster = typeof w.cluster === 'string' ? w.cluster : null;
      if (opts.cluster !== null && serverCluster !== opts.cluster) {
        throw makeError(`${this.id} belongs to cluster ${JSON.stringify(serverCluster)}, not ` +
          `${JSON.stringify(opts.cluster)}`, 'ECLUSTER');
      }
      const serverNonce = asBuffer(w.nonce, NONCE_BYTES);
      if (!serverNonce) throw badFrame('welcome nonce');
      if (opts.secret) {
        const expected = handshakeProof(opts.secret, 'server', this.localId, opts.cluster, nonce, serverNonce);
        if (!sameProof(w.proof, expected)) {
          throw makeError(`${this.id} did not prove it knows the secret`, 'EAUTH');
        }
        const proof = handshakeProof(opts.secret, 'client', this.localId, opts.cluster, nonce, serverNonce);
        this._writeFrame(socket, encodeFrame({ auth: proof }, opts.maxHelloSize));
      } else if (w.proof !== undefined && w.proof !== null) {
        throw makeError(`${this.id} requires a shared secret (the transport's \`secret\` option)`, 'EAUTH');
      }
      clearTimeout(handshake);
      decoder.max = opts.maxFrameSize;
      handle = (m) => this._onMessage(socket, m);
      this._attempt = 0;
      this._up(socket);
      this._startPings();
      this.emit('connected');
    };
    readFrames(socket, decoder, (msg) => handle(msg), fail);
    socket.once('close', () => {
      if (handshake) clearTimeout(handshake);
      if (this._current === socket) this._current = null;
      const wasConnected = this._socket === socket ? this._down() : false;
      if (wasConnected) this._stopPings();
      if (this._closed) {
        this._finishClose();
        return;
      }
      if (wasConnected) this.emit('disconnected');
      this._scheduleReconnect();
    });
  }

  // The listening side closes connections that stay silent for its `idleTimeout`: say something
  // when there is nothing else to say.
  _startPings() {
    this._stopPings();
    this._wrote = false;
    this._pingTimer = setInterval(() => {
      if (!this._connected) return;
      if (!this._wrote) this._writeFrame(this._socket, encodeFrame({ ping: 1 }, this._opts.maxFrameSize));
      this._wrote = false;
    }, Math.max(1, Math.floor(this._opts.idleTimeout / 3)));
    this._pingTimer.unref();
  }

  _stopPings() {
    if (this._pingTimer) clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  _scheduleReconnect() {
    if (this._closed || this._reconnectTimer) return;
    const base = Math.min(this._opts.maxReconnectDelay,
      this._opts.minReconnectDelay * 2 ** Math.min(this._attempt, 30));
    this._attempt++;
    const delay = base / 2 + Math.random() * base / 2; // jittered in [base/2, base]
    // Referenced on purpose: an open connection wants to reconnect; close() clears it.
    this._reconnectTimer = setTimeout(() => this._dial(), delay);
  }

  close(cb) {
    if (typeof cb === 'function') this._closeCallbacks.push(cb);
    if (this._closed) {
      if (!this._current && this._closeCallbacks.length) this._finishClose();
      return;
    }
    this._closed = true;
    this._stopPings();
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    const err = makeError('connection closed', 'ECLOSED');
    const wasConnected = this._down(err);
    this._failQueued(err);
    if (wasConnected) this.emit('disconnected');
    if (this._current) this._current.destroy(); // its 'close' finishes
    else process.nextTick(() => this._finishClose());
  }

  _finishClose() {
    if (!this._closeEmitted) {
      this._closeEmitted = true;
      this.emit('close');
    }
    const callbacks = this._closeCallbacks;
    this._closeCallbacks = [];
    for (const cb of callbacks) safeCall(cb, null);
  }
}

class ServerConnection extends Connection {
  constructor(socket, peerId, metadata, opts) {
    super(opts);
    this.id = peerId;
    this.metadata = metadata;
    this._closeCallbacks = [];
    this._up(socket);
    socket.once('close', () => {
      this._closed = true;
      const err = makeError('connection closed', 'ECLOSED');
      this._down(err);
      this._failQueued(err);
      this.emit('disconnected');
      this.emit('close');
      const callbacks = this._closeCallbacks;
      this._closeCallbacks = [];
      for (const cb of callbacks) safeCall(cb, null);
    });
    this._sock = socket;
  }

  close(cb) {
    if (this._sock.destroyed && this._closed) {
      if (typeof cb === 'function') process.nextTick(safeCall, cb, null);
      return;
    }
    if (typeof cb === 'function') this._closeCallbacks.push(cb);
    this._sock.destroy();
  }
}

class TcpServer extends EventEmitter {
  constructor(transport, localId, options, onConnection, cb) {
    super();
    const opts = transport.options;
    let address;
    try {
      address = parseAddress(localId);
    } catch (e) {
      if (!options || options.port === undefined) throw e;
      address = { host: '127.0.0.1', port: 0 };
    }
    const host = options && options.host !== undefined ? options.host : address.host;
    const port = options && options.port !== undefined ? options.port : address.port;
    this.localId = localId;
    this._opts = opts;
    this._sockets = new Set();
    this._closed = false;
    let listening = false;
    let called = false;
    const done = (err) => {
      if (called) return;
      called = true;
      if (typeof cb === 'function') safeCall(cb, err || null);
      else if (err) emitError(this, err);
    };
    const accept = (socket) => this._accept(socket, onConnection);
    if (opts.tls) {
      this._server = tls.createServer({
        key: opts.tls.key,
        cert: opts.tls.cert,
        ca: opts.tls.ca,
        requestCert: true,
        rejectUnauthorized: true,
        handshakeTimeout: opts.handshakeTimeout,
      }, accept);
      this._server.on('tlsClientError', (err) => {
        this._warn(makeError(`refused a TLS connection: ${err && err.message}`, 'ETLS', { cause: err }));
      });
    } else {
      this._server = net.createServer(accept);
    }
    this._server.maxConnections = opts.maxConnections;
    this._server.on('drop', (data) => {
      this._warn(makeError(`refused a connection from ${data && data.remoteAddress}: ` +
        `${opts.maxConnections} connections are open (maxConnections)`, 'ECONNLIMIT'));
    });
    this._pending = true; // listen() in progress
    this._server.on('error', (err) => {
      if (!listening) {
        this._pending = false;
        done(err);
        this.emit('_settled');
      } else {
        emitError(this, err);
      }
    });
    this._server.listen({ host, port }, () => {
      listening = true;
      this._pending = false;
      if (this._closed) done(makeError('the server was closed before it was listening', 'ECLOSED'));
      else done(null);
      this.emit('_settled');
    });
  }

  address() {
    return this._server.address();
  }

  // Refused connections are reported as `warning` events on the server (the node passes them on).
  _warn(err) {
    if (this.listenerCount('warning') > 0) {
      try {
        this.emit('warning', err);
      } catch (e) {
        process.nextTick(() => { throw e; });
      }
    }
  }

  // Tells the peer why, then hangs up; nothing it sent after is read.
  _refuse(socket, code, message) {
    const err = makeError(message, code);
    try {
      this._writeRaw(socket, { refused: { code, message } });
    } catch (_) { /* nothing better to say */ }
    socket.end();
    setTimeout(() => socket.destroy(), 1000).unref();
    this._warn(err);
  }

  _writeRaw(socket, message) {
    const frame = encodeFrame(message, this._opts.maxHelloSize);
    socket.cork();
    socket.write(frame[0]);
    socket.write(frame[1]);
    socket.uncork();
  }

  _accept(socket, onConnection) {
    const opts = this._opts;
    if (this._closed) {
      socket.destroy();
      return;
    }
    this._sockets.add(socket);
    socket.on('close', () => this._sockets.delete(socket));
    socket.on('error', () => { /* 'close' follows */ });
    if (opts.noDelay) socket.setNoDelay(true);
    if (opts.keepAlive) socket.setKeepAlive(true, opts.keepAlive);
    const decoder = new FrameDecoder(opts.maxHelloSize);
    const timer = setTimeout(() => {
      socket.destroy();
      this._warn(makeError(`closed a connection from ${socket.remoteAddress} that did not complete ` +
        `the handshake within ${opts.handshakeTimeout} ms`, 'EHANDSHAKE'));
    }, opts.handshakeTimeout);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
    let hello = null;
    let conn = null;
    let serverNonce = null;
    const establish = () => {
      clearTimeout(timer);
      decoder.max = opts.maxFrameSize;
      conn = new ServerConnection(socket, hello.id, hello.metadata === undefined ? null : hello.metadata, opts);
      this._watch(socket, decoder, conn);
      handle = (msg) => conn._onMessage(socket, msg);
      try {
        onConnection(hello.id, conn.metadata, conn);
      } catch (e) {
        process.nextTick(() => { throw e; });
      }
    };
    const onAuth = (msg) => {
      handle = () => {}; // one proof per connection
      const expected = handshakeProof(opts.secret, 'client', hello.id, opts.cluster, hello.nonce, serverNonce);
      if (!isPlainObject(msg) || !sameProof(msg.auth, expected)) {
        this._refuse(socket, 'EAUTH', 'authentication failed');
        return;
      }
      establish();
    };
    let handle = (msg) => {
      handle = () => {};
      const h = isPlainObject(msg) ? msg.hello : undefined;
      const nonce = isPlainObject(h) ? asBuffer(h.nonce, NONCE_BYTES) : null;
      if (!isPlainObject(h) || typeof h.id !== 'string' || h.id === '' || !nonce ||
          (h.cluster !== undefined && h.cluster !== null && typeof h.cluster !== 'string')) {
        this._refuse(socket, 'EBADFRAME', 'expected a hello frame');
        return;
      }
      const cluster = typeof h.cluster === 'string' ? h.cluster : null;
      if (opts.cluster !== null && cluster !== opts.cluster) {
        this._refuse(socket, 'ECLUSTER', `this node belongs to cluster ${JSON.stringify(opts.cluster)}, ` +
          `not ${JSON.stringify(cluster)}`);
        return;
      }
      hello = { id: h.id, metadata: h.metadata, nonce };
      serverNonce = crypto.randomBytes(NONCE_BYTES);
      const proof = opts.secret
        ? handshakeProof(opts.secret, 'server', hello.id, opts.cluster, nonce, serverNonce) : null;
      this._writeRaw(socket, { welcome: { cluster: opts.cluster, nonce: serverNonce, proof } });
      if (opts.secret) handle = onAuth;
      else establish();
    };
    readFrames(socket, decoder, (msg) => handle(msg), (err) => {
      if (conn) {
        conn._protocolError(socket, err);
      } else {
        socket.destroy();
        this._warn(err);
      }
    });
  }

  // Closes an accepted connection that goes `idleTimeout` ms without a complete frame, or takes
  // more than `frameTimeout` ms over one frame.
  _watch(socket, decoder, conn) {
    const opts = this._opts;
    const timer = setInterval(() => {
      const now = Date.now();
      let why = null;
      if (decoder.length > 0 && now - decoder.startedAt > opts.frameTimeout) {
        why = `a frame took longer than ${opts.frameTimeout} ms (frameTimeout)`;
      } else if (decoder.length === 0 && now - decoder.lastFrameAt > opts.idleTimeout) {
        why = `no frame for ${opts.idleTimeout} ms (idleTimeout)`;
      }
      if (why) conn._protocolError(socket, makeError(`closed the connection from ${conn.id}: ${why}`, 'ETIMEDOUT'));
    }, Math.max(1, Math.floor(Math.min(opts.idleTimeout, opts.frameTimeout) / 4)));
    timer.unref();
    socket.once('close', () => clearInterval(timer));
  }

  close(cb) {
    this._closed = true;
    for (const socket of this._sockets) socket.destroy();
    if (this._pending) {
      this.once('_settled', () => this.close(cb));
      return;
    }
    if (!this._server.listening) {
      if (typeof cb === 'function') process.nextTick(safeCall, cb, null);
      return;
    }
    this._server.close(() => {
      if (typeof cb === 'function') safeCall(cb, null);
    });
  }
}

const NUMBER_OPTIONS = ['maxFrameSize', 'requestTimeout', 'connectTimeout', 'minReconnectDelay',
  'maxReconnectDelay', 'maxQueue', 'handshakeTimeout', 'maxHelloSize', 'maxWriteBuffer', 'maxInflight',
  'idleTimeout', 'frameTimeout', 'maxConnections'];
const TLS_KEYS = ['key', 'cert', 'ca', 'checkServerIdentity'];

function pemLike(v) {
  const one = (x) => typeof x === 'string' || Buffer.isBuffer(x);
  return one(v) || (Array.isArray(v) && v.length > 0 && v.every(one));
}

function checkTls(v) {
  if (v === null || typeof v !== 'object') throw optionError('tls must be an object { key, cert, ca }');
  for (const key of Object.keys(v)) {
    if (!TLS_KEYS.includes(key)) throw optionError(`unknown tls option ${JSON.stringify(key)}`);
  }
  for (const key of ['key', 'cert', 'ca']) {
    if (!pemLike(v[key])) throw optionError(`tls.${key} must be PEM text or a Buffer (or an array of them)`);
  }
  if (v.checkServerIdentity !== undefined && typeof v.checkServerIdentity !== 'function') {
    throw optionError('tls.checkServerIdentity must be a function (host, cert) => Error | undefined');
  }
  return Object.freeze({ ...v });
}

function checkOptions(options) {
  const opts = { ...DEFAULTS };
  if (options !== undefined && options !== null) {
    if (typeof options !== 'object') throw optionError('tcp transport options must be an object');
    for (const key of Object.keys(options)) {
      if (!(key in DEFAULTS)) throw optionError(`unknown tcp transport option ${JSON.stringify(key)}`);
      const v = options[key];
      if (v === undefined || (v === null && DEFAULTS[key] === null)) continue;
      if (key === 'noDelay') {
        opts[key] = Boolean(v);
      } else if (key === 'keepAlive') {
        if (v === false) opts[key] = false;
        else if (typeof v === 'number' && v >= 0) opts[key] = v;
        else throw optionError('keepAlive must be false or a number of ms');
      } else if (key === 'secret') {
        const buf = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.isBuffer(v) ? Buffer.from(v) : null;
        if (!buf || buf.length < 16) throw optionError('secret must be a string or Buffer of at least 16 bytes');
        opts[key] = buf;
      } else if (key === 'tls') {
        opts[key] = checkTls(v);
      } else if (key === 'cluster') {
        if (typeof v !== 'string' || v === '') throw optionError('cluster must be a non-empty string');
        opts[key] = v;
      } else if (NUMBER_OPTIONS.includes(key)) {
        if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) {
          throw optionError(`tcp transport option ${key} must be a positive number`);
        }
        opts[key] = v;
      }
    }
  }
  if (opts.maxFrameSize > 0xffffffff) throw optionError('maxFrameSize must fit in 32 bits');
  if (opts.maxReconnectDelay < opts.minReconnectDelay) {
    throw optionError('maxReconnectDelay must not be below minReconnectDelay');
  }
  if (opts.maxWriteBuffer === null) {
    opts.maxWriteBuffer = Math.max(64 * 1024 * 1024, 2 * opts.maxFrameSize + 8);
  } else if (opts.maxWriteBuffer < opts.maxFrameSize + 4) {
    throw optionError('maxWriteBuffer must hold at least one frame (maxFrameSize + 4)');
  }
  opts.maxHelloSize = Math.min(opts.maxHelloSize, opts.maxFrameSize);
  if (!Number.isInteger(opts.maxInflight) || !Number.isInteger(opts.maxConnections)) {
    throw optionError('maxInflight and maxConnections must be whole numbers');
  }
  return opts;
}

/**
 * createTcpTransport(options?) → { listen(localNodeId, options, onConnection, cb), connect(...) }
 */
function createTcpTransport(options) {
  const opts = Object.freeze(checkOptions(options));
  return {
    name: 'tcp',
    options: opts,
    // Every request carries an id and its reply comes back with it: several may be in flight.
    pipelining: true,
    listen(localNodeId, listenOptions, onConnection, cb) {
      if (typeof listenOptions === 'function' && typeof onConnection !== 'function') {
        cb = onConnection;
        onConnection = listenOptions;
        listenOptions = undefined;
      }
      if (typeof onConnection !== 'function') throw optionError('listen needs an onConnection function', 'EBADARGS');
      return new TcpServer(this, localNodeId, listenOptions, onConnection, cb);
    },
    connect(localNodeId, localMetadata, peerId, peerMetadata) { // eslint-disable-line no-unused-vars
      return new ClientConnection(localNodeId, localMetadata, peerId, opts);
    },
  };
}

createTcpTransport.createTcpTransport = createTcpTransport;
createTcpTransport.parseAddress = parseAddress;
createTcpTransport.scanMsgpack = scanMsgpack;
createTcpTransport.handshakeProof = handshakeProof; // the protocol's HMAC, for raw-socket tests
createTcpTransport.DEFAULTS = DEFAULTS;
module.exports = createTcpTransport;
