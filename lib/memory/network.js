'use strict';

// The in-memory transport with fault hooks (see lib/memory/index.js for the list of faults).

const { EventEmitter } = require('events');

const { clone, wireError, coded, injected, cyclic, Faults } = require('./common');

/** One end of a connection. The initiating end (re)connects through the remote's listener. */
class Endpoint extends EventEmitter {
  constructor(net, local, localMeta, remote, remoteMeta, initiator) {
    super();
    this.net = net;
    this.local = local;
    this.localMetadata = localMeta;
    this.remote = remote;
    this.metadata = remoteMeta;
    this.initiator = initiator;
    this.other = null; // the end at the remote side
    this.listener = null; // accepted ends: the listener registration that accepted it
    this.handler = null;
    this.closed = false;
    this.crashed = false; // closed by net.crash(): nothing more leaves it
    net.endpoints.add(this);
  }

  receive(fn) {
    this.handler = fn;
  }

  // The remote end; for the initiating end, (re)created through the remote's current listener
  // when needed (the remote restarted, or the handshake has not happened yet).
  _peerEnd() {
    if (!this.initiator) return this.other && !this.other.closed ? this.other : null;
    const net = this.net;
    const listener = net.listeners.get(this.remote);
    if (!listener || listener.closed) return null;
    if (this.other && !this.other.closed && this.other.listener === listener) return this.other;
    const end = new Endpoint(net, this.remote, this.metadata, this.local, this.localMetadata, false);
    end.other = this;
    end.listener = listener;
    listener.ends.add(end);
    this.other = end;
    try {
      listener.onConnection(this.local, clone(this.localMetadata), end);
    } catch (e) {
      net.stats.listenerErrors += 1;
      net.emit('listener error', e);
      return null;
    }
    return end;
  }

  // A message the network lost to a cut: in 'error' mode the sender hears of it on the next turn.
  _unreachable(answer) {
    if (this.net.partitionMode === 'error') {
      const e = coded(`${this.remote} is unreachable from ${this.local}`, 'EHOSTUNREACH');
      this.net._later(0, () => answer(e));
      return true;
    }
    return false;
  }

  send(type, args, cb) {
    const net = this.net;
    const callback = typeof cb === 'function' ? cb : () => {};
    const fault = net.faults.take('send', this.local);
    if (fault !== null) {
      if (fault === 'throw') throw injected(`send ${type}`);
      if (fault === 'never') return;
      if (fault === 'error' || fault === 'value' || fault === 'bad') {
        const v = fault === 'error' ? injected(`send ${type}`) : fault === 'value' ? 'send failed' : null;
        setImmediate(() => (fault === 'bad' ? callback(null, cyclic()) : callback(v)));
        return;
      }
    }
    if (this.closed) {
      net._later(0, () => callback(coded('connection closed', 'ECONNRESET')));
      return;
    }
    let payload;
    try {
      payload = clone(args);
    } catch (e) {
      setImmediate(callback, e);
      return;
    }
    if (net.onMessage) net.onMessage(this.local, this.remote, type, payload);
    let answered = false;
    const answer = (err, result) => {
      if (answered) return;
      answered = true;
      callback(err, result);
    };
    // The draws below (dup, then per copy: drop, delay, lag, refuse) keep their order: a seeded
    // chaos run replays them.
    const copies = net.rand() < net.dupRate ? 2 : 1;
    if (copies === 2) net.stats.duplicated += 1;
    net.stats.sent += 1;
    for (let i = 0; i < copies; i++) {
      net._transmit(this.local, this.remote, (ok) => {
        if (!ok) {
          if (!this._unreachable(answer) && net.rand() < net.refuseRate) {
            net._later(0, () => answer(coded(`cannot reach ${this.remote}`, 'ECONNREFUSED')));
          }
          return;
        }
        if (this.closed) {
          answer(coded('connection closed', 'ECONNRESET'));
          return;
        }
        const end = this._peerEnd();
        if (!end || typeof end.handler !== 'function') {
          answer(coded(`cannot connect to ${this.remote}`, 'ECONNREFUSED'));
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
          net._transmit(this.remote, this.local, (ok2) => {
            // a node that closed its end may still answer what it was asked (skiff-algorithm
            // does); a crashed one answers nothing
            if (this.closed || end.crashed) return;
            if (!ok2) {
              this._unreachable(answer);
              return;
            }
            net.stats.delivered += 1;
            answer(e2, r2);
          });
        };
        try {
          end.handler(type, copies === 1 && !net.onMessage ? payload : clone(payload), reply);
        } catch (e) {
          net.stats.handlerErrors += 1;
          net.emit('handler error', e);
        }
      });
    }
  }

