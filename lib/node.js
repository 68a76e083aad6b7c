'use strict';

// The hand-written half of skiff-rs: `class Node extends EventEmitter`.
//
// The Raft engine lives in the native `RaftNode` (see docs/PROTOCOL.md). This file is the only code
// that touches the user's plugin objects: it runs the engine's batches of operations against the
// transport and persistence plugins, and turns every plugin failure (throws, errors, callbacks
// called twice, results JSON cannot carry) into something the engine or the user can handle
// instead of a crash.
//
// `createNodeClass(loadNative)` takes a function returning the `RaftNode` class, so the wrapper can
// be exercised with a stand-in engine in tests and `require('skiff-rs')` works before the binding
// is needed.

const { EventEmitter } = require('events');
const { normalizeOptions } = require('./options');
const { encode, revive } = require('./codec');
const { makeError, toWire, toError, describe, CODES } = require('./errors');
const MemoryPersistence = require('./memory-persistence');
const { Lane } = require('./lane');

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

const CONNECTION_EVENTS = Object.freeze(['connected', 'disconnected', 'connecting']);

// An apply chain reports its progress to the engine after this many items, or this long.
const PROGRESS_EVERY_ITEMS = 32;
const PROGRESS_EVERY_MS = 20;

// At most this many applyCommand results wait for their command's `done`.
const MAX_KEPT_RESULTS = 100000;

// How long a snapshot read that already has chunks waits for more before answering with them.
const SNAPSHOT_PARTIAL_WAIT_MS = 20;

// Whether a readable has no more data to give (its source ended and its buffer is empty), even
// if it has not emitted `end` yet.
function atEnd(stream) {
  if (stream.readableEnded) return true;
  const state = stream._readableState;
  return Boolean(state && state.ended && (stream.readableLength === 0 || state.length === 0));
}

// How long `stop()` waits for the transport's listener to confirm it closed.
const LISTENER_CLOSE_WAIT_MS = 2000;
// Peer requests waiting for the engine's answer (most wait for a save). A request past this is
// refused at once (EBUSY), so a flood of requests holds neither callbacks nor frames without bound.
const MAX_PENDING_REPLIES = 1024;

function noop() {}

function rethrowLater(err) {
  process.nextTick(() => {
    throw err;
  });
}

