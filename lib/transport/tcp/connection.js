'use strict';

// One connection to a peer, what both ends share: requests out (ids, a bounded queue, at most
// `maxInflight` awaiting replies, each with its `requestTimeout`), requests in (at most
// `maxInflight` being answered, refused with EBUSY past that), replies matched by id, and the
// write-buffer limit. ClientConnection (./client.js) and ServerConnection (./server.js) add how
// the socket comes and goes.

const { EventEmitter } = require('node:events');
const { makeError, toWire, toError } = require('../../errors');
const { safeCall, emitError, callAll } = require('./callbacks');
const { encodeFrame, writeFrame } = require('./frames');
const { checkMessage, MAX_ERROR_FIELDS } = require('./messages');

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
    // The socket corked until the end of this tick, or null. Each cork is paired with exactly one
    // uncork at the end of the tick it was made in, whichever socket is current by then.
    this._corked = null;
    this._closeCallbacks = []; // close(cb) callbacks, called once the socket is gone
    this._closeEmitted = false;
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
  // Frames written in the same tick (the replies to one applied batch, a client's requests, a
  // node's messages to a peer) leave together in one system call: the socket stays corked until
  // the tick ends. The wait is the rest of the tick, tens of microseconds typically; in return a
  // store receives a client's requests together, so they share a batch (at 64 closed-loop KV
  // clients, 2.5 times fewer log entries per put than with a write per frame).
  _writeFrame(socket, frame) {
    this._wrote = true;
    if (this._corked !== socket) {
      this._corked = socket;
      socket.cork();
      process.nextTick(() => {
        if (this._corked === socket) this._corked = null;
        socket.uncork();
      });
    }
    writeFrame(socket, frame);
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

  // Closed for good: what is in flight or queued fails with ECLOSED, and 'disconnected' is
  // emitted when a socket was up.
  _shutdown() {
    this._closed = true;
    const err = makeError('connection closed', 'ECLOSED');
    const wasConnected = this._down(err);
    this._failQueued(err);
    if (wasConnected) this.emit('disconnected');
  }

  // The socket of a closed connection is gone: 'close' (once), then the close callbacks.
  _finishClose() {
    if (!this._closeEmitted) {
      this._closeEmitted = true;
      this.emit('close');
    }
    callAll(this._closeCallbacks);
  }

  _protocolError(socket, err) {
    socket.destroy();
    emitError(this, err);
  }
}

module.exports = { Connection };
