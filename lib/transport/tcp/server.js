'use strict';

// The listening side: accepts sockets (TCP or mutual TLS, at most `maxConnections`), runs the
// server's half of the handshake within `handshakeTimeout`, hands each established connection to
// `onConnection`, and closes the ones that go silent (`idleTimeout`) or stall mid-frame
// (`frameTimeout`). Refusals are reported as `warning` events.

const net = require('node:net');
const tls = require('node:tls');
const { EventEmitter } = require('node:events');
const { makeError } = require('../../errors');
const { safeCall, emitError, emitWarning } = require('./callbacks');
const { parseAddress } = require('./address');
const { encodeFrame, FrameDecoder, readFrames, writeFrame } = require('./frames');
const { newNonce, tlsServerOptions, readHello, welcomeMessage, checkAuth } = require('./handshake');
const { Connection } = require('./connection');

class ServerConnection extends Connection {
  constructor(socket, peerId, metadata, opts) {
    super(opts);
    this.id = peerId;
    this.metadata = metadata;
    this._up(socket);
    socket.once('close', () => {
      this._shutdown();
      this._finishClose();
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
      this._server = tls.createServer(tlsServerOptions(opts), accept);
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
    emitWarning(this, err);
  }

  // Tells the peer why, then hangs up; nothing it sent after is read.
  _refuse(socket, code, message) {
    const err = makeError(message, code);
    try {
      writeFrame(socket, encodeFrame({ refused: { code, message } }, this._opts.maxHelloSize));
    } catch (_) { /* nothing better to say */ }
    socket.end();
    setTimeout(() => socket.destroy(), 1000).unref();
    this._warn(err);
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
      conn = new ServerConnection(socket, hello.id, hello.metadata, opts);
      this._watch(socket, decoder, conn);
      handle = (msg) => conn._onMessage(socket, msg);
      safeCall(onConnection, hello.id, conn.metadata, conn);
    };
    const onAuth = (msg) => {
      handle = () => {}; // one proof per connection
      if (checkAuth(msg, opts, hello, serverNonce)) establish();
      else this._refuse(socket, 'EAUTH', 'authentication failed');
    };
    let handle = (msg) => {
      handle = () => {};
      try {
        hello = readHello(msg, opts);
      } catch (e) {
        this._refuse(socket, e.code, e.message);
        return;
      }
      serverNonce = newNonce();
      writeFrame(socket, encodeFrame(welcomeMessage(opts, hello, serverNonce), opts.maxHelloSize));
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

module.exports = { TcpServer };
