'use strict';

// The user's calls (`command`, `join`, `leave`) waiting for the engine: each callback is held
// under its request id until a `done` op answers it. The engine alone decides when and how a
// request completes; this only holds the callbacks, and the applyCommand results of the apply
// items the engine marked `want` (a local command waits for them), by log index, for the `done`
// op that hands one to its command (or drops it when the command failed).

// At most this many applyCommand results wait for their command's `done`: the last bound on
// results no `done` will take (a command that timed out while its entry was being applied).
const MAX_KEPT_RESULTS = 100000;

class Requests {
  // `finish(callback, err, result)` calls a callback back (on the next tick inside an API call).
  constructor(finish) {
    this._finish = finish;
    this._callbacks = new Map(); // reqId -> callback(err, result)
    this._results = new Map(); // log index -> value applyCommand called back with (items marked want)
  }

  add(req, callback) {
    this._callbacks.set(req, callback);
  }

  // Forgets a request the engine refused to take; returns its callback.
  remove(req) {
    const callback = this._callbacks.get(req);
    this._callbacks.delete(req);
    return callback;
  }

  // Item `item` was applied with `result`: kept when the engine marked it `want`. A result is
  // kept even from a superseded chain: a retry may find the index already applied and call back
  // with nothing.
  keep(item, result) {
    if (!item.want || (result === undefined && this._results.has(item.index))) return;
    this._results.set(item.index, result);
    if (this._results.size > MAX_KEPT_RESULTS) this._results.delete(this._results.keys().next().value);
  }

  // `done` op: request `req` finished with `err`, or with the result kept for log index `index`.
  // The result is taken either way: a failed command's is never wanted again.
  done(req, err, index) {
    let result;
    if (index !== undefined && index !== null) {
      result = this._results.get(index);
      this._results.delete(index);
    }
    const callback = this._callbacks.get(req);
    if (!callback) return;
    this._callbacks.delete(req);
    this._finish(callback, err, err ? undefined : result);
  }

  // Fails every waiting request with `err` and forgets all kept results.
  failAll(err) {
    const pending = [...this._callbacks.values()];
    this._callbacks.clear();
    this._results.clear();
    for (const callback of pending) this._finish(callback, err);
  }
}

module.exports = { Requests };
