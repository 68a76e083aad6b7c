'use strict';

// Dispatch: runs the engine's batches of operations (docs/PROTOCOL.md) one after another, routes
// each op to the part that executes it, and hands the outcome of each IO back to the engine.

const { makeError, CODES } = require('../errors');
const { callForIo } = require('./plugin-call');

function rethrowLater(err) {
  process.nextTick(() => {
    throw err;
  });
}

class Dispatcher {
  // `node`: the Node, whose parts (`_meta`, `_apply`, `_snapshots`, `_connections`) run the ops.
  constructor(node) {
    this._node = node;
    this._dispatching = false; // a batch is running (see `run`)
    this._backlog = []; // batches that arrived while another ran
    this._laneRelease = new Map(); // io -> release of the lane its op holds until it completes
    this.complete = this.complete.bind(this);
    this._warn = (e) => node._warn(e); // for plugin calls: made once, not per op
  }

  // Runs a batch the engine returned. Batches run one after another, in the order the engine
  // produced them: one that arrives while another runs (a plugin called back synchronously,
  // or a callback made a new request) waits for it.
  // After the outermost batch (or an input that produced none: the applied index may have moved),
  // the node's watchers look at what changed (`_afterBatch`).
  run(batch) {
    if (typeof batch === 'string' && batch !== '') {
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
    } else if (this._dispatching) {
      return;
    }
    this._node._afterBatch();
  }

  // The engine's threadsafe function: a wake-up after a timer queued operations (then
  // `drain()` takes them), or a whole batch.
  onBatch(args) {
    const node = this._node;
    // napi may call back with (value) or, error-first, (null, value)
    if (args[0] instanceof Error) {
      node._emitSafe('error', args[0]);
      return;
    }
    const batch = args.find((a) => typeof a === 'string' && a !== '');
    if (batch !== undefined) {
      this.run(batch);
      return;
    }
    if (node._released || !node._native || typeof node._native.drain !== 'function') return;
    let queued;
    try {
      queued = node._native.drain();
    } catch (e) {
      node._warn(e);
      return;
    }
    this.run(queued);
  }

  // A batch is a JSON array of ops, each `{op: name, ...fields}` (serde's `tag = "op"`).
  _dispatch(batchJson) {
    let ops;
    try {
      ops = JSON.parse(batchJson);
    } catch (e) {
      this._node._emitSafe('error', makeError(`engine sent a batch that is not JSON: ${e.message}`, CODES.EUNKNOWNOP));
      return;
    }
    if (!Array.isArray(ops)) {
      this._node._emitSafe('error', makeError('engine sent a batch that is not an array', CODES.EUNKNOWNOP));
      return;
    }
    for (const op of ops) this.runOpSafe(op);
  }

  runOpSafe(op) {
    try {
      this._runOp(op);
    } catch (e) {
      // only a user listener or callback can get here: behave like EventEmitter would
      rethrowLater(e);
    }
  }

  _runOp(op) {
    const node = this._node;
    if (op === null || typeof op !== 'object' || typeof op.op !== 'string') {
      node._warn(makeError('engine sent an operation the wrapper cannot read', CODES.EUNKNOWNOP));
      return;
    }
    if (node._released) return;
    const persistence = node.options.persistence;
    const warn = this._warn;
    switch (op.op) {
      case 'loadMeta':
        node._stats.opStarted(op);
        callForIo(warn, this.complete, op.io, 'persistence.loadMeta', persistence, 'loadMeta', [node.id], true);
        return;
      case 'lastApplied':
        node._stats.opStarted(op);
        callForIo(warn, this.complete, op.io, 'persistence.lastAppliedCommitIndex', persistence,
          'lastAppliedCommitIndex', [node.id], true);
        return;
      case 'saveMeta':
        node._meta.save(op);
        return;
      case 'apply':
        node._apply.apply(op);
        return;
      case 'quiesce':
        node._apply.quiesce(op.io);
        return;
      case 'connect':
        node._connections.connect(op.peer, op.metadata === undefined ? null : op.metadata);
        return;
      case 'disconnect':
        node._connections.disconnect(op.peer);
        return;
      case 'send':
        node._connections.send(op);
        return;
      case 'reply':
        node._connections.reply(op);
        return;
      case 'event':
        node._event(op.name, Array.isArray(op.args) ? op.args : []);
        return;
      case 'done':
        node._done(op.req, op.error, op.index);
        return;
      case 'snapshotRead':
        this._snapshotOp(op);
        node._snapshots.read(op);
        return;
      case 'snapshotOpen':
        node._snapshots.open(op);
        return;
      case 'snapshotClose':
        this._snapshotOp(op);
        node._snapshots.close(op.sid);
        return;
      case 'snapshotReset':
        this._snapshotOp(op);
        node._snapshots.reset(op);
        return;
      case 'snapshotWrite':
        this._snapshotOp(op);
        node._snapshots.write(op);
        return;
      case 'snapshotAbort':
        this._snapshotOp(op);
        node._snapshots.abort(op.sid);
        return;
      case 'stopped':
        node._release();
        return;
      default:
        if (op.io !== undefined) {
          this.complete(op.io, {
            message: `the wrapper does not know the operation ${JSON.stringify(op.op)}`,
            code: CODES.EUNKNOWNOP,
          }, null);
        }
        node._warn(makeError(`unknown engine operation ${JSON.stringify(op.op)}`, CODES.EUNKNOWNOP));
    }
  }

  // A snapshot op is counted (those that call a plugin) and logged (skiff:snapshot).
  _snapshotOp(op) {
    this._node._stats.opStarted(op);
    this._node._debug.op(op);
  }

  // The op of IO `io` holds a lane (`release`) until the engine hears how it went.
  holdUntilComplete(io, release) {
    this._laneRelease.set(io, release);
  }

  // Tells the engine how far a long-running IO (an apply chain) got.
  progress(io, index) {
    const node = this._node;
    if (!node._native || node._released) return;
    try {
      this.run(node._native.progress(io, index, node._apply.lastApplied));
    } catch (e) {
      node._warn(e);
    }
  }

  // Hands the outcome of IO `io` to the engine: a wire error, or the result as JSON text.
  complete(io, error, resultJson) {
    const node = this._node;
    const release = this._laneRelease.get(io);
    if (release) {
      this._laneRelease.delete(io);
      release();
    }
    const rec = node._stats.ioCompleted(io, error);
    if (rec !== undefined && error) node._debug.ioFailed(rec.label, error);
    if (!node._native || node._released) return;
    try {
      this.run(node._native.complete(io, error, resultJson, node._apply.lastApplied));
    } catch (e) {
      node._warn(e);
    }
  }
}

module.exports = { Dispatcher, rethrowLater };