  // Closing the initiating end closes the connection for good (both ends emit `close`). Closing
  // an accepted end (the remote node stopped) closes only that end: the initiating end emits
  // `disconnected` and reconnects on its next send, like a reconnecting network transport.
  close(cb) {
    const done = typeof cb === 'function' ? cb : () => {};
    const net = this.net;
    if (this.closed) {
      net._later(0, done);
      return;
    }
    const other = this.other;
    this._kill();
    if (this.initiator && other) other._kill();
    else if (other && other.other === this) {
      other.other = null;
      if (!other.closed) net._later(0, () => other.emit('disconnected'));
    }
    net._later(0, done);
  }

  // This end is gone, without a word to the other side (a crashed process, or part of close).
  _kill() {
    if (this.closed) return;
    this.closed = true;
    if (this.listener) this.listener.ends.delete(this);
    this.net.endpoints.delete(this);
    this.net._later(0, () => this.emit('close'));
  }
}

function runIfOpen(net, fn) {
  if (!net.closed) fn();
}

class MemoryNetwork extends EventEmitter {
  /**
   * @param {object} [options]
   * @param {() => number} [options.rand]   the random source (a seeded PRNG for replayable runs)
   * @param {'error'|'drop'} [options.partitionMode]
   * @param {number} [options.dropRate]
   * @param {number} [options.refuseRate]   share of messages lost to a cut that fail fast instead
   */
  constructor(options = {}) {
    super();
    this.rand = options.rand || Math.random;
    this.pipelining = true; // each reply goes to its own request's callback
    this.listeners = new Map(); // node id -> { id, onConnection, closed, ends }
    this.endpoints = new Set();
    this.cut = new Set(); // "from\0to": that direction loses everything
    this.isolated = new Set();
    this.down = new Set(); // crashed nodes
    this.partitionMode = options.partitionMode || 'error';
    this.dropRate = options.dropRate || 0;
    this.refuseRate = options.refuseRate || 0;
    this.dupRate = 0;
    this.delay = [0, 0];
    this.lagRate = 0;
    this.lagMax = 0;
    this.faults = new Faults();
    this.onMessage = null;
    this.timers = new Set();
    this.closed = false;
    this.stats = {
      sent: 0, delivered: 0, dropped: 0, blocked: 0, duplicated: 0, lagged: 0, connects: 0,
      handlerErrors: 0, listenerErrors: 0,
    };
    // plugin methods are used detached by some callers: bind them
    this.listen = this.listen.bind(this);
    this.connect = this.connect.bind(this);
  }

  // Runs fn after ms (next turn for 0), unless the network has been shut down by then.
  _later(ms, fn) {
    if (this.closed) return;
    if (ms <= 0) {
      setImmediate(runIfOpen, this, fn);
      return;
    }
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(t);
  }

  canTalk(from, to) {
    if (this.cut.size === 0 && this.isolated.size === 0 && this.down.size === 0) return true;
    if (this.down.has(from) || this.down.has(to)) return false;
    if (this.isolated.has(from) || this.isolated.has(to)) return false;
    return !this.cut.has(`${from}\u0000${to}`);
  }

  // Carries one message from `from` to `to`: deliver(true) after its delay if it arrives,
  // deliver(false) if a cut or a crash loses it (nothing at all for a random drop).
  _transmit(from, to, deliver) {
    if (!this.canTalk(from, to)) {
      this.stats.blocked += 1;
      deliver(false);
      return;
    }
    if (this.dropRate > 0 && this.rand() < this.dropRate) {
      this.stats.dropped += 1;
      return;
    }
    let ms = 0;
    const [lo, hi] = this.delay;
    if (hi > 0) ms = lo + this.rand() * (hi - lo);
    if (this.lagRate > 0 && this.rand() < this.lagRate) {
      ms += this.rand() * this.lagMax;
      this.stats.lagged += 1;
    }
    this._later(Math.round(ms), () => {
      // the link may have been cut (or the node crashed) while the message was on its way
      if (!this.canTalk(from, to)) {
        this.stats.blocked += 1;
        deliver(false);
        return;
      }
      deliver(true);
    });
  }