function isConnection(c) {
  return c !== null && typeof c === 'object' && typeof c.receive === 'function' &&
    typeof c.send === 'function';
}

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
        _applyGen: 0,
        _metaLane: new Lane(), // saveMeta calls, one at a time
        _smLane: new Lane(), // applyCommand, saveCommitIndex, removeAllState, snapshot writes
        _laneRelease: new Map(), // io -> release of the lane its op holds until it completes
        _abortedSids: new Set(), // snapshot write streams the engine gave up on
        _latestState: undefined, // the newest state the engine asked saveMeta to write
        _lastApplied: 0, // highest index an apply chain saw applied (for `quiesce`)
        _direct: new Map(), // log index -> reqId of a command answered when that index is applied
        _savedEntries: [], // log entries of the last saveMeta op, for the next one's `from`
        _applyResults: new Map(), // log index -> value applyCommand called back with (items marked want)
        _readStreams: new Map(), // sid -> snapshot read stream record
        _writeStreams: new Map(), // sid -> snapshot write stream record
        _seq: 0,
        _requests: new Map(), // reqId -> callback(err)
        _stopReq: null,
        _stopCallbacks: [],
        _replies: new Map(), // replyId -> reply(err, result)
        _outgoing: new Map(), // peerId -> connection record (made by `connect` ops)
        _wanted: new Map(), // peerId -> metadata, for reconnecting after a failed transport.connect
        _incoming: new Set(), // connection records handed to us by the transport's listener
        _server: null,
        _listenedKey: null,
        _listenedSet: new Set(),
        _listenedScheduled: false,
        _dispatching: false, // a batch is running (see `_run`)
        _backlog: [], // batches that arrived while another ran
        _apiDepth: 0, // inside command/join/leave: callbacks wait for the next tick
        _allListened: true,
      };
      for (const key of Object.keys(internal)) {
        Object.defineProperty(this, key, { value: internal[key], writable: true, enumerable: false });
      }

      const RaftNode = loadNative();
      this._native = new RaftNode(JSON.stringify(config), (...args) => this._onBatch(args));
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
      if (this._server) this._closeServer(noop);
      let called = false;
      const done = (err, ...rest) => {
        if (called) return;
        called = true;
        if (user) user(err ? toError(err) : null, ...rest);
        else if (err) this._emitError(err);
      };
      const onConnection = (...args) => this._onIncomingConnection(args);
      try {
        this._server = this.options.transport.listen(this.id, options, onConnection, done) || null;
        // A listener that refuses a connection (bad secret, other cluster, a limit) says so here.
        if (this._server && typeof this._server.on === 'function') {
          this._server.on('warning', (err) => this._warn(err));
        }
      } catch (e) {
        this._server = null;
        process.nextTick(done, e);
      }
      return undefined;
    }

    command(cmd, options, cb) {
      if (typeof options === 'function') {
        cb = options;
        options = undefined;
      }
      const [promise, callback] = callbackOrPromise(cb);
      if (this._stopping || this._released) {
        failSoon(callback, makeError('node is stopped', CODES.ESTOPPED));
        return promise;
      }
      let timeout = this.options.commandTimeout;
      let waitForNode = null;
      if (options !== undefined && options !== null) {
        if (typeof options !== 'object') {
          failSoon(callback, makeError('command options must be an object', CODES.EINVALIDOPTIONS));
          return promise;
        }
        if (options.timeout !== undefined && options.timeout !== null) {
          const t = options.timeout;
          if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) {
            failSoon(callback, makeError(
              'options.timeout must be a positive finite number of milliseconds', CODES.EINVALIDOPTIONS));
            return promise;
          }
          timeout = Math.ceil(t);
        }
        if (options.waitForNode !== undefined && options.waitForNode !== null) {
          if (typeof options.waitForNode !== 'string' || options.waitForNode === '') {
            failSoon(callback, makeError(
              'options.waitForNode must be a node id string', CODES.EINVALIDOPTIONS));
            return promise;
          }
          waitForNode = options.waitForNode;
        }
      }
      let json;
      try {
        json = encode(cmd, CODES.EBADCOMMAND);
      } catch (e) {
        failSoon(callback, e);
        return promise;
      }
      this._request(callback, (req) => this._native.propose(req, json, timeout, waitForNode, this._lastApplied));
      return promise;
    }

    join(peerId, metadata, cb) {
      if (typeof metadata === 'function' && cb === undefined) {
        cb = metadata;
        metadata = undefined;
      }
      const [promise, callback] = callbackOrPromise(cb);
      if (this._stopping || this._released) {
        failSoon(callback, makeError('node is stopped', CODES.ESTOPPED));
        return promise;
      }
      if (typeof peerId !== 'string' || peerId === '') {
        failSoon(callback, makeError('peer id must be a non-empty string', CODES.EINVALIDPEER));
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
      this._request(callback, (req) => this._native.join(req, peerId, json));
      return promise;
    }

    leave(peerId, cb) {
      const [promise, callback] = callbackOrPromise(cb);
      if (this._stopping || this._released) {
        failSoon(callback, makeError('node is stopped', CODES.ESTOPPED));
        return promise;
      }
      if (typeof peerId !== 'string' || peerId === '') {
        failSoon(callback, makeError('peer id must be a non-empty string', CODES.EINVALIDPEER));
        return promise;
      }
      this._request(callback, (req) => this._native.leave(req, peerId));
      return promise;
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
        const req = ++this._seq;
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

    _request(callback, call) {
      const req = ++this._seq;
      this._requests.set(req, callback);
      let batch;
      try {
        batch = call(req);
      } catch (e) {
        this._requests.delete(req);
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

    // Runs a batch the engine returned. Batches run one after another, in the order the engine
    // produced them: one that arrives while another runs (a plugin called back synchronously,
    // or a callback made a new request) waits for it.
    _run(batch) {
      if (typeof batch !== 'string' || batch === '') return;
      if (this._dispatching) {
        this._backlog.push(batch);
        return;
      }
      this._dispatching = true;
      try {
        this._dispatch(batch);
        while (this._backlog.length > 0) this._dispatch(this._backlog.shift());
      } finally {
        this._dispatching = false;
      }
    }

    // ---------------------------------------------------------------- engine → JS

    // The engine's threadsafe function: a wake-up after a timer queued operations (then
    // `drain()` takes them), or a whole batch.
    _onBatch(args) {
      // napi may call back with (value) or, error-first, (null, value)
      if (args[0] instanceof Error) {
        this._emitSafe('error', args[0]);
        return;
      }
      const batch = args.find((a) => typeof a === 'string' && a !== '');
      if (batch !== undefined) {
        this._run(batch);
        return;
      }
      if (this._released || !this._native || typeof this._native.drain !== 'function') return;
      let queued;
      try {
        queued = this._native.drain();
      } catch (e) {
        this._warn(e);
        return;
      }
      this._run(queued);
    }

    _dispatch(batchJson) {
      let ops;
      try {
        ops = JSON.parse(batchJson);
      } catch (e) {
        this._emitSafe('error', makeError(`engine sent a batch that is not JSON: ${e.message}`, CODES.EUNKNOWNOP));
        return;
      }
      if (!Array.isArray(ops)) ops = [ops];
      for (const raw of ops) {
        try {
          this._runOp(normalizeOp(raw));
        } catch (e) {
          // only a user listener or callback can get here: behave like EventEmitter would
          rethrowLater(e);
        }
      }
    }

    _runOp(op) {
      if (!op) {
        this._warn(makeError('engine sent an operation the wrapper cannot read', CODES.EUNKNOWNOP));
        return;
      }
      if (this._released) return;
      const persistence = this.options.persistence;
      switch (op.op) {
        case 'loadMeta':
          this._callPlugin(op.io, 'persistence.loadMeta', persistence, 'loadMeta', [this.id], true);
          return;
        case 'lastApplied':
          this._callPlugin(op.io, 'persistence.lastAppliedCommitIndex', persistence,
            'lastAppliedCommitIndex', [this.id], true);
          return;
        case 'saveMeta':
          this._latestState = this._fullState(op);
          this._invoke('persistence.saveMeta', persistence, 'saveMeta', [this.id, this._latestState], (err) => {
            if (err) {
              // what waited for this save is not sent: peers time out and ask again. The
              // requests among it are still answered, with a refusal.
              if (Array.isArray(op.after)) {
                for (const after of op.after) {
                  if (after && after.op === 'reply') {
                    this._reply({ id: after.id, error: { message: `not saved: ${describe(err)}`, code: 'EPERSISTENCE' } });
                  }
                }
              }
              this._complete(op.io, toWire(err), null);
              return;
            }
            // the messages that promise what this save made durable go out now, without a hop
            // through the engine
            if (Array.isArray(op.after)) {
              for (const after of op.after) {
                try {
                  this._runOp(normalizeOp(after));
                } catch (e) {
                  rethrowLater(e);
                }
              }
            }
            this._complete(op.io, null, null);
          }, this._metaLane, { timeoutMs: this._laneTimeout(), late: () => this._resaveLatest() });
          return;
        case 'apply':
          this._applyChain(op);
          return;
        case 'saveCommitIndex':
          this._callPlugin(op.io, 'persistence.saveCommitIndex', persistence, 'saveCommitIndex',
            [this.id, op.index], false, this._smLane, { timeoutMs: this._laneTimeout() });
          return;
        case 'connect':
          this._connect(op.peer, op.metadata === undefined ? null : op.metadata);
          return;
        case 'disconnect':
          this._disconnect(op.peer);
          return;
        case 'send':
          this._send(op);
          return;
        case 'reply':
          this._reply(op);
          return;
        case 'event':
          this._event(op.name, Array.isArray(op.args) ? op.args : []);
          return;
        case 'done':
          this._done(op.req, op.error, op.index);
          return;
        case 'snapshotRead':
          this._snapshotRead(op);
          return;
        case 'snapshotClose':
          this._closeReadStream(op.sid);
          return;
        case 'snapshotReset':
          // no apply chain may go on after the state machine is cleared
          this._applyGen += 1;
          this._callPlugin(op.io, 'persistence.removeAllState', persistence, 'removeAllState', [this.id], false,
            this._smLane);
          return;
        case 'quiesce':
          // Stop the apply chain, wait until no state-machine call is under way, and tell the
          // engine exactly how far applying got: a snapshot read then starts from that index.
          this._applyGen += 1;
          this._smLane.run((release) => {
            release();
            this._complete(op.io, null, JSON.stringify(this._lastApplied));
          });
          return;
        case 'snapshotWrite':
          this._smLane.run((release) => {
            if (this._abortedSids.has(op.sid)) {
              // aborted while it waited for the lane: never reopen a stream for it
              release();
              this._complete(op.io, { message: 'snapshot transfer aborted', code: CODES.EPLUGIN }, null);
              return;
            }
            this._laneRelease.set(op.io, release);
            this._snapshotWrite(op);
          });
          return;
        case 'snapshotAbort':
          this._abortWriteStream(op.sid);
          return;
        case 'stopped':
          this._release();
          return;
        default:
          if (op.io !== undefined) {
            this._complete(op.io, {
              message: `the wrapper does not know the operation ${JSON.stringify(op.op)}`,
              code: CODES.EUNKNOWNOP,
            }, null);
          }
          this._warn(makeError(`unknown engine operation ${JSON.stringify(op.op)}`, CODES.EUNKNOWNOP));
      }
    }

    _progress(io, index) {
      if (!this._native || this._released) return;
      try {
        this._run(this._native.progress(io, index, this._lastApplied));
      } catch (e) {
        this._warn(e);
      }
    }

    _complete(io, error, resultJson) {
      const release = this._laneRelease.get(io);
      if (release) {
        this._laneRelease.delete(io);
        release();
      }
      if (!this._native || this._released) return;
      try {
        this._run(this._native.complete(io, error, resultJson, this._lastApplied));
      } catch (e) {
        this._warn(e);
      }
    }

    // Calls `target[method](...args, cb)` and hands the outcome to `onResult(err, result)` exactly
    // once, whatever the plugin does: a synchronous throw becomes the error, a second callback is
    // reported as a `warning` and otherwise ignored.
    // With a `lane`, the call waits its turn there. `laneOpts.timeoutMs` lets the lane move on
    // from a call that never calls back (the engine has timed it out and retries it); such a
    // call's eventual outcome goes to `laneOpts.late` instead of `onResult`.
    _invoke(label, target, method, args, onResult, lane, laneOpts) {
      if (lane) {
        let abandoned = false;
        const opts = laneOpts || {};
        lane.run((release) => {
          this._invoke(label, target, method, args, (err, result) => {
            // the outcome is recorded before the next call in the lane may start
            try {
              if (!abandoned) onResult(err, result);
              else if (opts.late) opts.late(err, result);
            } finally {
              release();
            }
          });
        }, opts.timeoutMs || 0, () => {
          abandoned = true;
        });
        return;
      }
      let calledBack = false;
      const cb = (err, result) => {
        if (calledBack) {
          this._warn(makeError(`${label} called back more than once`, CODES.EPLUGINCALLBACK));
          return;
        }
        calledBack = true;
        onResult(err || null, result);
      };
      try {
        const fn = target && target[method];
        if (typeof fn !== 'function') throw makeError(`${label} is not a function`, CODES.EPLUGIN);
        fn.apply(target, [...args, cb]);
      } catch (e) {
        if (!calledBack) {
          calledBack = true;
          onResult(e === null || e === undefined ? makeError(`${label} threw ${e}`, CODES.EPLUGIN) : e);
        } else {
          this._warn(e);
        }
      }
    }

    // Runs a plugin call for engine IO `io` and completes it.
    _callPlugin(io, label, target, method, args, withResult, lane, laneOpts) {
      this._invoke(label, target, method, args, (err, result) => {
        if (err) {
          this._complete(io, toWire(err), null);
          return;
        }
        if (!withResult) {
          this._complete(io, null, null);
          return;
        }
        const json = this._resultJson(label, result);
        if (json.error) this._complete(io, json.error, null);
        else this._complete(io, null, json.text);
      }, lane, laneOpts);
    }

    _laneTimeout() {
      return this.options.commandTimeout;
    }

    // A `saveMeta` the engine gave up on called back after all: its (older) state may have
    // landed after a newer one, so write the newest state again.
    _resaveLatest() {
      const state = this._latestState;
      if (state === undefined || this._released) return;
      this._warn(makeError('persistence.saveMeta called back after it had timed out; saving the latest state again',
        CODES.EPLUGINCALLBACK));
      this._invoke('persistence.saveMeta', this.options.persistence, 'saveMeta', [this.id, state], (err) => {
        if (err) this._emitSafe('error', toError(err));
      }, this._metaLane, { timeoutMs: this._laneTimeout(), late: () => this._resaveLatest() });
    }

    _resultJson(label, result) {
      try {
        const text = JSON.stringify(result === undefined ? null : result);
        return { text: text === undefined ? 'null' : text };
      } catch (e) {
        return {
          error: {
            message: `${label} returned a result JSON cannot carry: ${e && e.message}`,
            code: CODES.EBADRESULT,
          },
        };
      }
    }

    // `apply` op: entries `[{index, command?}]` in order, one at a time. With a command:
    // applyCommand; without: saveCommitIndex (membership and other internal entries). A newer
    // `apply` op supersedes a chain still running (the engine retried it).
    _applyChain(op) {
      const gen = ++this._applyGen;
      let entries = op.entries;
      if (!Array.isArray(entries)) {
        entries = op.index !== undefined ? [{ index: op.index, command: op.command }] : [];
      }
      for (const item of entries) {
        if (item && item.req !== undefined && item.req !== null) this._direct.set(item.index, item.req);
      }
      const persistence = this.options.persistence;
      const timeoutMs = this._laneTimeout();
      // How often a long chain tells the engine how far it got (answering commands that wait
      // for more than this node's apply, and keeping the engine's deadline for the chain fresh).
      const progressMs = Math.max(1, Math.min(PROGRESS_EVERY_MS, Math.floor(timeoutMs / 4)));
      let abandoned = false;
      // The whole chain holds the state-machine lane once; the lane gives up on it only after
      // `timeoutMs` without progress.
      this._smLane.run((release, touch) => {
        let k = 0;
        let last = null;
        let reportedK = 0;
        let reportedAt = Date.now();
        const stale = () => abandoned || this._released || gen !== this._applyGen;
        // returns true when the chain may go on with the next item
        const handle = (err, result) => {
          const item = entries[k];
          // a wanted result is kept even from a superseded chain: a retry may find the index
          // already applied and call back with nothing
          if (!err && item.want && !this._released &&
              (result !== undefined || !this._applyResults.has(item.index))) {
            this._applyResults.set(item.index, result);
            if (this._applyResults.size > MAX_KEPT_RESULTS) {
              // results whose `done` never came (the command failed meanwhile): drop the oldest
              this._applyResults.delete(this._applyResults.keys().next().value);
            }
          }
          if (!err && item.index > this._lastApplied) this._lastApplied = item.index;
          if (!err) this._answerDirect(item.index, result);
          if (stale()) {
            release();
            return false;
          }
          if (err) {
            release();
            this._complete(op.io, toWire(err), JSON.stringify(last));
            return false;
          }
          last = item.index;
          k++;
          touch();
          if (k < entries.length && (k - reportedK >= PROGRESS_EVERY_ITEMS || Date.now() - reportedAt >= progressMs)) {
            reportedK = k;
            reportedAt = Date.now();
            this._progress(op.io, item.index);
          }
          if (this.listenerCount('applied log') > 0) this._emitSafe('applied log', item.index);
          return true;
        };
        const run = () => {
          for (;;) {
            if (stale()) {
              release();
              return;
            }
            if (k >= entries.length) {
              // the lane is free before the engine hears of it (its answer may be a new chain)
              release();
              this._complete(op.io, null, JSON.stringify(last));
              return;
            }
            const item = entries[k] || {};
            const hasCommand = Object.prototype.hasOwnProperty.call(item, 'command');
            let sync = true;
            let syncDone = false;
            let syncErr = null;
            let syncResult;
            const after = (err, result) => {
              if (sync) {
                syncDone = true;
                syncErr = err;
                syncResult = result;
              } else if (handle(err, result)) {
                run();
              }
            };
            if (hasCommand) {
              this._invoke('persistence.applyCommand', persistence, 'applyCommand',
                [this.id, item.index, revive(item.command)], after);
            } else {
              this._invoke('persistence.saveCommitIndex', persistence, 'saveCommitIndex',
                [this.id, item.index], after);
            }
            sync = false;
            if (!syncDone) return; // continues from the plugin's callback
            if (!handle(syncErr, syncResult)) return;
          }
        };
        run();
      }, timeoutMs, () => {
        abandoned = true;
      });
    }

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
      this._emitSafe(name, ...converted);
    }

    // The state to hand `saveMeta`. With `from`, the op carries only the log entries from that
    // index on; the earlier ones are those of the previous save (kept here, each parsed once).
    _fullState(op) {
      const state = op.state;
      const log = state && state.log;
      if (!log || !Array.isArray(log.entries)) return state;
      if (op.from !== undefined && op.from !== null) {
        const prev = this._savedEntries;
        const first = ((log.meta && log.meta.lastIncludedIndex) || 0) + 1;
        const kept = [];
        if (prev.length > 0) {
          const base = prev[0].index;
          const end = Math.min(prev.length, op.from - base);
          for (let i = Math.max(0, first - base); i < end; i++) kept.push(prev[i]);
        }
        for (const e of log.entries) kept.push(e);
        log.entries = kept;
      }
      this._savedEntries = log.entries;
      // the plugin gets its own array: it may keep or change it
      return Object.assign({}, state, { log: Object.assign({}, log, { entries: log.entries.slice() }) });
    }

    // A command the engine handed over with its apply item (`req`) completes as soon as that
    // index is applied, by whichever chain applies it.
    _answerDirect(index, result) {
      const req = this._direct.get(index);
      if (req === undefined) return;
      this._direct.delete(index);
      const callback = this._requests.get(req);
      if (!callback) return;
      this._requests.delete(req);
      this._finish(callback, null, result);
    }

    _done(req, error, index) {
      let result;
      if (index !== undefined && index !== null) {
        result = this._applyResults.get(index);
        this._applyResults.delete(index);
      }
      if (req === this._stopReq) {
        this._stopReq = null;
        // success: the `stopped` op follows and resolves the stop callbacks.
        if (error) this._release();
        return;
      }
      const callback = this._requests.get(req);
      if (!callback) return;
      this._requests.delete(req);
      this._finish(callback, error ? toError(error) : null, result);
    }

    // ---------------------------------------------------------------- snapshots

    // `snapshotRead`: read up to maxChunks objects (about maxBytes of JSON) from the state
    // machine's read stream `sid`, opened on first use; only `read()` what is asked for.
    _snapshotRead(op) {
      const { io, sid } = op;
      const maxChunks = Number.isFinite(op.maxChunks) && op.maxChunks > 0 ? op.maxChunks : 64;
      const maxBytes = Number.isFinite(op.maxBytes) && op.maxBytes > 0 ? op.maxBytes : 1 << 20;
      let rec = this._readStreams.get(sid);
      if (!rec) {
        let stream;
        try {
          stream = this.options.persistence.createReadStream(this.id);
          if (!stream || typeof stream.read !== 'function' || typeof stream.on !== 'function') {
            throw makeError('persistence.createReadStream did not return a readable stream', CODES.EPLUGIN);
          }
        } catch (e) {
          this._complete(io, toWire(e), null);
          return;
        }
        rec = { stream, ended: false, error: null, wake: null };
        const wake = () => {
          const fn = rec.wake;
          rec.wake = null;
          if (fn) fn();
        };
        stream.on('end', () => {
          rec.ended = true;
          wake();
        });
        stream.on('error', (err) => {
          rec.error = err || makeError('snapshot read stream failed', CODES.EPLUGIN);
          if (rec.wake) wake();
          else this._warn(rec.error);
        });
        stream.on('readable', wake);
        this._readStreams.set(sid, rec);
      }
      const texts = [];
      let bytes = 0;
      const finish = (done) => {
        if (done) this._readStreams.delete(sid);
        this._complete(io, null, `{"chunks":[${texts.join(',')}],"done":${done ? 'true' : 'false'}}`);
      };
      let timer = null;
      const pump = () => {
        if (timer) {
          clearTimeout(timer);
          timer = null;
        }
        if (this._released || this._readStreams.get(sid) !== rec) return;
        while (texts.length < maxChunks && bytes < maxBytes) {
          if (rec.error) {
            this._closeReadStream(sid);
            this._complete(io, toWire(rec.error), null);
            return;
          }
          let chunk;
          try {
            chunk = rec.stream.read();
          } catch (e) {
            this._closeReadStream(sid);
            this._complete(io, toWire(e), null);
            return;
          }
          if (chunk === null || chunk === undefined) {
            if (atEnd(rec.stream) || rec.ended) {
              finish(true);
              return;
            }
            // nothing buffered: wait for `readable`/`end`/`error`; with chunks in hand, not long
            rec.wake = pump;
            if (texts.length > 0) {
              timer = setTimeout(() => {
                if (rec.wake !== pump) return;
                rec.wake = null;
                finish(false);
              }, SNAPSHOT_PARTIAL_WAIT_MS);
            }
            return;
          }
          let text;
          try {
            text = encode(chunk, CODES.EBADRESULT);
          } catch (e) {
            this._closeReadStream(sid);
            this._complete(io, { message: `snapshot chunk: ${e.message}`, code: CODES.EBADRESULT }, null);
            return;
          }
          texts.push(text);
          bytes += text.length;
        }
        finish(false);
      };
      rec.wake = null; // a retried read replaces one still waiting
      pump();
    }

    _closeReadStream(sid) {
      const rec = this._readStreams.get(sid);
      if (!rec) return;
      this._readStreams.delete(sid);
      rec.wake = null;
      try {
        if (typeof rec.stream.destroy === 'function') rec.stream.destroy();
      } catch (e) {
        this._warn(e);
      }
    }

    // `snapshotWrite`: write chunks, in order, into write stream `sid` (opened on first use),
    // waiting for `drain`; with `end`, finish the stream and then saveCommitIndex(index).
    _snapshotWrite(op) {
      let rec = this._writeStreams.get(op.sid);
      if (!rec) {
        let stream;
        try {
          stream = this.options.persistence.createWriteStream(this.id);
          if (!stream || typeof stream.write !== 'function' || typeof stream.on !== 'function') {
            throw makeError('persistence.createWriteStream did not return a writable stream', CODES.EPLUGIN);
          }
        } catch (e) {
          this._complete(op.io, toWire(e), null);
          return;
        }
        rec = { stream, error: null, finished: false, queue: Promise.resolve(), listeners: new Set() };
        stream.on('error', (err) => {
          rec.error = err || makeError('snapshot write stream failed', CODES.EPLUGIN);
          if (rec.listeners.size === 0) this._warn(rec.error);
          for (const fn of [...rec.listeners]) fn();
        });
        stream.on('finish', () => {
          rec.finished = true;
          for (const fn of [...rec.listeners]) fn();
        });
        stream.on('drain', () => {
          for (const fn of [...rec.listeners]) fn();
        });
        this._writeStreams.set(op.sid, rec);
      }
      const sid = op.sid;
      // waits until `test()` holds or the stream fails; resolves with the error, if any
      const waitFor = (test) => new Promise((resolve) => {
        const check = () => {
          if (rec.error) {
            rec.listeners.delete(check);
            resolve(rec.error);
          } else if (test()) {
            rec.listeners.delete(check);
            resolve(null);
          }
        };
        rec.listeners.add(check);
        check();
      });
      const fail = (err) => {
        this._abortWriteStream(sid);
        this._complete(op.io, toWire(err), null);
      };
      rec.queue = rec.queue.then(async () => {
        if (this._released || this._writeStreams.get(sid) !== rec) return;
        const chunks = Array.isArray(op.chunks) ? op.chunks : [];
        for (const chunk of chunks) {
          if (rec.error) return fail(rec.error);
          let ok;
          try {
            ok = rec.stream.write(revive(chunk));
          } catch (e) {
            return fail(e);
          }
          if (ok === false) {
            let drained = false;
            const onDrain = () => { drained = true; };
            rec.stream.once('drain', onDrain);
            const err = await waitFor(() => drained || !rec.stream.writableNeedDrain);
            rec.stream.removeListener('drain', onDrain);
            if (err) return fail(err);
          }
        }
        if (!op.end) {
          if (rec.error) return fail(rec.error);
          this._complete(op.io, null, null);
          return undefined;
        }
        try {
          rec.stream.end();
        } catch (e) {
          return fail(e);
        }
        const err = await waitFor(() => rec.finished);
        if (err) return fail(err);
        this._writeStreams.delete(sid);
        this._callPlugin(op.io, 'persistence.saveCommitIndex', this.options.persistence, 'saveCommitIndex',
          [this.id, op.index], false);
        return undefined;
      }).catch((e) => fail(e));
    }

    _abortWriteStream(sid) {
      this._abortedSids.add(sid);
      const rec = this._writeStreams.get(sid);
      if (!rec) return;
      this._writeStreams.delete(sid);
      if (!rec.error) rec.error = makeError('snapshot write aborted', CODES.ESTOPPED);
      for (const fn of [...rec.listeners]) fn();
      try {
        if (typeof rec.stream.destroy === 'function') rec.stream.destroy();
      } catch (e) {
        this._warn(e);
      }
    }

    // ---------------------------------------------------------------- transport

    _hookConnection(conn, peerId, metadata, direction) {
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
              if (!this._released) this.emit(ev, rec.peer);
            });
          }
          conn.on('close', () => {
            if (direction === 'in') this._incoming.delete(rec);
            this.emit('close', rec.peer);
          });
        } catch (e) {
          this._warn(e);
        }
      }
      return rec;
    }

    _onIncomingConnection(args) {
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
      if (this._stopping || this._released) {
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
        const known = this.peerMeta(id);
        metadata = known === undefined ? null : known;
      }
      if (metadata === undefined) metadata = null;
      const rec = this._hookConnection(conn, id, metadata, 'in');
      this._incoming.add(rec);
      this._emitSafe('connected', rec.peer);
    }

    _connect(peerId, metadata) {
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
      let conn;
      try {
        conn = this.options.transport.connect(this.id, this.metadata, peerId, metadata);
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
      if (conn.pipelining === true && this.options.transport.pipelining !== true && this._native) {
        // this connection, unlike its transport, pairs replies with requests
        this._run(this._native.pipelining(peerId));
      }
      this._emitSafe('connected', rec.peer);
      return rec;
    }

    _disconnect(peerId) {
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

    _send(op) {
      let rec = this._outgoing.get(op.peer);
      if (!rec && this._wanted.has(op.peer)) {
        // transport.connect failed earlier: try again now that the engine needs the peer
        rec = this._openOutgoing(op.peer, this._wanted.get(op.peer));
      }
      if (!rec) {
        this._complete(op.io, { message: 'not connected', code: CODES.ENOTCONNECTED }, null);
        return;
      }
      this._callPlugin(op.io, 'connection.send', rec.conn, 'send', [op.type, op.args], true);
    }

    _onPeerRequest(rec, type, args, reply) {
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
      if (this._stopping || this._released || !this._native) {
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
      const id = ++this._seq;
      this._replies.set(id, answer);
      try {
        this._run(this._native.receive(id, String(type), argsJson === undefined ? 'null' : argsJson,
          rec.peer.id, this._lastApplied));
      } catch (e) {
        this._replies.delete(id);
        answer(toError(e));
      }
    }

    _reply(op) {
      const answer = this._replies.get(op.id);
      if (!answer) return;
      this._replies.delete(op.id);
      if (op.error) answer(toError(op.error));
      else answer(null, op.result === undefined ? null : op.result);
    }

    // ---------------------------------------------------------------- release

    _closeServer(done) {
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

    _release() {
      if (this._released) return;
      this.currentTerm(); // keep the last term readable after the engine is gone
      this._released = true;
      this._stopping = true;
      this._cachedState = 'stopped';

      const pending = [...this._requests.values()];
      this._requests.clear();
      for (const callback of pending) {
        this._finish(callback, makeError('node stopped before the request completed', CODES.ESTOPPED));
      }
      const replies = [...this._replies.values()];
      this._replies.clear();
      for (const answer of replies) answer(makeError('node is stopped', CODES.ESTOPPED));

      this._applyResults.clear();
      this._direct.clear();
      for (const sid of [...this._readStreams.keys()]) this._closeReadStream(sid);
      for (const sid of [...this._writeStreams.keys()]) this._abortWriteStream(sid);

      for (const rec of this._outgoing.values()) this._closeRecord(rec);
      this._outgoing.clear();
      this._wanted.clear();
      for (const rec of this._incoming) this._closeRecord(rec);
      this._incoming.clear();

      this._closeServer(() => {
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

function normalizeOp(raw) {
  if (typeof raw === 'string') return { op: raw };
  if (raw === null || typeof raw !== 'object') return null;
  if (typeof raw.op === 'string') return raw;
  // serde's externally tagged form: { "loadMeta": { "io": 1 } }
  const keys = Object.keys(raw);
  if (keys.length === 1 && raw[keys[0]] !== null && typeof raw[keys[0]] === 'object' &&
      !Array.isArray(raw[keys[0]])) {
    return Object.assign({ op: keys[0] }, raw[keys[0]]);
  }
  return null;
}

module.exports = { createNodeClass, ENGINE_EVENTS, STATE_NAMES, normalizeOp };
