'use strict';

// In-memory transport and persistence plugins for the benchmark.
//
// They follow the plugin contract both engines use (/work/shared/skiff-compat.md: "Transport
// plugin", "Persistence plugin"), so one pair of objects drives skiff-algorithm 0.8.2 and skiff-rs
// alike. Like a real wire or disk, everything crossing them is JSON-cloned
// (JSON.parse(JSON.stringify(x))) and every callback is asynchronous (setImmediate). They carry no
// fault injection and no bookkeeping beyond what the engines need, so that what is measured is the
// engine. The state machine is a key/value map per node: `{op: 'put', key, value}` sets a key.

const { EventEmitter } = require('events');
const { Readable, Writable } = require('stream');

// What crosses the in-memory wire: a JSON copy. The test suite's fakes (__test__/helpers) use
// these two as well, so every in-memory transport copies values and errors the same way.
function clone(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

// An error as it arrives at the other end: a fresh Error with the message and the fields a
// skiff error carries (`code`, `leader`); no error (null, undefined, false) stays none.
function wireError(err) {
  if (err === null || err === undefined || err === false) return null;
  if (err instanceof Error || (typeof err === 'object' && typeof err.message === 'string')) {
    const e = new Error(err.message);
    if (err.code !== undefined) e.code = err.code;
    if (err.leader !== undefined) e.leader = err.leader;
    return e;
  }
  return new Error(String(err));
}

function coded(message, code) {
  const e = new Error(message);
  e.code = code;
  return e;
}

// ------------------------------------------------------------------------------------------------
// Transport: `hub.listen(id, options, onConnection, cb)` and `hub.connect(id, meta, peer, peerMeta)`.

class Connection extends EventEmitter {
  constructor(hub, local, localMeta, remote, remoteMeta, initiator) {
    super();
    this.hub = hub;
    this.local = local;
    this.localMeta = localMeta;
    this.remote = remote;
    this.remoteMeta = remoteMeta;
    this.initiator = initiator;
    this.other = null; // the connection's end at the remote node
    this.registration = null; // for accepted ends: the listener that accepted it
    this.handler = null;
    this.closed = false;
  }

  receive(fn) {
    this.handler = fn;
  }

  // The remote end; the initiating end (re)connects through the remote's listener when needed.
  _remoteEnd() {
    if (!this.initiator) return this.other && !this.other.closed ? this.other : null;
    const reg = this.hub.listeners.get(this.remote);
    if (!reg || reg.closed) return null;
    if (this.other && !this.other.closed && this.other.registration === reg) return this.other;
    const end = new Connection(this.hub, this.remote, this.remoteMeta, this.local, this.localMeta, false);
    end.other = this;
    end.registration = reg;
    reg.ends.add(end);
    this.other = end;
    reg.onConnection(this.local, clone(this.localMeta), end);
    return end;
  }

  send(type, args, cb) {
    const callback = typeof cb === 'function' ? cb : () => {};
    let payload;
    try {
      payload = clone(args);
    } catch (e) {
      setImmediate(callback, e);
      return;
    }
    setImmediate(() => {
      if (this.closed) {
        callback(coded('connection closed', 'ECONNRESET'));
        return;
      }
      const end = this._remoteEnd();
      if (!end || typeof end.handler !== 'function') {
        callback(coded(`cannot connect to ${this.remote}`, 'ECONNREFUSED'));
        return;
      }
      let replied = false;
      end.handler(type, payload, (err, result) => {
        if (replied) return;
        replied = true;
        let e;
        let r;
        try {
          e = wireError(err);
          r = clone(result);
        } catch (x) {
          e = x;
        }
        setImmediate(() => {
          if (!this.closed) callback(e, r);
        });
      });
    });
  }

  close(cb) {
    const done = typeof cb === 'function' ? cb : () => {};
    if (this.closed) {
      setImmediate(done);
      return;
    }
    this.closed = true;
    const other = this.other;
    if (this.registration) this.registration.ends.delete(this);
    if (this.initiator && other) other.closed = true;
    setImmediate(() => {
      this.emit('close');
      if (this.initiator && other) other.emit('close');
      done();
    });
  }
}

class Hub {
  constructor() {
    this.pipelining = true; // each reply goes to its own request's callback
    this.listeners = new Map(); // node id -> { onConnection, closed, ends }
    this.listen = this.listen.bind(this);
    this.connect = this.connect.bind(this);
  }

  listen(id, options, onConnection, cb) {
    const reg = { onConnection, closed: false, ends: new Set() };
    this.listeners.set(id, reg);
    if (typeof cb === 'function') setImmediate(cb, null);
    const hub = this;
    return {
      close(done) {
        reg.closed = true;
        if (hub.listeners.get(id) === reg) hub.listeners.delete(id);
        for (const end of [...reg.ends]) end.close();
        if (typeof done === 'function') setImmediate(done);
      },
    };
  }

  connect(id, meta, peer, peerMeta) {
    const conn = new Connection(this, id, meta, peer, peerMeta, true);
    // handshake: the remote hears of the connection soon, before the first message
    setImmediate(() => {
      if (!conn.closed) conn._remoteEnd();
    });
    return conn;
  }
}

// ------------------------------------------------------------------------------------------------
// Persistence: one object serves every node (each call names its node).

class Persistence {
  constructor() {
    this.meta = new Map(); // node id -> JSON text of the last saveMeta
    this.sm = new Map(); // node id -> { commitIndex, kv: Map }
    for (const m of ['loadMeta', 'saveMeta', 'applyCommand', 'lastAppliedCommitIndex',
      'saveCommitIndex', 'removeAllState', 'createReadStream', 'createWriteStream']) {
      this[m] = this[m].bind(this);
    }
  }

  _sm(id) {
    let s = this.sm.get(id);
    if (!s) {
      s = { commitIndex: 0, kv: new Map() };
      this.sm.set(id, s);
    }
    return s;
  }

  loadMeta(id, cb) {
    const text = this.meta.get(id);
    setImmediate(cb, null, text === undefined ? null : JSON.parse(text));
  }

  saveMeta(id, state, cb) {
    this.meta.set(id, JSON.stringify(state));
    setImmediate(cb, null);
  }

  applyCommand(id, index, command, cb) {
    const s = this._sm(id);
    const cmd = clone(command);
    if (index > s.commitIndex) {
      if (cmd && typeof cmd === 'object' && cmd.op === 'put') s.kv.set(cmd.key, cmd.value);
      s.commitIndex = index;
    }
    setImmediate(cb, null);
  }

  lastAppliedCommitIndex(id, cb) {
    setImmediate(cb, null, this._sm(id).commitIndex);
  }

  saveCommitIndex(id, index, cb) {
    this._sm(id).commitIndex = index;
    setImmediate(cb, null);
  }

  removeAllState(id, cb) {
    this.sm.set(id, { commitIndex: 0, kv: new Map() });
    setImmediate(cb, null);
  }

  createReadStream(id) {
    const records = [...this._sm(id).kv].map(([key, value]) => clone({ key, value }));
    return Readable.from(records, { objectMode: true });
  }

  createWriteStream(id) {
    const s = this._sm(id);
    return new Writable({
      objectMode: true,
      write(chunk, _enc, done) {
        const c = clone(chunk);
        if (c && typeof c === 'object' && 'key' in c) s.kv.set(c.key, c.value);
        setImmediate(done);
      },
    });
  }
}

module.exports = { Hub, Persistence, clone, wireError };
