'use strict';

// The apply chain: runs the engine's `apply` ops against the state machine in the state-machine
// lane (runs of commands as one persistence.applyCommands batch when the plugin has it, else one
// applyCommand at a time), and knows how far applying got.

const { toWire, makeError, describe, CODES } = require('../errors');
const { revive } = require('../codec');
const { Lane } = require('../lane');
const { invoke } = require('./plugin-call');

// An apply chain reports its progress to the engine after this many items, or this long, and
// when it ends: the engine answers the commands waiting for the items applied so far in the ops
// of that call.
const PROGRESS_EVERY_ITEMS = 32;
const PROGRESS_EVERY_MS = 20;
// Sooner once an item a local command waits for (marked `want`) was applied since the last
// report: its caller waits for it. The bound is on time alone, not on items: every report runs a
// round of the engine, and one per command cost about a sixth more CPU per command at 256
// clients; one every 8 such items still made about twice the engine rounds of one every 32
// (0.18 against 0.09 progress calls per command at 256 clients, 0.13 against 0.04 at 64).
const OWED_EVERY_MS = 2;

// At most this many commands go to one applyCommands call.
const MAX_BATCH = 4096;

function hasCommand(item) {
  return item !== null && typeof item === 'object' && Object.prototype.hasOwnProperty.call(item, 'command');
}

// How many items from `k` on carry a command (at most MAX_BATCH): one applyCommands batch.
function commandRun(entries, k) {
  let n = 0;
  while (k + n < entries.length && n < MAX_BATCH && hasCommand(entries[k + n])) n++;
  return n;
}

// What an applyCommands answer for `n` commands says: the first `taken` took effect, in order,
// with `results[i]` the result of the i-th, and `err` (or null) stopped the rest. The results
// must line up with the commands: on success one per command; with an error, those of the
// prefix that took effect (none without an array). Any other answer is the plugin's error
// (EBADRESULT), never a success with results missing: a command's caller would get `undefined`.
function batchAnswer(n, err, answer) {
  const list = Array.isArray(answer) ? answer : null;
  let taken = list !== null && list.length <= n ? list.length : 0;
  if (err) {
    if (taken === n) taken = 0; // an error with every result: which of them took effect is unknown
  } else if (taken < n) {
    const got = list !== null ? `${list.length} results` : answer === null ? 'null' : typeof answer;
    err = makeError(`persistence.applyCommands called back with ${got} for ${n} commands`, CODES.EBADRESULT);
  }
  try {
    return { taken, err, results: taken === 0 ? [] : Array.prototype.slice.call(list, 0, taken) };
  } catch (e) { // an element's getter threw
    const bad = makeError(`persistence.applyCommands results cannot be read: ${describe(e)}`, CODES.EBADRESULT);
    return { taken: 0, err: bad, results: [] };
  }
}

class ApplyChain {
  // `node`: the Node (plugins, events, its Requests); `io`: the Dispatcher (complete, progress).
  constructor(node, io) {
    this._node = node;
    this._io = io;
    this._gen = 0; // bumped to stop the running chain
    // Highest index an apply chain saw applied: the `applied` hint on every engine call, and
    // `quiesce`'s answer.
    this.lastApplied = 0;
    // Every call that touches the state machine (applyCommand, saveCommitIndex, removeAllState,
    // snapshot writes) takes its turn here.
    this.lane = new Lane();
  }

  // No chain may go on: the state machine is about to be cleared or read as it stands.
  supersede() {
    this._gen += 1;
  }

  // `quiesce` op: stop the apply chain, wait until no state-machine call is under way, and tell
  // the engine exactly how far applying got: a snapshot read then starts from that index.
  quiesce(io) {
    this.supersede();
    this.lane.run((release) => {
      release();
      this._io.complete(io, null, JSON.stringify(this.lastApplied));
    });
  }

