'use strict';

// A fault-injecting in-memory transport for the chaos test, following the transport plugin contract
// (/work/shared/skiff-compat.md, "Transport plugin"):
//
//   net.listen(localId, options, onConnection(peerId, peerMetadata, connection), [cb])
//   net.connect(localId, localMetadata, peerId, peerMetadata) -> connection
//   connection: EventEmitter with send(type, args, cb), receive(fn(type, args, reply)), close([cb])
//
// Every request and every reply is a message that crosses a directed link and may be:
//   - blocked:   net.block(from, to) cuts one direction only; net.partition(groups) cuts between
//                groups both ways. A blocked message is lost (never called back), as on a real
//                network; `net.refuseRate` makes a share of them fail fast with ECONNREFUSED instead.
//   - dropped:   net.dropRate
//   - duplicated: net.dupRate (the receiver handles the request twice; the sender is called back
//                once, with whichever reply arrives first)
//   - delayed:   net.delay = [min, max] ms, uniform, independently per message, so messages overtake
//                each other (reordering); net.lagRate adds a long extra delay (up to net.lagMax ms)
//                to a share of messages, so stale messages arrive long after newer ones.
// A crashed node (net.crash(id)) sends and receives nothing and its connections are dead; after
// net.revive(id) the new instance listens again and the other nodes' connections reach it on their
// next send.
//
// net.onMessage(from, to, type, args) sees every request sent (the chaos test checks election safety
// on the AppendEntries it sees).
// Everything random comes from `rand` (a seeded PRNG); all timers are tracked and cleared by
// net.shutdown().

const { EventEmitter } = require('events');

const { clone, wireError } = require('../../bench/plugins');

function netError(message, code) {
  const e = new Error(message);
  e.code = code;
  return e;
}

class End extends EventEmitter {
  constructor(net, local, localMeta, remote, remoteMeta, initiator) {
    super();
    this.net = net;
    this.local = local;
    this.localMetadata = localMeta;
    this.remote = remote;
    this.metadata = remoteMeta;
    this.initiator = initiator;
    this.peer = null;       // the End at the other side
    this.listener = null;   // accepted ends: the registration that accepted it
    this.handler = null;
    this.closed = false;
    net.ends.add(this);
  }

  receive(fn) {
    this.handler = fn;
  }

  // The End at the other side, made through the remote's current listener when needed.
  _remoteEnd() {
    if (!this.initiator) return this.peer && !this.peer.closed ? this.peer : null;
    const reg = this.net.listeners.get(this.remote);
    if (!reg || reg.closed) return null;
    if (this.peer && !this.peer.closed && this.peer.listener === reg) return this.peer;
    const end = new End(this.net, this.remote, this.metadata, this.local, this.localMetadata, false);
    end.peer = this;
    end.listener = reg;
    reg.ends.add(end);
    this.peer = end;
    try {
      reg.onConnection(this.local, clone(this.localMetadata), end);
    } catch (e) {
      this.net.stats.listenerErrors += 1;
      return null;
    }
    return end;
  }

  send(type, args, cb) {
    const net = this.net;
    const callback = typeof cb === 'function' ? cb : () => {};
    if (this.closed) {
      net._later(0, () => callback(netError('connection closed', 'ECONNRESET')));
      return;
    }
    const payload = clone(args);
    if (net.onMessage) net.onMessage(this.local, this.remote, type, payload);
    let answered = false;
    const answer = (err, result) => {
      if (answered || this.closed) return;
      answered = true;
      callback(err, result);
    };
    const copies = net.rand() < net.dupRate ? 2 : 1;
    if (copies === 2) net.stats.duplicated += 1;
    net.stats.sent += 1;
    for (let i = 0; i < copies; i++) {
      net._transmit(this.local, this.remote, (ok) => {
        if (!ok) {
          if (net.rand() < net.refuseRate) {
            net._later(0, () => answer(netError(`cannot reach ${this.remote}`, 'ECONNREFUSED')));
          }
          return;
        }
        if (this.closed) return;
        const end = this._remoteEnd();
        if (!end || typeof end.handler !== 'function') {
          answer(netError(`cannot connect to ${this.remote}`, 'ECONNREFUSED'));
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
          }
          net._transmit(this.remote, this.local, (ok2) => {
            if (!ok2 || end.closed) return;
            net.stats.delivered += 1;
            answer(e2, r2);
          });
        };
        try {
          end.handler(type, clone(payload), reply);
        } catch (e) {
          net.stats.handlerErrors += 1;
        }
      });
    }
  }

  close(cb) {
    const done = typeof cb === 'function' ? cb : () => {};
    if (this.closed) {
      this.net._later(0, done);
      return;
    }
    this._kill();
    const other = this.peer;
    if (this.initiator && other && !other.closed) other._kill();
    this.net._later(0, done);
  }

  _kill() {
    if (this.closed) return;
    this.closed = true;
    if (this.listener) this.listener.ends.delete(this);
    this.net.ends.delete(this);
    this.net._later(0, () => this.emit('close'));
  }
}

