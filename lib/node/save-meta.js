'use strict';

// `saveMeta` ops: writes the engine's state (term, vote, log) one save at a time, through
// persistence.saveLog (the incremental extension: the engine's `from` deltas as they are) when the
// plugin has it, else through persistence.saveMeta (the full log rebuilt from the deltas), and
// releases the messages that had to wait for the save.

const { makeError, toWire, toError, describe, CODES } = require('../errors');
const { Lane } = require('../lane');
const { invoke } = require('./plugin-call');
const { LogDelta } = require('./log-delta');

class MetaSaver {
  // `node`: the Node (plugin, warnings, connections); `io`: the Dispatcher (complete, runOp).
  constructor(node, io) {
    this._node = node;
    this._io = io;
    this._lane = new Lane(); // saveMeta calls, one at a time
    this._latest = undefined; // the newest state the engine asked saveMeta to write
    this._savedEntries = []; // log entries of the last save, for the next one's `from`
    // Set when the plugin has saveLog (checked once: a plugin does not change its methods).
    this._log = typeof (node.options.persistence || {}).saveLog === 'function' ? new LogDelta() : null;
  }

  save(op) {
    const node = this._node;
    const after = Array.isArray(op.after) ? op.after : [];
    const started = node._stats.now();
    const onResult = (err) => {
      const label = node._stats.finished('saveMeta', started, err);
      if (err) {
        node._debug.ioFailed(label, err);
        // what waited for this save is not sent: peers time out and ask again. The
        // requests among it are still answered, with a refusal.
        for (const a of after) {
          if (a && a.op === 'reply') {
            node._connections.reply({ id: a.id, error: { message: `not saved: ${describe(err)}`, code: CODES.EPERSISTENCE } });
          }
        }
        this._io.complete(op.io, toWire(err), null);
        return;
      }
      // the messages that promise what this save made durable go out now, without a hop
      // through the engine
      for (const a of after) this._io.runOpSafe(a);
      this._io.complete(op.io, null, null);
    };
    if (this._log !== null) {
      this._callLog(this._log.next(op), onResult);
      return;
    }
    this._latest = this._fullState(op);
    this._call(this._latest, onResult);
  }

  // The node is gone: no save is timed out any more (the lane's timer is cleared).
  release() {
    this._lane.close();
  }

  // One saveLog call of the newest delta; the LogDelta hears how each call ends, a late one too.
  _callLog(delta, onResult) {
    const node = this._node;
    const log = this._log;
    const version = log.version;
    log.started();
    invoke((e) => node._warn(e), 'persistence.saveLog', node.options.persistence, 'saveLog', [node.id, delta],
      (err) => {
        log.finished(!err, version);
        onResult(err);
      }, this._lane, {
        timeoutMs: node.options.commandTimeout,
        late: (err) => {
          log.finished(!err, version);
          this._resaveLatest();
        },
      });
  }

  _call(state, onResult) {
    const node = this._node;
    invoke((e) => node._warn(e), 'persistence.saveMeta', node.options.persistence, 'saveMeta', [node.id, state],
      onResult, this._lane, { timeoutMs: node.options.commandTimeout, late: () => this._resaveLatest() });
  }

  // A `saveMeta` the engine gave up on called back after all: its (older) state may have
  // landed after a newer one, so write the newest state again.
  _resaveLatest() {
    const node = this._node;
    const logged = this._log !== null;
    if (node._released || (logged ? !this._log.hasState() : this._latest === undefined)) return;
    const method = logged ? 'saveLog' : 'saveMeta';
    node._warn(makeError(`persistence.${method} called back after it had timed out; saving the latest state again`,
      CODES.EPLUGINCALLBACK));
    const onResult = (err) => {
      if (err) node._emitSafe('error', toError(err));
    };
    if (logged) this._callLog(this._log.current(), onResult);
    else this._call(this._latest, onResult);
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
}

module.exports = { MetaSaver };
