'use strict';

// In-memory transport and persistence plugins for tests.
//
// They follow the plugin contract real plugins implement (docs: /work/shared/skiff-compat.md,
// "Transport plugin" and "Persistence plugin"), so the same objects drive both skiff-algorithm
// 0.8.2 and skiff-rs. Everything crossing them is JSON-cloned, as a real wire or disk would, and
// every callback is asynchronous.
//
// Fault controls:
//   hub.partition(a, b)      messages between a and b (ids or arrays of ids) fail
//   hub.isolate(id)          messages to and from id fail
//   hub.heal([id])           undo partitions/isolation (all, or those involving id)
//   hub.dropRate = 0.1       silently drop that share of requests and replies (never called back)
//   hub.partitionMode        'error' (default: the send fails fast) or 'drop' (never called back)
//   hub.fail(id, 'connect' | 'send' | 'listen', mode, times)    misbehave on the next calls
//   persistence.fail(method, mode, times, [nodeId])              likewise for persistence methods
// where mode is one of:
//   'throw'  throw synchronously            'error'  call back with an Error (code EINJECTED)
//   'value'  call back with a non-Error     'twice'  do the work, call back twice
//   'never'  do nothing, never call back    'bad'    call back with a result JSON cannot carry

const { EventEmitter } = require('events');
const { Readable, Writable } = require('stream');

const { clone, wireError } = require('../../bench/plugins');

function injected(what) {
  const e = new Error(`injected failure: ${what}`);
  e.code = 'EINJECTED';
  return e;
}

function cyclic() {
  const o = { note: 'cannot be JSON' };
  o.self = o;
  return o;
}

// Fault bookkeeping shared by Hub and Persistence: `faults` is a list of
// { key, nodeId, mode, times }, consumed in order.
class Faults {
  constructor() {
    this.list = [];
    this.hits = [];
  }

  add(key, mode, times, nodeId) {
    this.list.push({ key, mode, times: times === undefined ? 1 : times, nodeId });
  }

  take(key, nodeId) {
    for (let i = 0; i < this.list.length; i++) {
      const f = this.list[i];
      if (f.key !== key) continue;
      if (f.nodeId !== undefined && f.nodeId !== nodeId) continue;
      f.times -= 1;
      if (f.times <= 0) this.list.splice(i, 1);
      this.hits.push({ key, nodeId, mode: f.mode });
      return f.mode;
    }
    return null;
  }

  clear() {
    this.list = [];
  }
}

// ------------------------------------------------------------------------------------------------
// Transport

class Endpoint extends EventEmitter {
  constructor(hub, local, localMeta, remote, remoteMeta, initiator) {
    super();
    this.hub = hub;
    this.local = local;
    this.localMetadata = localMeta;
    this.remote = remote;
    this.metadata = remoteMeta;
    this.initiator = initiator;
    this.other = null; // the endpoint at the remote side
    this.listener = null; // for accepted endpoints: the listener registration that accepted it
    this.handler = null;
    this.closed = false;
    hub.endpoints.add(this);
  }

  receive(fn) {
    this.handler = fn;
  }

  // For the initiating end: the remote's accepted endpoint, (re)created through the remote's
  // current listener when needed (the remote restarted, or the handshake has not happened yet).
  _peerEnd() {
    if (!this.initiator) return this.other && !this.other.closed ? this.other : null;
    const listener = this.hub.listeners.get(this.remote);
    if (!listener || listener.closed) return null;
    if (this.other && !this.other.closed && this.other.listener === listener) return this.other;
    const end = new Endpoint(this.hub, this.remote, this.metadata, this.local, this.localMetadata, false);
    end.other = this;
    end.listener = listener;
    listener.ends.add(end);
    this.other = end;
    try {
      listener.onConnection(this.local, clone(this.localMetadata), end);
    } catch (e) {
      this.hub.emit('listener error', e);
      return null;
    }
    return end;
  }

