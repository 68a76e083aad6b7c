'use strict';

// A TCP transport plugin for skiff-rs (the skiff-algorithm transport contract).
//
//   const createTcpTransport = require('skiff-rs/lib/transport/tcp');
//   const transport = createTcpTransport({ requestTimeout: 2000 });
//   Node({ id: 'tcp://127.0.0.1:9001', transport, ... });
//
// Node ids are addresses: `tcp://host:port` (also `tcp+msgpack://host:port`, `tcp://[::1]:port`).
//
// Wire format: every frame is a 4-byte big-endian payload length followed by a msgpack payload.
//   client -> server, first frame:  { hello: { id, metadata } }
//   request (either direction):     { req: <id>, type, args }
//   reply:                          { res: <id>, error: { message, code, ... } }  or  { res: <id>, result }
// A frame above `maxFrameSize`, or one that does not decode to one of these, closes that socket.

const net = require('node:net');
const { EventEmitter } = require('node:events');
const { Packr } = require('msgpackr');

const DEFAULTS = Object.freeze({
  maxFrameSize: 16 * 1024 * 1024, // bytes of payload
  requestTimeout: 2000, // ms from send() to reply, whatever the connection does
  connectTimeout: 2000, // ms one TCP connection attempt may take
  minReconnectDelay: 50, // ms, first back-off
  maxReconnectDelay: 2000, // ms, back-off cap
  maxQueue: 1000, // requests waiting for a connection; more fail at once with ENOTCONNECTED
  handshakeTimeout: 5000, // ms an incoming socket may take to say hello
  noDelay: true,
  keepAlive: 10000, // ms initial keep-alive delay, or false
});

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

function makeError(message, code, extra) {
  const err = new Error(message);
  if (code !== undefined) err.code = code;
  if (extra) Object.assign(err, extra);
  return err;
}

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

function errorToWire(err) {
  if (!err || (typeof err !== 'object' && typeof err !== 'function')) {
    return { message: String(err) };
  }
  const wire = { message: typeof err.message === 'string' ? err.message : String(err) };
  if (err.code !== undefined && err.code !== null) wire.code = String(err.code);
  // Carry extra scalar fields too (for example `leader` on ENOTLEADER).
  for (const key of Object.keys(err)) {
    if (key === 'message' || key === 'code' || key === 'stack' || key === '__proto__') continue;
    const v = err[key];
    if (v === null || typeof v === 'string' || typeof v === 'boolean' ||
        (typeof v === 'number' && Number.isFinite(v))) wire[key] = v;
  }
  return wire;
}

function wireToError(wire) {
  if (!wire || typeof wire !== 'object') return makeError(String(wire), 'EREMOTE');
  const err = new Error(typeof wire.message === 'string' ? wire.message : 'remote error');
  for (const key of Object.keys(wire)) {
    if (key === 'message' || key === 'stack' || key === '__proto__') continue;
    err[key] = wire[key];
  }
  return err;
}

function encodeFrame(message, maxFrameSize) {
  const payload = packr.pack(message);
  if (payload.length > maxFrameSize) {
    throw makeError(`message of ${payload.length} bytes exceeds the maximum frame size (${maxFrameSize})`, 'EFRAMETOOLARGE');
  }
  const header = Buffer.allocUnsafe(4);
  header.writeUInt32BE(payload.length, 0);
  return [header, payload];
}

function writeFrame(socket, frame) {
  socket.cork();
  socket.write(frame[0]);
  socket.write(frame[1]);
  socket.uncork();
}

// Splits a byte stream into frames; never holds more than one frame plus one socket chunk.
class FrameDecoder {
  constructor(maxFrameSize) {
    this.max = maxFrameSize;
    this.chunks = [];
    this.length = 0;
    this.need = -1; // payload length of the frame being assembled, -1 while reading the header
  }