class ChaosNet {
  constructor({ rand }) {
    this.rand = rand;
    this.pipelining = true; // each reply goes to its own request's callback
    this.listeners = new Map(); // id -> {id, onConnection, closed, ends}
    this.ends = new Set();
    this.cut = new Set();       // "from\0to": that direction loses everything
    this.down = new Set();      // crashed nodes
    this.dropRate = 0;
    this.dupRate = 0;
    this.refuseRate = 0.2;
    this.delay = [0, 0];
    this.lagRate = 0;
    this.lagMax = 0;
    this.timers = new Set();
    this.closed = false;
    this.onMessage = null;      // (from, to, type, args) for every request sent, to observe it
    this.stats = {
      sent: 0, delivered: 0, dropped: 0, blocked: 0, duplicated: 0, lagged: 0,
      handlerErrors: 0, listenerErrors: 0,
    };
    this.listen = this.listen.bind(this);
    this.connect = this.connect.bind(this);
  }

  _later(ms, fn) {
    if (this.closed) return;
    if (ms <= 0) {
      setImmediate(() => {
        if (!this.closed) fn();
      });
      return;
    }
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(t);
  }

  canTalk(from, to) {
    return !this.down.has(from) && !this.down.has(to) && !this.cut.has(`${from}\u0000${to}`);
  }

  // Carries one message from `from` to `to`: calls deliver(true) after the delay if it arrives,
  // deliver(false) at once if it is lost to a partition or a crash (nothing for random drops).
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

  listen(localId, options, onConnection, cb) {
    const reg = { id: localId, onConnection, closed: false, ends: new Set() };
    const old = this.listeners.get(localId);
    if (old && old !== reg) this._closeListener(old);
    this.listeners.set(localId, reg);
    if (typeof cb === 'function') this._later(0, () => cb(null));
    return {
      close: (done) => {
        this._closeListener(reg);
        if (typeof done === 'function') this._later(0, done);
      },
    };
  }

  _closeListener(reg) {
    reg.closed = true;
    if (this.listeners.get(reg.id) === reg) this.listeners.delete(reg.id);
    for (const end of [...reg.ends]) end._kill();
  }

  connect(localId, localMeta, peerId, peerMeta) {
    const end = new End(this, localId, localMeta, peerId, peerMeta, true);
    if (this.down.has(localId)) end.closed = true; // a crashed instance connects to nothing
    return end;
  }

  // ---- faults

  /** Cuts the direction from -> to (one way). */
  block(from, to) {
    this.cut.add(`${from}\u0000${to}`);
  }

  /** Cuts every link between different groups (arrays of ids), both ways. */
  partition(groups) {
    for (let i = 0; i < groups.length; i++) {
      for (let j = 0; j < groups.length; j++) {
        if (i === j) continue;
        for (const a of groups[i]) for (const b of groups[j]) this.block(a, b);
      }
    }
  }

  healLinks() {
    this.cut.clear();
  }

  calm() {
    this.dropRate = 0;
    this.dupRate = 0;
    this.delay = [0, 0];
    this.lagRate = 0;
    this.lagMax = 0;
  }

  /** The node's current instance is gone: no traffic, its connections and listener are dead. */
  crash(id) {
    this.down.add(id);
    for (const end of [...this.ends]) if (end.local === id) end._kill();
    const reg = this.listeners.get(id);
    if (reg) this._closeListener(reg);
  }

  revive(id) {
    this.down.delete(id);
  }

  describe() {
    const cuts = [...this.cut].map((k) => k.replace('\u0000', '->'));
    return `cut [${cuts.join(' ')}] down [${[...this.down].join(' ')}] drop ${this.dropRate} ` +
      `dup ${this.dupRate} delay ${this.delay.map(Math.round).join('-')}ms lag ${this.lagRate}`;
  }

  shutdown() {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const end of [...this.ends]) {
      end.closed = true;
    }
    this.ends.clear();
  }
}

module.exports = { ChaosNet, clone };