  // Whether the network loses a message between the two ends now, a request or its reply: a
  // partition (in 'error' mode it also fails `callback`) or a random drop.
  _lost(callback) {
    const hub = this.hub;
    if (!hub.canTalk(this.local, this.remote)) {
      hub.stats.blocked += 1;
      if (hub.partitionMode === 'error') {
        const e = new Error(`${this.remote} is unreachable from ${this.local}`);
        e.code = 'EHOSTUNREACH';
        callback(e);
      }
      return true;
    }
    if (hub.dropRate > 0 && Math.random() < hub.dropRate) {
      hub.stats.dropped += 1;
      return true;
    }
    return false;
  }

  send(type, args, cb) {
    const hub = this.hub;
    const callback = typeof cb === 'function' ? cb : () => {};
    const fault = hub.faults.take('send', this.local);
    if (fault === 'throw') throw injected(`send ${type}`);
    if (fault === 'never') return;
    if (fault === 'error' || fault === 'value' || fault === 'bad') {
      const v = fault === 'error' ? injected(`send ${type}`) : fault === 'value' ? 'send failed' : null;
      setImmediate(() => (fault === 'bad' ? callback(null, cyclic()) : callback(v)));
      return;
    }
    let payload;
    try {
      payload = clone(args);
    } catch (e) {
      setImmediate(callback, e);
      return;
    }
    hub.stats.sent += 1;
    setImmediate(() => {
      if (this.closed) {
        const e = new Error('connection closed');
        e.code = 'ECONNRESET';
        callback(e);
        return;
      }
      if (this._lost(callback)) return;
      const end = this._peerEnd();
      if (!end || typeof end.handler !== 'function') {
        const e = new Error(`cannot connect to ${this.remote}`);
        e.code = 'ECONNREFUSED';
        callback(e);
        return;
      }
      let replied = false;
      const reply = (err, result) => {
        if (replied) return;
        replied = true;
        let e2;
        let r2;
        try {
          e2 = wireError(err);
          r2 = clone(result);
        } catch (e) {
          e2 = e;
          r2 = undefined;
        }
        setImmediate(() => {
          if (this.closed) return;
          if (this._lost(callback)) return;
          hub.stats.delivered += 1;
          callback(e2, r2);
        });
      };
      end.handler(type, payload, reply);
    });
  }

  // Closing the initiating end closes the connection for good (both ends emit `close`). Closing
  // an accepted end (the remote node stopped) closes only that end: the initiating end emits
  // `disconnected` and reconnects on its next send, like a reconnecting network transport.
  close(cb) {
    const done = typeof cb === 'function' ? cb : () => {};
    if (this.closed) {
      setImmediate(done);
      return;
    }
    this.closed = true;
    const other = this.other;
    if (this.listener) this.listener.ends.delete(this);
    if (this.initiator && other) other.closed = true;
    if (!this.initiator && other && other.other === this) other.other = null;
    setImmediate(() => {
      this.hub.endpoints.delete(this);
      this.emit('close');
      if (other && this.initiator) {
        if (other.listener) other.listener.ends.delete(other);
        this.hub.endpoints.delete(other);
        other.emit('close');
      } else if (other && !other.closed) {
        other.emit('disconnected');
      }
      done();
    });
  }
}

class Hub extends EventEmitter {
  constructor(options = {}) {
    super();
    this.listeners = new Map(); // node id -> { onConnection, closed, ends }
    this.endpoints = new Set();
    this.blocked = new Set(); // "a\0b" pairs, both orders
    this.isolated = new Set();
    this.dropRate = options.dropRate || 0;
    this.partitionMode = options.partitionMode || 'error';
    this.faults = new Faults();
    this.stats = { sent: 0, delivered: 0, dropped: 0, blocked: 0, connects: 0 };
    this.pipelining = true; // each reply goes to its own request's callback
    // plugin methods are used detached by some callers: bind them
    this.listen = this.listen.bind(this);
    this.connect = this.connect.bind(this);
  }