  // Returns the decoded messages in `chunk`; throws on an oversized or undecodable frame.
  push(chunk) {
    this.chunks.push(chunk);
    this.length += chunk.length;
    const out = [];
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
      let msg;
      try {
        msg = packr.unpack(payload);
      } catch (e) {
        throw makeError(`undecodable frame: ${e && e.message}`, 'EBADFRAME');
      }
      out.push(msg);
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

// What both ends of a connection share: requests out, requests in, replies.
class Connection extends EventEmitter {
  constructor(opts) {
    super();
    this._opts = opts;
    this._socket = null;
    this._connected = false;
    this._closed = false;
    this._handler = null;
    this._backlog = []; // requests that arrived before receive() was called
    this._seq = 0;
    this._inflight = new Map(); // id -> request, written to the current socket
    this._queue = []; // requests waiting for a socket
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
      frame = encodeFrame({ req: id, type, args }, this._opts.maxFrameSize);
    } catch (e) {
      if (!e.code) e.code = 'EBADARGS';
      process.nextTick(done, e);
      return;
    }
    const request = { id, type, frame, done, timer: null, sent: false };
    request.timer = setTimeout(() => this._timeout(request), this._opts.requestTimeout);
    request.timer.unref();
    if (this._connected) {
      this._write(request);
    } else if (this._queue.length < this._opts.maxQueue) {
      this._queue.push(request);
    } else {
      clearTimeout(request.timer);
      process.nextTick(done, makeError('not connected (send queue is full)', 'ENOTCONNECTED'));
    }
  }

  receive(fn) {
    this._handler = typeof fn === 'function' ? fn : null;
    if (this._handler && this._backlog.length) {
      const backlog = this._backlog;
      this._backlog = [];
      for (const msg of backlog) this._onRequest(msg);
    }
  }

  _write(request) {
    request.sent = true;
    this._inflight.set(request.id, request);
    writeFrame(this._socket, request.frame);
    request.frame = null;
  }

  _timeout(request) {
    request.timer = null;
    if (request.sent) {
      this._inflight.delete(request.id);
      request.done(makeError(
        `request ${request.type} timed out after ${this._opts.requestTimeout} ms`, 'ETIMEDOUT'));
    } else {
      const i = this._queue.indexOf(request);
      if (i >= 0) this._queue.splice(i, 1);
      request.done(makeError(
        `not connected: request ${request.type} waited ${this._opts.requestTimeout} ms for a connection`,
        'ENOTCONNECTED'));
    }
  }

  _settle(request, err, result) {
    if (request.timer) clearTimeout(request.timer);
    request.timer = null;
    request.done(err, result);
  }

  // A socket is ready to carry requests (handshake written, if any).
  _up(socket) {
    this._socket = socket;
    this._connected = true;
    const queue = this._queue;
    this._queue = [];
    for (const request of queue) this._write(request);
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
    if (msg === null || typeof msg !== 'object') throw makeError('malformed message', 'EBADFRAME');
    if (msg.req !== undefined) {
      this._onRequest(msg);
    } else if (msg.res !== undefined) {
      const request = this._inflight.get(msg.res);
      if (!request) return; // late reply to a request that timed out
      this._inflight.delete(msg.res);
      if (msg.error !== undefined && msg.error !== null) this._settle(request, wireToError(msg.error));
      else this._settle(request, null, msg.result);
    } else {
      throw makeError('malformed message', 'EBADFRAME');
    }
  }

  _onRequest(msg) {
    if (!this._handler) {
      if (this._backlog.length < this._opts.maxQueue) this._backlog.push(msg);
      return;
    }
    const socket = this._socket;
    let replied = false;
    const reply = (err, result) => {
      if (replied) return;
      replied = true;
      // Only answer on the socket the request came on; a reconnect means the asker gave up.
      if (!socket || socket !== this._socket || socket.destroyed) return;
      let frame;
      try {
        frame = encodeFrame(err ? { res: msg.req, error: errorToWire(err) } : { res: msg.req, result },
          this._opts.maxFrameSize);
      } catch (e) {
        frame = encodeFrame({ res: msg.req, error: errorToWire(e) }, this._opts.maxFrameSize);
      }
      writeFrame(socket, frame);
    };
    try {
      this._handler(msg.type, msg.args, reply);
    } catch (e) {
      // A throwing handler answers with its error; it never takes the process down.
      reply(e);
      emitError(this, e);
    }
  }

  // Wires a socket's data and errors into this connection.
  _attach(socket, decoder, onMessage) {
    socket.on('data', (chunk) => {
      if (socket.destroyed) return;
      let messages;
      try {
        messages = decoder.push(chunk);
      } catch (e) {
        this._protocolError(socket, e);
        return;
      }
      for (const msg of messages) {
        if (socket.destroyed) return;
        try {
          onMessage(msg);
        } catch (e) {
          this._protocolError(socket, e);
          return;
        }
      }
    });
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
    this._hello = { hello: { id: localId, metadata: localMetadata === undefined ? null : localMetadata } };
    this._address = parseAddress(peerId);
    this._attempt = 0;
    this._reconnectTimer = null;
    this._closeCallbacks = [];
    process.nextTick(() => this._dial());
  }

  _dial() {
    if (this._closed) return;
    this._reconnectTimer = null;
    this.emit('connecting');
    if (this._closed) return;
    const socket = net.connect({ host: this._address.host, port: this._address.port });
    this._current = socket;
    socket.setTimeout(this._opts.connectTimeout, () => {
      socket.destroy(makeError('connect timed out', 'ETIMEDOUT'));
    });
    socket.on('error', () => { /* 'close' follows; transient network errors just mean reconnecting */ });
    socket.once('connect', () => {
      if (this._closed) {
        socket.destroy();
        return;
      }
      socket.setTimeout(0);
      if (this._opts.noDelay) socket.setNoDelay(true);
      if (this._opts.keepAlive) socket.setKeepAlive(true, this._opts.keepAlive);
      let frame;
      try {
        frame = encodeFrame(this._hello, this._opts.maxFrameSize);
      } catch (e) {
        socket.destroy();
        emitError(this, e);
        this.close();
        return;
      }
      writeFrame(socket, frame);
      this._attempt = 0;
      this._up(socket);
      this.emit('connected');
    });
    this._attach(socket, new FrameDecoder(this._opts.maxFrameSize), (msg) => this._onMessage(socket, msg));
    socket.once('close', () => {
      if (this._current === socket) this._current = null;
      const wasConnected = this._socket === socket ? this._down() : false;
      if (this._closed) {
        this._finishClose();
        return;
      }
      if (wasConnected) this.emit('disconnected');
      this._scheduleReconnect();
    });
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
    this._server = net.createServer((socket) => this._accept(socket, onConnection, opts));
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

  _accept(socket, onConnection, opts) {
    if (this._closed) {
      socket.destroy();
      return;
    }
    this._sockets.add(socket);
    socket.on('close', () => this._sockets.delete(socket));
    socket.on('error', () => { /* 'close' follows */ });
    if (opts.noDelay) socket.setNoDelay(true);
    if (opts.keepAlive) socket.setKeepAlive(true, opts.keepAlive);
    const decoder = new FrameDecoder(opts.maxFrameSize);
    const timer = setTimeout(() => socket.destroy(), opts.handshakeTimeout);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
    let conn = null;
    socket.on('data', (chunk) => {
      if (conn || socket.destroyed) return; // after the handshake the connection reads the socket
      let messages;
      try {
        messages = decoder.push(chunk);
      } catch (e) {
        socket.destroy();
        emitError(this, e);
        return;
      }
      if (!messages.length) return;
      const first = messages[0];
      const hello = first && typeof first === 'object' ? first.hello : undefined;
      if (!hello || typeof hello !== 'object' || typeof hello.id !== 'string') {
        socket.destroy();
        emitError(this, makeError('expected a hello frame', 'EBADFRAME'));
        return;
      }
      clearTimeout(timer);
      socket.removeAllListeners('data');
      conn = new ServerConnection(socket, hello.id, hello.metadata === undefined ? null : hello.metadata, opts);
      conn._attach(socket, decoder, (msg) => conn._onMessage(socket, msg));
      try {
        onConnection(hello.id, conn.metadata, conn);
      } catch (e) {
        process.nextTick(() => { throw e; });
      }
      // Frames that arrived with the hello.
      for (let i = 1; i < messages.length && !socket.destroyed; i++) {
        try {
          conn._onMessage(socket, messages[i]);
        } catch (e) {
          conn._protocolError(socket, e);
        }
      }
    });
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

function checkOptions(options) {
  const opts = { ...DEFAULTS };
  if (options === undefined || options === null) return opts;
  if (typeof options !== 'object') throw new TypeError('tcp transport options must be an object');
  for (const key of Object.keys(options)) {
    if (!(key in DEFAULTS)) throw new TypeError(`unknown tcp transport option ${JSON.stringify(key)}`);
    const v = options[key];
    if (v === undefined) continue;
    if (key === 'noDelay') {
      opts[key] = Boolean(v);
    } else if (key === 'keepAlive') {
      if (v === false) opts[key] = false;
      else if (typeof v === 'number' && v >= 0) opts[key] = v;
      else throw new TypeError('keepAlive must be false or a number of ms');
    } else {
      if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) {
        throw new TypeError(`tcp transport option ${key} must be a positive number`);
      }
      opts[key] = v;
    }
  }
  if (opts.maxFrameSize > 0xffffffff) throw new TypeError('maxFrameSize must fit in 32 bits');
  if (opts.maxReconnectDelay < opts.minReconnectDelay) {
    throw new TypeError('maxReconnectDelay must not be below minReconnectDelay');
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
      if (typeof onConnection !== 'function') throw new TypeError('listen needs an onConnection function');
      return new TcpServer(this, localNodeId, listenOptions, onConnection, cb);
    },
    connect(localNodeId, localMetadata, peerId, peerMetadata) { // eslint-disable-line no-unused-vars
      return new ClientConnection(localNodeId, localMetadata, peerId, opts);
    },
  };
}

createTcpTransport.createTcpTransport = createTcpTransport;
createTcpTransport.parseAddress = parseAddress;
createTcpTransport.DEFAULTS = DEFAULTS;
module.exports = createTcpTransport;
