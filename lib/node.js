'use strict';

// The public class of skiff-rs: `class Node extends EventEmitter` — its API, its events and the
// listener bookkeeping that tells the engine which events anybody hears.
//
// The Raft engine lives in the native `RaftNode` (see docs/PROTOCOL.md). The engine's operations
// run in the parts under lib/node/, which are the only code that touches the user's plugin objects:
//   dispatch.js     runs the engine's batches and routes each op to the part below that owns it
//   plugin-call.js  guarded plugin calls: every outcome reaches the caller exactly once
//   save-meta.js    saveMeta: the engine's state, one save at a time, and what waits for it
//   apply-chain.js  the apply chain against the state machine, and how far it got
//   requests.js     user calls waiting for the engine (command completion)
//   snapshot-io.js  snapshot read and write streams
//   connections.js  the listener, connections, and peer requests awaiting answers
// and the parts that watch it: stats.js (`stats()` counters), wait-for.js (`waitFor()`),
// debug-log.js (`DEBUG=skiff*`).
//
// `createNodeClass(loadNative)` takes a function returning the `RaftNode` class, so the wrapper can
// be exercised with a stand-in engine in tests and `require('skiff-rs')` works before the binding
// is needed.

const { EventEmitter } = require('events');
const { normalizeOptions } = require('./options');
const { encode } = require('./codec');
const { makeError, toError, CODES } = require('./errors');
const MemoryPersistence = require('./memory-persistence');
const { Dispatcher, rethrowLater } = require('./node/dispatch');
const { ApplyChain } = require('./node/apply-chain');
const { MetaSaver } = require('./node/save-meta');
const { Requests } = require('./node/requests');
const { SnapshotIO } = require('./node/snapshot-io');
const { Connections } = require('./node/connections');
const { NodeStats } = require('./node/stats');
const { Waiters } = require('./node/wait-for');
const { DebugLog } = require('./node/debug-log');

const STATE_NAMES = Object.freeze(['idle', 'standby', 'follower', 'candidate', 'leader', 'stopped']);

// Every event the engine can produce. Until the first tick after construction all of them are
// reported as listened, so listeners attached right after `Node(options)` miss nothing.
const ENGINE_EVENTS = Object.freeze([
  'error', 'warning', 'state', ...STATE_NAMES, 'loaded', 'election timeout', 'applied log',
  'done persisting', 'joined', 'left', 'reconnected', 'vote granted', 'heartbeat',
  'reset election timeout', 'AppendEntries', 'RequestVote', 'InstallSnapshot', 'outgoing call',
  'response', 'reply',
]);

// Always reported as listened: errors must reach somebody (see `_emitError`), and `state` events
// keep `node.state.name` in step with the events the user has seen.
const ALWAYS_LISTENED = Object.freeze(['error', 'warning', 'state']);

function noop() {}

// `[promise, callback]`: when the user gave a callback, no promise is made.
// A promise nobody handles must not crash the process (the original ignored errors of
// fire-and-forget calls such as `leader.join(id)` in its README), so its rejection is pre-handled:
// callers that `await` it or call `.then/.catch` still see the error.
function callbackOrPromise(cb) {
  if (typeof cb === 'function') {
    let called = false;
    const guarded = (err, ...rest) => {
      if (called) return;
      called = true;
      try {
        cb(err || null, ...rest);
      } catch (e) {
        rethrowLater(e);
      }
    };
    return [undefined, guarded];
  }
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(noop);
  let called = false;
  const settle = (err, value) => {
    if (called) return;
    called = true;
    if (err) reject(err);
    else resolve(value);
  };
  return [promise, settle];
}

function failSoon(callback, err) {
  process.nextTick(callback, err);
}