  // transport.listen(localNodeId, options, onConnection(peerId, peerMetadata, connection), [cb])
  listen(localId, options, onConnection, cb) {
    const fault = this.faults.take('listen', localId);
    if (fault === 'throw') throw injected('listen');
    const registration = { id: localId, onConnection, closed: false, ends: new Set() };
    if (fault !== 'error') this.listeners.set(localId, registration);
    if (typeof cb === 'function') setImmediate(cb, fault === 'error' ? injected('listen') : null);
    const hub = this;
    return {
      close(done) {
        registration.closed = true;
        if (hub.listeners.get(localId) === registration) hub.listeners.delete(localId);
        for (const end of [...registration.ends]) end.close();
        if (typeof done === 'function') setImmediate(done);
      },
    };
  }

  // transport.connect(localNodeId, localMetadata, peerId, peerMetadata) → connection
  connect(localId, localMeta, peerId, peerMeta) {
    const fault = this.faults.take('connect', localId);
    if (fault === 'throw') throw injected('connect');
    if (fault === 'never' || fault === 'bad') return undefined;
    this.stats.connects += 1;
    const end = new Endpoint(this, localId, localMeta, peerId, peerMeta, true);
    // handshake: the remote learns about the connection soon, even before the first message
    setImmediate(() => {
      if (!end.closed && this.canTalk(localId, peerId)) end._peerEnd();
    });
    return end;
  }

  fail(nodeId, what, mode, times) {
    this.faults.add(what, mode, times, nodeId);
  }

  static key(a, b) {
    return `${a}\u0000${b}`;
  }

  partition(a, b) {
    const as = Array.isArray(a) ? a : [a];
    const bs = Array.isArray(b) ? b : [b];
    for (const x of as) {
      for (const y of bs) {
        this.blocked.add(Hub.key(x, y));
        this.blocked.add(Hub.key(y, x));
      }
    }
  }

  isolate(id) {
    this.isolated.add(id);
  }

  heal(id) {
    if (id === undefined) {
      this.blocked.clear();
      this.isolated.clear();
      return;
    }
    this.isolated.delete(id);
    for (const k of [...this.blocked]) {
      const [x, y] = k.split('\u0000');
      if (x === id || y === id) this.blocked.delete(k);
    }
  }

  canTalk(a, b) {
    if (this.isolated.has(a) || this.isolated.has(b)) return false;
    return !this.blocked.has(Hub.key(a, b));
  }

  /** Open endpoints whose local side is `id` (to inject `error` events and the like). */
  endpointsOf(id) {
    return [...this.endpoints].filter((e) => e.local === id && !e.closed);
  }
}

// ------------------------------------------------------------------------------------------------
// Persistence

class Persistence extends EventEmitter {
  constructor() {
    super();
    this.setMaxListeners(Infinity);
    // store.meta[id]: JSON text of the last saveMeta; store.commands[id]: applied [{index, command}]
    // store.commitIndex[id]: last applied or saved commit index
    this.store = { meta: {}, commands: {}, commitIndex: {} };
    this.faults = new Faults();
    this.delays = []; // { method, ms, nodeId }
    this.stats = { reapplied: 0, applied: 0, saves: 0 };
    for (const m of ['loadMeta', 'saveMeta', 'applyCommand', 'lastAppliedCommitIndex',
      'saveCommitIndex', 'removeAllState', 'createReadStream', 'createWriteStream']) {
      this[m] = this[m].bind(this);
    }
  }

  fail(method, mode, times, nodeId) {
    this.faults.add(method, mode, times, nodeId);
  }

  /** Calls of `method` (for `nodeId`, or all nodes) call back after `ms` instead of at once. */
  delay(method, ms, nodeId) {
    this.delays.push({ method, ms, nodeId });
  }

