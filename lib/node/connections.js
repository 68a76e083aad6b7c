'use strict';

// Connections: the transport's listener and the connections it hands over, the outgoing
// connection to each peer the engine wants (`connect`/`disconnect`/`send` ops), and peer requests
// waiting for the engine's answer (`reply` ops).

const { makeError, toError, CODES } = require('../errors');
const { callForIo } = require('./plugin-call');

const CONNECTION_EVENTS = Object.freeze(['connected', 'disconnected', 'connecting']);

// How long `stop()` waits for the transport's listener to confirm it closed.
const LISTENER_CLOSE_WAIT_MS = 2000;
// Peer requests waiting for the engine's answer (most wait for a save). A request past this is
// refused at once (EBUSY), so a flood of requests holds neither callbacks nor frames without bound.
const MAX_PENDING_REPLIES = 1024;

function isConnection(c) {
  return c !== null && typeof c === 'object' && typeof c.receive === 'function' &&
    typeof c.send === 'function';
}

class Connections {
  // `node`: the Node (transport, events, engine); `io`: the Dispatcher (run, complete).
  constructor(node, io) {
    this._node = node;
    this._io = io;
    this._replies = new Map(); // replyId -> reply(err, result)
    this._outgoing = new Map(); // peerId -> connection record (made by `connect` ops)
    this._wanted = new Map(); // peerId -> metadata, for reconnecting after a failed transport.connect
    this._incoming = new Set(); // connection records handed to us by the transport's listener
    this._server = null;
  }

  _warn(e) {
    this._node._warn(e);
  }

  // How many peer requests wait for the engine's answer (at most MAX_PENDING_REPLIES).
  get pendingReplies() {
    return this._replies.size;
  }

  // Starts the transport's listener (closing a previous one); `done(err)` once it listens.
  listen(options, done) {
    const node = this._node;
    if (this._server) this.closeServer(() => {});
    const onConnection = (...args) => this._onIncoming(args);
    try {
      this._server = node.options.transport.listen(node.id, options, onConnection, done) || null;
      // A listener that refuses a connection (bad secret, other cluster, a limit) says so here.
      if (this._server && typeof this._server.on === 'function') {
        this._server.on('warning', (err) => this._warn(err));
      }
    } catch (e) {
      this._server = null;
      process.nextTick(done, e);
    }
  }

  _hookConnection(conn, peerId, metadata, direction) {
    const node = this._node;
    const rec = {
      conn,
      direction,
      peer: { id: peerId, metadata },
      closing: false,
    };
    try {
      conn.receive((type, args, reply) => this._onPeerRequest(rec, type, args, reply));
    } catch (e) {
      this._warn(e);
    }
    if (typeof conn.on === 'function') {
      try {
        conn.on('error', (err) => {
          const e = toError(err);
          if (e.peer === undefined) {
            try { e.peer = peerId; } catch (_) { /* frozen error */ }
          }
          this._warn(e);
        });
        for (const ev of CONNECTION_EVENTS) {
          conn.on(ev, () => {
            if (!node._released) node.emit(ev, rec.peer);
          });
        }
        conn.on('close', () => {
          if (direction === 'in') this._incoming.delete(rec);
          node.emit('close', rec.peer);
        });
      } catch (e) {
        this._warn(e);
      }
    }
    return rec;
  }

  _onIncoming(args) {
    const node = this._node;
    const peerId = args[0];
    let metadata;
    let conn;
    if (isConnection(args[2])) {
      metadata = args[1];
      conn = args[2];
    } else if (isConnection(args[1])) {
      conn = args[1];
    } else {
      this._warn(makeError(
        'transport handed over a connection without send() and receive()', CODES.EBADCONNECTION));
      return;
    }
    if (node._stopping || node._released) {
      this._closeConnection(conn);
      return;
    }
    // The peer id is who speaks on this connection (the engine refuses messages naming
    // anyone else). A transport that gives none makes the connection speak for no one: its
    // requests are refused with EBADSENDER.
    const id = typeof peerId === 'string' && peerId !== '' ? peerId
      : typeof peerId === 'number' && Number.isFinite(peerId) ? String(peerId) : null;
    if (id === null) {
      this._warn(makeError('transport handed over a connection without a peer id: its requests will be refused',
        CODES.EBADSENDER));
    }
    if ((metadata === undefined || metadata === null) && id !== null) {
      const known = node.peerMeta(id);
      metadata = known === undefined ? null : known;
    }
    if (metadata === undefined) metadata = null;
    const rec = this._hookConnection(conn, id, metadata, 'in');
    this._incoming.add(rec);
    node._emitSafe('connected', rec.peer);
  }

  connect(peerId, metadata) {
    if (typeof peerId !== 'string') return;
    const old = this._outgoing.get(peerId);
    if (old) {
      this._outgoing.delete(peerId);
      this._closeRecord(old);
    }
    this._wanted.set(peerId, metadata);
    return this._openOutgoing(peerId, metadata);
  }