  // `apply` op: entries `[{index, command?, want?}]` in order. With a command: applyCommand,
  // or applyCommands for each run of them; without: saveCommitIndex (membership and other
  // internal entries). A newer `apply` op supersedes a chain still running (the engine retried it).
  apply(op) {
    const node = this._node;
    const gen = ++this._gen;
    const entries = Array.isArray(op.entries) ? op.entries : [];
    const persistence = node.options.persistence;
    const warn = (e) => node._warn(e);
    const timeoutMs = node.options.commandTimeout;
    // How often a long chain tells the engine how far it got (answering commands that wait
    // for more than this node's apply, and keeping the engine's deadline for the chain fresh).
    const progressMs = Math.max(1, Math.min(PROGRESS_EVERY_MS, Math.floor(timeoutMs / 4)));
    let abandoned = false;
    // The whole chain holds the state-machine lane once; the lane gives up on it only after
    // `timeoutMs` without progress.
    const batched = typeof (persistence || {}).applyCommands === 'function';
    const started = node._stats.now();
    // Tells the engine how the chain ended: applied through `last`, then stopped by `err` (or
    // not); timed here for stats().
    const finish = (err, last) => {
      const label = node._stats.finished('apply', started, err);
      if (err) node._debug.ioFailed(label, err);
      this._io.complete(op.io, err ? toWire(err) : null, JSON.stringify(last));
    };
    this.lane.run((release, touch) => {
      let k = 0;
      let last = null;
      let reportedK = 0;
      let reportedAt = Date.now();
      let owed = false; // an item marked `want` was applied since the last report
      const stale = () => abandoned || node._released || gen !== this._gen;
      // Items k .. k+taken-1 were applied (`results[i]` the value of item k+i), and `err` (or
      // null) stopped the chain there; returns true when the chain may go on with the next item.
      const handle = (taken, err, results) => {
        for (let i = 0; i < taken; i++) {
          const item = entries[k + i];
          if (item.index > this.lastApplied) this.lastApplied = item.index;
          if (item.want) {
            owed = true;
            if (!node._released) node._requests.keep(item, results[i]);
          }
        }
        if (stale()) {
          release();
          return false;
        }
        const before = k;
        if (taken > 0) {
          last = entries[k + taken - 1].index;
          k += taken;
          touch();
          if (node.listenerCount('applied log') > 0) {
            for (let i = before; i < k; i++) node._emitSafe('applied log', entries[i].index);
          }
        }
        if (err) {
          // the engine counts what was applied (`last`) and retries from the next item
          release();
          finish(err, last);
          return false;
        }
        const within = owed ? Math.min(OWED_EVERY_MS, progressMs) : progressMs;
        if (k < entries.length && (k - reportedK >= PROGRESS_EVERY_ITEMS || Date.now() - reportedAt >= within)) {
          owed = false;
          reportedK = k;
          reportedAt = Date.now();
          this._io.progress(op.io, last);
        }
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
            finish(null, last);
            return;
          }
          const n = batched ? Math.max(1, commandRun(entries, k)) : 1;
          let sync = true;
          let syncDone = false;
          let syncTaken = 0;
          let syncErr = null;
          let syncResults;
          const after = (taken, err, results) => {
            if (sync) {
              syncDone = true;
              syncTaken = taken;
              syncErr = err;
              syncResults = results;
            } else if (handle(taken, err, results)) {
              run();
            }
          };
          call(entries, k, n, after);
          sync = false;
          if (!syncDone) return; // continues from the plugin's callback
          if (!handle(syncTaken, syncErr, syncResults)) return;
        }
      };
      // Calls the plugin for items at .. at+n-1 (n commands, or one item without): `done(taken,
      // err, results)`, the first `taken` of them applied with `results`.
      const call = (items, at, n, done) => {
        const item = items[at] || {};
        if (batched && hasCommand(item)) {
          const batch = new Array(n);
          for (let i = 0; i < n; i++) batch[i] = { index: items[at + i].index, command: revive(items[at + i].command) };
          invoke(warn, 'persistence.applyCommands', persistence, 'applyCommands', [node.id, batch],
            (err, answer) => {
              const a = batchAnswer(n, err, answer);
              done(a.taken, a.err, a.results);
            });
        } else if (hasCommand(item)) {
          invoke(warn, 'persistence.applyCommand', persistence, 'applyCommand',
            [node.id, item.index, revive(item.command)], (err, result) => done(err ? 0 : 1, err, [result]));
        } else {
          invoke(warn, 'persistence.saveCommitIndex', persistence, 'saveCommitIndex',
            [node.id, item.index], (err) => done(err ? 0 : 1, err, []));
        }
      };
      run();
    }, timeoutMs, () => {
      abandoned = true;
    });
  }
}

module.exports = { ApplyChain };