  _delayOf(method, nodeId) {
    const d = this.delays.find((x) => x.method === method && (x.nodeId === undefined || x.nodeId === nodeId));
    return d ? d.ms : 0;
  }

  // Runs `work()` then calls back `cb(null, result)` according to the injected fault, if any.
  _run(method, nodeId, cb, work) {
    const fault = this.faults.take(method, nodeId);
    if (fault === 'throw') throw injected(method);
    if (fault === 'never') return;
    if (fault === 'error') {
      setImmediate(cb, injected(method));
      return;
    }
    if (fault === 'value') {
      setImmediate(cb, `${method} failed (a string, not an Error)`);
      return;
    }
    if (fault === 'bad') {
      setImmediate(cb, null, cyclic());
      return;
    }
    const finish = () => {
      let result;
      try {
        result = work();
      } catch (e) {
        cb(e);
        return;
      }
      cb(null, result);
      if (fault === 'twice') cb(null, result);
    };
    const ms = this._delayOf(method, nodeId);
    if (ms > 0) setTimeout(finish, ms);
    else setImmediate(finish);
  }

  loadMeta(nodeId, cb) {
    this._run('loadMeta', nodeId, cb, () => {
      const json = this.store.meta[nodeId];
      return json === undefined ? null : JSON.parse(json);
    });
  }

  saveMeta(nodeId, state, cb) {
    this._run('saveMeta', nodeId, cb, () => {
      this.store.meta[nodeId] = JSON.stringify(state);
      this.stats.saves += 1;
      return undefined;
    });
  }

  applyCommand(nodeId, commitIndex, command, cb) {
    this._run('applyCommand', nodeId, cb, () => {
      const current = this.store.commitIndex[nodeId] || 0;
      if (commitIndex <= current) {
        this.stats.reapplied += 1;
        return undefined;
      }
      if (!this.store.commands[nodeId]) this.store.commands[nodeId] = [];
      this.store.commands[nodeId].push({ index: commitIndex, command });
      this.store.commitIndex[nodeId] = commitIndex;
      this.stats.applied += 1;
      this.emit('applied', nodeId, commitIndex, command);
      return undefined;
    });
  }

  lastAppliedCommitIndex(nodeId, cb) {
    this._run('lastAppliedCommitIndex', nodeId, cb, () => this.store.commitIndex[nodeId] || 0);
  }

  saveCommitIndex(nodeId, commitIndex, cb) {
    this._run('saveCommitIndex', nodeId, cb, () => {
      this.store.commitIndex[nodeId] = commitIndex;
      this.emit('commit index', nodeId, commitIndex);
      return undefined;
    });
  }

  removeAllState(nodeId, cb) {
    this._run('removeAllState', nodeId, cb, () => {
      this.store.commands[nodeId] = [];
      this.store.commitIndex[nodeId] = 0;
      return undefined;
    });
  }

  createReadStream(nodeId) {
    const records = (this.store.commands[nodeId] || []).map((r) => clone(r));
    return Readable.from(records, { objectMode: true });
  }

  createWriteStream(nodeId) {
    const self = this;
    return new Writable({
      objectMode: true,
      write(chunk, _enc, done) {
        if (!self.store.commands[nodeId]) self.store.commands[nodeId] = [];
        self.store.commands[nodeId].push(clone(chunk));
        setImmediate(done);
      },
    });
  }

  // ---- inspection helpers for tests

  /** Commands applied on `nodeId`, in order. */
  commands(nodeId) {
    return (this.store.commands[nodeId] || []).map((r) => r.command);
  }

  /** Indexes applied on `nodeId`, in order. */
  indexes(nodeId) {
    return (this.store.commands[nodeId] || []).map((r) => r.index);
  }

  /** The state last given to saveMeta by `nodeId` (parsed), or null. */
  meta(nodeId) {
    const json = this.store.meta[nodeId];
    return json === undefined ? null : JSON.parse(json);
  }
}

module.exports = { Hub, Persistence, Endpoint, clone };
