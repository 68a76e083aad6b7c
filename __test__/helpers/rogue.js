'use strict';

// A rogue endpoint on the in-memory transport: it connects to a node's listener under whatever
// peer id it likes (or none) and sends hand-made requests, counting what it sent and what came
// back. It is what a stranger who can reach a node's port looks like to the engine once the
// transport has let it in.

class Rogue {
  /**
   * @param {import('../../lib/memory').MemoryNetwork} hub
   * @param {string|undefined} peerId  the id the connection claims (undefined: none given)
   */
  constructor(hub, peerId) {
    this.hub = hub;
    this.peerId = peerId;
    this.sent = 0;
    this.answered = 0;
    this.handlers = new Map(); // node id -> the node's receive handler on our connection
    this.closers = [];
  }

  _connection(node) {
    let handler = this.handlers.get(node.id);
    if (handler) return handler;
    const listener = this.hub.listeners.get(node.id);
    if (!listener) throw new Error(`${node.id} is not listening`);
    const closeHandlers = [];
    const conn = {
      receive(fn) { handler = fn; },
      // the node never needs to call us: a rogue does not serve requests
      send(_type, _args, cb) { if (typeof cb === 'function') setImmediate(cb, new Error('rogue')); },
      close(cb) {
        for (const fn of closeHandlers.splice(0)) fn();
        if (typeof cb === 'function') setImmediate(cb);
      },
      on(ev, fn) { if (ev === 'close') closeHandlers.push(fn); return conn; },
      once(ev, fn) { return conn.on(ev, fn); },
      removeListener() { return conn; },
    };
    if (this.peerId === undefined) listener.onConnection(undefined, undefined, conn);
    else listener.onConnection(this.peerId, {}, conn);
    if (typeof handler !== 'function') throw new Error(`${node.id} did not take the connection`);
    this.handlers.set(node.id, handler);
    this.closers.push(() => conn.close());
    return handler;
  }

  /**
   * Sends one request to `node`; resolves with `{ err, result }` when it is answered, or with
   * `{ unanswered: true }` after `timeout` ms (a late answer is still counted).
   */
  send(node, type, args, { timeout = 10000 } = {}) {
    const handler = this._connection(node);
    this.sent += 1;
    return new Promise((resolve) => {
      let answered = false;
      const timer = setTimeout(() => resolve({ err: null, result: undefined, unanswered: true }), timeout);
      handler(type, JSON.parse(JSON.stringify(args)), (err, result) => {
        if (answered) return;
        answered = true;
        this.answered += 1;
        clearTimeout(timer);
        resolve({ err: err || null, result });
      });
    });
  }

  /** Sends without waiting; the answer is still counted. */
  fire(node, type, args) {
    this.send(node, type, args).catch(() => undefined);
  }

  close() {
    for (const fn of this.closers.splice(0)) fn();
  }
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** An empty AppendEntries (a heartbeat) as `leaderId` would send it. */
function heartbeat(term, leaderId, leaderCommit = 0) {
  return { term, leaderId, prevLogIndex: 0, prevLogTerm: 0, entries: [], leaderCommit };
}

/** A RequestVote whose log looks more up to date than anyone's. */
function voteRequest(term, candidateId) {
  return { term, candidateId, lastLogIndex: 2 ** 40, lastLogTerm: Math.min(term, 2 ** 40) };
}

module.exports = { Rogue, MAX_SAFE, heartbeat, voteRequest };