  _openOutgoing(peerId, metadata) {
    const node = this._node;
    let conn;
    try {
      conn = node.options.transport.connect(node.id, node.metadata, peerId, metadata);
    } catch (e) {
      const err = toError(e);
      this._warn(err);
      return null;
    }
    if (!isConnection(conn)) {
      this._warn(makeError(
        `transport.connect(${JSON.stringify(peerId)}) returned no connection with send() and receive()`,
        CODES.EBADCONNECTION));
      return null;
    }
    const rec = this._hookConnection(conn, peerId, metadata, 'out');
    this._outgoing.set(peerId, rec);
    if (conn.pipelining === true && node.options.transport.pipelining !== true && node._native) {
      // this connection, unlike its transport, pairs replies with requests
      this._io.run(node._native.pipelining(peerId));
    }
    node._emitSafe('connected', rec.peer);
    return rec;
  }

  disconnect(peerId) {
    this._wanted.delete(peerId);
    const rec = this._outgoing.get(peerId);
    if (!rec) return;
    this._outgoing.delete(peerId);
    this._closeRecord(rec);
  }

  _closeRecord(rec) {
    if (rec.closing) return;
    rec.closing = true;
    this._closeConnection(rec.conn);
  }

  _closeConnection(conn) {
    if (!conn || typeof conn.close !== 'function') return;
    try {
      conn.close((err) => {
        if (err) this._warn(err);
      });
    } catch (e) {
      this._warn(e);
    }
  }

  send(op) {
    let rec = this._outgoing.get(op.peer);
    if (!rec && this._wanted.has(op.peer)) {
      // transport.connect failed earlier: try again now that the engine needs the peer
      rec = this._openOutgoing(op.peer, this._wanted.get(op.peer));
    }
    if (!rec) {
      this._io.complete(op.io, { message: 'not connected', code: CODES.ENOTCONNECTED }, null);
      return;
    }
    callForIo((e) => this._warn(e), this._io.complete, op.io, 'connection.send', rec.conn, 'send', [op.type, op.args], true);
  }

  _onPeerRequest(rec, type, args, reply) {
    const node = this._node;
    let replied = false;
    const answer = (err, result) => {
      if (replied) return;
      replied = true;
      if (typeof reply !== 'function') return;
      try {
        if (err) reply(err);
        else reply(null, result);
      } catch (e) {
        this._warn(e);
      }
    };
    // A stopping leader still answers while it hands off (stop() waits for that): only a node
    // whose engine is gone refuses.
    if (node._released || !node._native) {
      answer(makeError('node is stopped', CODES.ESTOPPED));
      return;
    }
    let argsJson;
    try {
      argsJson = JSON.stringify(args === undefined ? null : args);
    } catch (e) {
      const err = makeError(
        `request ${String(type)} from ${rec.peer.id} has arguments JSON cannot carry: ${e && e.message}`,
        CODES.EBADARGS);
      this._warn(err);
      answer(err);
      return;
    }
    if (this._replies.size >= MAX_PENDING_REPLIES) {
      const err = makeError(
        `refused ${String(type)} from ${rec.peer.id}: ${MAX_PENDING_REPLIES} peer requests already wait for answers`,
        CODES.EBUSY);
      this._warn(err);
      answer(err);
      return;
    }
    const id = node._nextId();
    this._replies.set(id, answer);
    try {
      this._io.run(node._native.receive(id, String(type), argsJson === undefined ? 'null' : argsJson,
        rec.peer.id, node._apply.lastApplied));
    } catch (e) {
      this._replies.delete(id);
      answer(toError(e));
    }
  }

  reply(op) {
    const answer = this._replies.get(op.id);
    if (!answer) return;
    this._replies.delete(op.id);
    if (op.error) answer(toError(op.error));
    else answer(null, op.result === undefined ? null : op.result);
  }

  // ---------------------------------------------------------------- release

  closeServer(done) {
    const server = this._server;
    this._server = null;
    if (!server || typeof server.close !== 'function') {
      done();
      return;
    }
    let finished = false;
    const finish = (err) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      if (err) this._warn(err);
      done();
    };
    const timer = setTimeout(finish, LISTENER_CLOSE_WAIT_MS);
    if (timer.unref) timer.unref();
    try {
      if (server.close.length >= 1) server.close(finish);
      else {
        server.close();
        finish();
      }
    } catch (e) {
      finish(e);
    }
  }

  // The node stopped: refuse what waits for an answer and close every connection.
  releaseAll() {
    const replies = [...this._replies.values()];
    this._replies.clear();
    for (const answer of replies) answer(makeError('node is stopped', CODES.ESTOPPED));
    for (const rec of this._outgoing.values()) this._closeRecord(rec);
    this._outgoing.clear();
    this._wanted.clear();
    for (const rec of this._incoming) this._closeRecord(rec);
    this._incoming.clear();
  }
}

module.exports = { Connections };
