'use strict';

// The user's calls (`command`, `join`, `leave`) waiting for the engine: each callback is held
// under its request id until a `done` op answers it, or, for a command the engine handed over
// with its apply item, until that log index is applied.

// At most this many applyCommand results wait for their command's `done`.
const MAX_KEPT_RESULTS = 100000;

class Requests {
  // `finish(callback, err, result)` calls a callback back (on the next tick inside an API call).
  constructor(finish) {
    this._finish = finish;
    this._callbacks = new Map(); // reqId -> callback(err, result)
    this._direct = new Map(); // log index -> reqId of a command answered when that index is applied
    this.results = new Map(); // log index -> value applyCommand called back with (items marked want)
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

  // Apply items that carry a `req` answer that command as soon as their index is applied.
  expect(entries) {
    for (const item of entries) {
      if (item && item.req !== undefined && item.req !== null) this._direct.set(item.index, item.req);
    }
  }

  // Index `item.index` was applied with `result`: keep it when its command's `done` wants it,
  // and answer the command waiting on that index directly.
  applied(item, result) {
    // a wanted result is kept even from a superseded chain: a retry may find the index
    // already applied and call back with nothing
    if (item.want && (result !== undefined || !this.results.has(item.index))) {
      this.results.set(item.index, result);
      if (this.results.size > MAX_KEPT_RESULTS) {
        // results whose `done` never came (the command failed meanwhile): drop the oldest
        this.results.delete(this.results.keys().next().value);
      }
    }
    const req = this._direct.get(item.index);
    if (req === undefined) return;
    this._direct.delete(item.index);
    this.settle(req, null, result);
  }

  // The kept applyCommand result of log index `index` (once).
  takeResult(index) {
    if (index === undefined || index === null) return undefined;
    const result = this.results.get(index);
    this.results.delete(index);
    return result;
  }

  settle(req, err, result) {
    const callback = this._callbacks.get(req);
    if (!callback) return;
    this._callbacks.delete(req);
    this._finish(callback, err, result);
  }

  // Fails every waiting request with `err` and forgets all kept results.
  failAll(err) {
    const pending = [...this._callbacks.values()];
    this._callbacks.clear();
    for (const callback of pending) this._finish(callback, err);
    this.results.clear();
    this._direct.clear();
  }
}

module.exports = { Requests };