  // ---- plugin interface

  /** transport.listen(localNodeId, options, onConnection(peerId, peerMetadata, connection), [cb]) */
  listen(localId, options, onConnection, cb) {
    const fault = this.faults.take('listen', localId);
    if (fault === 'throw') throw injected('listen');
    const registration = { id: localId, onConnection, closed: false, ends: new Set() };
    if (fault !== 'error') {
      const old = this.listeners.get(localId);
      if (old) this._closeListener(old);
      this.listeners.set(localId, registration);
    }
    if (typeof cb === 'function') {
      const err = fault === 'error' ? injected('listen') : null;
      this._later(0, () => cb(err));
    }
    return {
      close: (done) => {
        this._closeListener(registration);
        if (typeof done === 'function') this._later(0, done);
      },
    };
  }

  _closeListener(registration) {
    registration.closed = true;
    if (this.listeners.get(registration.id) === registration) this.listeners.delete(registration.id);
    for (const end of [...registration.ends]) end.close();
  }

  /** transport.connect(localNodeId, localMetadata, peerId, peerMetadata) -> connection */
  connect(localId, localMeta, peerId, peerMeta) {
    const fault = this.faults.take('connect', localId);
    if (fault === 'throw') throw injected('connect');
    if (fault === 'never' || fault === 'bad') return undefined;
    this.stats.connects += 1;
    const end = new Endpoint(this, localId, localMeta, peerId, peerMeta, true);
    if (this.down.has(localId)) {
      end.closed = true; // a crashed instance connects to nothing
      return end;
    }
    // handshake: the remote learns about the connection soon, even before the first message
    this._later(0, () => {
      if (!end.closed && this.canTalk(localId, peerId)) end._peerEnd();
    });
    return end;
  }

  // ---- faults

  fail(nodeId, what, mode, times) {
    this.faults.add(what, mode, times, nodeId);
  }

  /** Cuts the direction from -> to (one way). */
  block(from, to) {
    this.cut.add(`${from}\u0000${to}`);
  }

  /**
   * partition(a, b): cuts a <-> b, each an id or an array of ids. partition(groups): cuts every
   * link between different groups (an array of arrays of ids). Both ways.
   */
  partition(a, b) {
    const groups = b === undefined ? a : [[].concat(a), [].concat(b)];
    for (let i = 0; i < groups.length; i++) {
      for (let j = 0; j < groups.length; j++) {
        if (i === j) continue;
        for (const x of groups[i]) for (const y of groups[j]) this.block(x, y);
      }
    }
  }

  isolate(id) {
    this.isolated.add(id);
  }

  /** Undoes cuts and isolation: all of them, or those involving `id`. Crashes stay. */
  heal(id) {
    if (id === undefined) {
      this.cut.clear();
      this.isolated.clear();
      return;
    }
    this.isolated.delete(id);
    for (const k of [...this.cut]) {
      const [x, y] = k.split('\u0000');
      if (x === id || y === id) this.cut.delete(k);
    }
  }

  /** No random drops, duplicates or delays. */
  calm() {
    this.dropRate = 0;
    this.dupRate = 0;
    this.delay = [0, 0];
    this.lagRate = 0;
    this.lagMax = 0;
  }

  /** The node's current instance is gone: no traffic, its ends and its listener are dead. */
  crash(id) {
    this.down.add(id);
    for (const end of [...this.endpoints]) {
      if (end.local !== id) continue;
      end.crashed = true;
      end._kill();
    }
    const registration = this.listeners.get(id);
    if (registration) this._closeListener(registration);
  }

  revive(id) {
    this.down.delete(id);
  }

  /** Open endpoints whose local side is `id` (to inject `error` events and the like). */
  endpointsOf(id) {
    return [...this.endpoints].filter((e) => e.local === id && !e.closed);
  }

  describe() {
    const cuts = [...this.cut].map((k) => k.replace('\u0000', '->'));
    return `cut [${cuts.join(' ')}] down [${[...this.down].join(' ')}] drop ${this.dropRate} ` +
      `dup ${this.dupRate} delay ${this.delay.map(Math.round).join('-')}ms lag ${this.lagRate}`;
  }

  /** Stops every timer; nothing is delivered or called back afterwards. */
  shutdown() {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const end of this.endpoints) end.closed = true;
    this.endpoints.clear();
  }
}

module.exports = { MemoryNetwork, Endpoint };