function createNodeClass(loadNative) {
  class NodeImpl extends EventEmitter {
    constructor(input) {
      super();
      this.setMaxListeners(Infinity);

      const { options, config } = normalizeOptions(input, () => new MemoryPersistence());
      this.options = options;
      this.id = options.id;
      this.metadata = options.metadata;
      this.cluster = { id: options.cluster };

      const node = this;
      Object.defineProperty(this, 'state', {
        enumerable: true,
        value: Object.freeze({
          get name() {
            return node._stateName();
          },
        }),
      });

      // internal state, not enumerable so that `console.log(node)` stays readable
      const internal = {
        _native: null,
        _cachedState: 'idle',
        _lastTerm: 0,
        _stopping: false,
        _released: false,
        _seq: 0, // the last request or reply id handed to the engine
        _stopReq: null,
        _stopCallbacks: [],
        _listenedKey: null,
        _listenedSet: new Set(),
        _listenedScheduled: false,
        _apiDepth: 0, // inside command/join/leave: callbacks wait for the next tick
        _allListened: true,
        // the parts that run the engine's operations (see the top of this file)
        _dispatcher: null,
        _requests: null,
        _apply: null,
        _meta: null,
        _snapshots: null,
        _connections: null,
        _stats: new NodeStats(),
        _waiters: null,
        _debug: null,
      };
      for (const key of Object.keys(internal)) {
        Object.defineProperty(this, key, { value: internal[key], writable: true, enumerable: false });
      }
      this._dispatcher = new Dispatcher(this);
      this._requests = new Requests((callback, err, result) => this._finish(callback, err, result));
      this._apply = new ApplyChain(this, this._dispatcher);
      this._meta = new MetaSaver(this, this._dispatcher);
      this._snapshots = new SnapshotIO(this, this._dispatcher, this._apply);
      this._connections = new Connections(this, this._dispatcher);
      this._waiters = new Waiters(this, STATE_NAMES);
      this._debug = new DebugLog(this);

      const RaftNode = loadNative();
      this._native = new RaftNode(JSON.stringify(config), (...args) => this._dispatcher.onBatch(args));
      this._run(this._native.setListened(ENGINE_EVENTS.slice()));
      // The original starts loading from its constructor; we start on the next tick, so that
      // listeners attached right after `Node(options)` hear what a failing plugin reports.
      process.nextTick(() => {
        this._allListened = false;
        this._updateListened();
        if (this._released) return;
        try {
          this._run(this._native.start());
        } catch (e) {
          this._emitSafe('error', toError(e));
        }
      });
    }

    // ---------------------------------------------------------------- status

    // The state as of the last `state` event delivered (so it agrees with what listeners saw);
    // the engine's published status is only consulted when no event has come yet.
    _stateName() {
      if (this._released) return 'stopped';
      if (this._cachedState === 'idle' && this._native) {
        try {
          const name = this._native.stateName();
          if (typeof name === 'string' && name) return name;
        } catch (_) { /* fall back to the cached value */ }
      }
      return this._cachedState;
    }

    currentTerm() {
      if (this._native) {
        try {
          const t = Number(this._native.term());
          if (Number.isFinite(t)) {
            this._lastTerm = t;
            return t;
          }
        } catch (_) { /* fall back */ }
      }
      return this._lastTerm;
    }

    currentLeader() {
      if (this._released || !this._native) return null;
      try {
        const l = this._native.leader();
        return typeof l === 'string' && l !== '' ? l : null;
      } catch (_) {
        return null;
      }
    }

    // What this node knows and has counted, as a plain object (lib/node/stats.js).
    stats() {
      let engine = null;
      if (this._native) {
        try {
          engine = JSON.parse(this._native.stats());
        } catch (_) { /* an engine without stats: what JS knows */ }
      }
      return this._stats.build(this, engine);
    }

    // A promise for `condition` ({state}, {leader}, {applied} or {voter}): lib/node/wait-for.js.
    waitFor(condition, timeout) {
      return this._waiters.add(condition, timeout);
    }

    // How far the state machine got: the apply chain's index, or the engine's after a snapshot.
    _appliedIndex() {
      let engine = 0;
      try {
        if (this._native) engine = Number(this._native.applied()) || 0;
      } catch (_) { /* an engine that cannot say */ }
      return Math.max(engine, this._apply.lastApplied || 0);
    }

    // After each batch of the engine's operations: whatever waits for a state looks again.
    _afterBatch() {
      if (this._waiters.size > 0) this._waiters.check();
      if (this._debug.watchesLeader) this._debug.afterBatch();
    }

    peerMeta(peerId) {
      if (!this._native) return undefined;
      let json;
      try {
        json = this._native.peerMeta(String(peerId));
      } catch (_) {
        return undefined;
      }
      if (json === null || json === undefined) return undefined;
      try {
        return JSON.parse(json);
      } catch (_) {
        return undefined;
      }
    }

    // The members as this node sees them (self included when it is one): `[{id, metadata,
    // voter}]`, `voter: false` for a learner. Empty before the state is loaded.
    members() {
      if (!this._native) return [];
      try {
        return JSON.parse(this._native.members());
      } catch (_) {
        return [];
      }
    }

    // ---------------------------------------------------------------- listeners → setListened

    // A newly listened event is reported at once, so that an action taken right after adding the
    // listener cannot outrun it; removals are coalesced.
    _listenerAdded(name) {
      if (typeof name !== 'string' || this._allListened || this._released) return;
      if (this._listenedSet.has(name)) return;
      this._updateListened();
    }

    _scheduleListened() {
      if (this._listenedScheduled) return;
      this._listenedScheduled = true;
      queueMicrotask(() => {
        this._listenedScheduled = false;
        this._updateListened();
      });
    }

    _updateListened() {
      if (this._allListened || this._released || !this._native) return;
      const names = new Set(ALWAYS_LISTENED);
      for (const name of this._debug.listened()) names.add(name);
      for (const name of this.eventNames()) {
        if (typeof name === 'string' && this.listenerCount(name) > 0) names.add(name);
      }
      const list = [...names].sort();
      const key = list.join('\u0000');
      if (key === this._listenedKey) return;
      this._listenedKey = key;
      this._listenedSet = names;
      try {
        this._run(this._native.setListened(list));
      } catch (_) { /* engine already gone */ }
    }

    // ---------------------------------------------------------------- emitting

    // Emits an event; a listener that throws behaves as with any EventEmitter (uncaught exception),
    // but never in the middle of our bookkeeping.
    _emitSafe(name, ...args) {
      try {
        if (name === 'error') this._emitError(args[0]);
        else this.emit(name, ...args);
      } catch (e) {
        rethrowLater(e);
      }
    }

    // `error` with nobody listening must not throw out of EventEmitter: it becomes a `warning`
    // when somebody listens to those, else a process warning.
    _emitError(err) {
      const e = toError(err);
      if (this.listenerCount('error') > 0) this.emit('error', e);
      else if (this.listenerCount('warning') > 0) this.emit('warning', e);
      else process.emitWarning(e);
    }

    _warn(err) {
      if (this.listenerCount('warning') > 0) this._emitSafe('warning', toError(err));
    }

    // ---------------------------------------------------------------- the user API

    listen(options, cb) {
      if (typeof options === 'function' && cb === undefined) {
        cb = options;
        options = undefined;
      }
      const user = typeof cb === 'function' ? callbackOrPromise(cb)[1] : null;
      if (this._stopping || this._released) {
        const err = makeError('node is stopped', CODES.ESTOPPED);
        if (user) failSoon(user, err);
        else process.nextTick(() => this._emitError(err));
        return undefined;
      }
      let called = false;
      const done = (err, ...rest) => {
        if (called) return;
        called = true;
        if (user) user(err ? toError(err) : null, ...rest);
        else if (err) this._emitError(err);
      };
      this._connections.listen(options, done);
      return undefined;
    }

    command(cmd, options, cb) {
      if (typeof options === 'function') {
        cb = options;
        options = undefined;
      }
      const [promise, settle] = callbackOrPromise(cb);
      const callback = this._stats.countCommand(settle);
      const checked = this._callOptions('command', options);
      if (checked instanceof Error) {
        failSoon(callback, checked);
        return promise;
      }
      const { timeout } = checked;
      let waitForNode = null;
      if (options && options.waitForNode !== undefined && options.waitForNode !== null) {
        if (typeof options.waitForNode !== 'string' || options.waitForNode === '') {
          failSoon(callback, makeError('options.waitForNode must be a node id string', CODES.EINVALIDOPTIONS));
          return promise;
        }
        waitForNode = options.waitForNode;
      }
      let json;
      try {
        json = encode(cmd, CODES.EBADCOMMAND);
      } catch (e) {
        failSoon(callback, e);
        return promise;
      }
      // A leader handing over refuses commands for at most an election timeout: try again
      // until the command's own timeout (after the hand-off it answers ENOTLEADER with the
      // new leader).
      // The first attempt gets the whole `timeout` (reading the clock twice could take a
      // millisecond off it); a retry gets what is left of it.
      const deadline = Date.now() + timeout;
      const attempt = (left) => {
        if (this._stopping || this._released) {
          callback(makeError('node is stopped', CODES.ESTOPPED));
          return;
        }
        this._request((err, result) => {
          if (err && err.code === CODES.ETRANSFERRING && Date.now() < deadline) {
            const pause = Math.min(this.options.heartbeatInterval, left);
            setTimeout(() => attempt(Math.max(1, deadline - Date.now())), pause);
          } else {
            callback(err, result);
          }
        }, (req) => this._native.propose(req, json, left, waitForNode, this._apply.lastApplied));
      };
      attempt(timeout);
      return promise;
    }

    // Resolves once this node's state machine may be read linearizably: ReadIndex on the
    // leader (a quorum round on heartbeats, no log write), or the leader's read index on a
    // follower; `options.lease` uses the leader lease instead (see README, Reads).
    read(options, cb) {
      if (typeof options === 'function' && cb === undefined) {
        cb = options;
        options = undefined;
      }
      const [promise, callback] = callbackOrPromise(cb);
      let checked = this._callOptions('read', options);
      if (!(checked instanceof Error) && options && options.lease !== undefined && options.lease !== null &&
          typeof options.lease !== 'boolean') {
        checked = makeError('options.lease must be a boolean', CODES.EINVALIDOPTIONS);
      }
      if (checked instanceof Error) {
        failSoon(callback, checked);
        return promise;
      }
      const { timeout } = checked;
      const lease = Boolean(options && options.lease === true);
      this._request((err) => callback(err), (req) => this._native.read(req, lease, timeout));
      return promise;
    }

    // Leader only: hands leadership to `peerId`, or to the most up-to-date voter; resolves once
    // the target leads (ETIMEDOUT if it has not within an election timeout).
    transferLeadership(peerId, cb) {
      if (typeof peerId === 'function' && cb === undefined) {
        cb = peerId;
        peerId = undefined;
      }
      const [promise, callback] = callbackOrPromise(cb);
      const named = peerId !== undefined && peerId !== null;
      const refused = named ? this._refusePeerCall(peerId)
        : (this._stopping || this._released ? makeError('node is stopped', CODES.ESTOPPED) : null);
      if (refused) {
        failSoon(callback, refused);
        return promise;
      }
      this._request((err) => callback(err), (req) => this._native.transferLeadership(req, named ? peerId : null));
      return promise;
    }

    // Adds `peerId` as a learner, promoted to voter by the leader once it has caught up;
    // the callback fires when it votes.
    join(peerId, metadata, cb) {
      return this._addMember('join', peerId, metadata, cb);
    }

    // Adds `peerId` as a permanent learner (a read replica): it gets the log, never votes.
    addLearner(peerId, metadata, cb) {
      return this._addMember('addLearner', peerId, metadata, cb);
    }

    // `join` and `addLearner`: `method` is the engine's call.
    _addMember(method, peerId, metadata, cb) {
      if (typeof metadata === 'function' && cb === undefined) {
        cb = metadata;
        metadata = undefined;
      }
      const [promise, callback] = callbackOrPromise(cb);
      const refused = this._refusePeerCall(peerId);
      if (refused) {
        failSoon(callback, refused);
        return promise;
      }
      if (peerId === this.id) {
        failSoon(callback, makeError('can\'t join self', CODES.EJOINSELF));
        return promise;
      }
      let json;
      try {
        json = encode(metadata === undefined ? null : metadata, CODES.EBADCOMMAND);
      } catch (e) {
        failSoon(callback, makeError(`peer metadata: ${e.message}`, CODES.EBADCOMMAND));
        return promise;
      }
      this._request(this._debug.membershipCall(method, peerId, callback), (req) => this._native[method](req, peerId, json));
      return promise;
    }

    leave(peerId, cb) {
      const [promise, callback] = callbackOrPromise(cb);
      const refused = this._refusePeerCall(peerId);
      if (refused) {
        failSoon(callback, refused);
        return promise;
      }
      this._request(this._debug.membershipCall('leave', peerId, callback), (req) => this._native.leave(req, peerId));
      return promise;
    }

    // What `command` and `read` check alike: the node runs, `options` is an object (or absent),
    // its `timeout` is a positive number of ms. Returns an Error, or `{ timeout }`.
    _callOptions(what, options) {
      if (this._stopping || this._released) return makeError('node is stopped', CODES.ESTOPPED);
      const fallback = this.options.commandTimeout;
      if (options === undefined || options === null) return { timeout: fallback };
      if (typeof options !== 'object') return makeError(`${what} options must be an object`, CODES.EINVALIDOPTIONS);
      const t = options.timeout;
      if (t === undefined || t === null) return { timeout: fallback };
      if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) {
        return makeError('options.timeout must be a positive finite number of milliseconds', CODES.EINVALIDOPTIONS);
      }
      return { timeout: Math.ceil(t) };
    }

    // Why `join`/`leave` of `peerId` cannot be taken, or null.
    _refusePeerCall(peerId) {
      if (this._stopping || this._released) return makeError('node is stopped', CODES.ESTOPPED);
      if (typeof peerId !== 'string' || peerId === '') {
        return makeError('peer id must be a non-empty string', CODES.EINVALIDPEER);
      }
      return null;
    }

    stop(cb) {
      const [promise, callback] = callbackOrPromise(cb);
      if (this._released) {
        setImmediate(callback, null);
        return promise;
      }
      this._stopCallbacks.push(callback);
      if (!this._stopping) {
        this._stopping = true;
        const req = this._nextId();
        this._stopReq = req;
        // the engine stops within this call: what it fails, and `stop`'s own callback, are
        // called back after `stop()` has returned
        this._inCall(() => {
          try {
            this._run(this._native.stop(req));
          } catch (e) {
            // the engine is gone already: release on our side
            this._stopReq = null;
            this._release();
          }
        });
      }
      return promise;
    }

    close(cb) {
      return this.stop(cb);
    }

    _nextId() {
      this._seq += 1;
      return this._seq;
    }

    _request(callback, call) {
      const req = this._nextId();
      this._requests.add(req, callback);
      let batch;
      try {
        batch = call(req);
      } catch (e) {
        this._requests.remove(req);
        failSoon(callback, toError(e));
        return;
      }
      // A request the engine answers at once (not the leader, say) must still call back
      // asynchronously, as it always did.
      this._inCall(() => this._run(batch));
    }

    // Runs `fn` as part of a user's API call: callbacks it completes wait for the next tick
    // (see `_finish`).
    _inCall(fn) {
      this._apiDepth += 1;
      try {
        fn();
      } finally {
        this._apiDepth -= 1;
      }
    }

    // Calls a request's callback with `err`, or with `result` when there is one; from inside an
    // API call, on the next tick.
    _finish(callback, err, result) {
      const args = err ? [err] : result !== undefined ? [null, result] : [null];
      if (this._apiDepth > 0) process.nextTick(callback, ...args);
      else callback(...args);
    }

    // Runs a batch the engine returned (in order with the others: see Dispatcher.run).
    _run(batch) {
      this._dispatcher.run(batch);
    }

    // ---------------------------------------------------------------- ops the node itself runs

    // `event` op: `{$node: true}` arguments become this node, error arguments become Errors.
    _event(name, args) {
      if (typeof name !== 'string') return;
      const converted = args.map((a) => (a !== null && typeof a === 'object' && a.$node === true ? this : a));
      if ((name === 'error' || name === 'warning') && converted.length > 0) {
        converted[0] = toError(converted[0]);
      } else if (name === 'response' && converted[1] !== null && typeof converted[1] === 'object') {
        converted[1] = toError(converted[1]);
      }
      if (name === 'state' && typeof converted[0] === 'string') this._cachedState = converted[0];
      else if (STATE_NAMES.includes(name)) this._cachedState = name;
      this._debug.event(name, converted);
      this._emitSafe(name, ...converted);
    }

    // `done` op: a `command`/`join`/`leave`/`stop` call finished.
    _done(req, error, index) {
      if (req === this._stopReq) {
        this._stopReq = null;
        // success: the `stopped` op follows and resolves the stop callbacks.
        if (error) this._release();
        return;
      }
      this._requests.done(req, error ? toError(error) : null, index);
    }

    // ---------------------------------------------------------------- release

    _release() {
      if (this._released) return;
      this.currentTerm(); // keep the last term readable after the engine is gone
      this._released = true;
      this._stopping = true;
      this._cachedState = 'stopped';

      this._requests.failAll(makeError('node stopped before the request completed', CODES.ESTOPPED));
      this._connections.releaseAll();
      this._snapshots.releaseAll();
      this._meta.release();
      this._apply.lane.close();
      this._debug.stopped();
      this._waiters.release();

      this._connections.closeServer(() => {
        const callbacks = this._stopCallbacks;
        this._stopCallbacks = [];
        for (const callback of callbacks) this._finish(callback, null);
      });
    }
  }

  // Every EventEmitter entry point that adds a listener tells the engine at once; those that
  // remove one schedule a coalesced update (`_listenerAdded`, `_scheduleListened`).
  for (const [method, then] of [
    ['addListener', '_listenerAdded'], ['on', '_listenerAdded'], ['once', '_listenerAdded'],
    ['prependListener', '_listenerAdded'], ['prependOnceListener', '_listenerAdded'],
    ['removeListener', '_scheduleListened'], ['off', '_scheduleListened'],
    ['removeAllListeners', '_scheduleListened'],
  ]) {
    const base = EventEmitter.prototype[method];
    Object.defineProperty(NodeImpl.prototype, method, {
      value(...args) {
        base.apply(this, args);
        this[then](args[0]);
        return this;
      },
      writable: true,
      configurable: true,
      enumerable: false,
    });
  }

  // `Node(options)` and `new Node(options)` both work; `instanceof Node` and `instanceof
  // EventEmitter` hold, and `class X extends Node` gets X's prototype.
  function Node(options) {
    return Reflect.construct(NodeImpl, [options], new.target || Node);
  }
  Node.prototype = NodeImpl.prototype;
  Object.defineProperty(NodeImpl.prototype, 'constructor', {
    value: Node, writable: true, configurable: true, enumerable: false,
  });
  Node.super_ = EventEmitter;
  return Node;
}

module.exports = { createNodeClass, ENGINE_EVENTS, STATE_NAMES };
