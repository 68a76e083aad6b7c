'use strict';

// A lane runs plugin calls one after another: the next starts only once the previous one has
// called back. The engine times out calls that never call back and retries them, but a timed-out
// call may still take effect later. Without a lane, a late `removeAllState` could wipe a state
// machine that a later snapshot had just written, or a late `saveMeta` could overwrite a newer
// state. With one lane for `saveMeta` and one for everything that touches the state machine, a
// retry waits behind the call it replaces.
//
// A call that never calls back must not wedge the node, so a task may give a `timeoutMs` after
// which the lane stops waiting for it (`onAbandon` is told, and its late release is ignored).
// Destructive calls (`removeAllState`) give none: the lane waits for them however long it takes.
//
// The timeout costs no timer per call: a lane keeps one timer, armed for the running call's
// deadline or an earlier one, and re-armed when it fires early. Calls that finish in time (nearly
// all) only move a deadline, where a timer set and cleared per call cost about a microsecond each,
// two calls per node per command.
class Lane {
  constructor() {
    this._busy = false;
    this._queue = [];
    // The running call: { task, released, deadline (ms, 0: none), abandon() }, or null.
    this._current = null;
    // The lane's one timer, and the time it fires at. Invariant: while a call with a deadline
    // runs, the timer is armed for that deadline or earlier (until `close()`).
    this._timer = null;
    this._timerAt = 0;
    this._closed = false;
  }

  // `fn(release, touch)` starts a plugin call (or a chain of them) and must call `release()` once
  // it is over. A long chain calls `touch()` as it makes progress: the timeout then counts from
  // the last touch instead of from the start.
  run(fn, timeoutMs, onAbandon) {
    const task = { fn, timeoutMs, onAbandon };
    if (this._busy) {
      this._queue.push(task);
      return;
    }
    this._busy = true;
    this._start(task);
  }

  _start(task) {
    const current = { task, released: false, deadline: 0, abandon: null };
    this._current = current;
    const next = () => {
      if (this._current === current) this._current = null;
      const t = this._queue.shift();
      if (t) this._start(t);
      else this._busy = false;
    };
    const release = () => {
      if (current.released) return;
      current.released = true;
      next();
    };
    current.abandon = () => {
      current.released = true;
      if (task.onAbandon) task.onAbandon();
      next();
    };
    const touch = () => {
      if (task.timeoutMs > 0) current.deadline = Date.now() + task.timeoutMs;
    };
    if (task.timeoutMs > 0) {
      current.deadline = Date.now() + task.timeoutMs;
      this._watch(current.deadline);
    }
    try {
      task.fn(release, touch);
    } catch (e) {
      release();
      throw e;
    }
  }

  // Makes sure the timer fires by `deadline`.
  _watch(deadline) {
    if (this._closed || (this._timer !== null && this._timerAt <= deadline)) return;
    if (this._timer !== null) clearTimeout(this._timer);
    this._timerAt = deadline;
    this._timer = setTimeout(() => this._expire(), Math.max(1, deadline - Date.now()));
    if (typeof this._timer.unref === 'function') this._timer.unref();
  }

  // The timer fired: abandons the running call if it is past its deadline, else waits for it.
  _expire() {
    this._timer = null;
    const current = this._current;
    if (current === null || current.released || current.deadline === 0) return;
    if (Date.now() < current.deadline) {
      this._watch(current.deadline);
      return;
    }
    current.abandon();
  }

  // The node is gone: the timer is cleared and no call is timed out any more.
  close() {
    this._closed = true;
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
  }

  get pending() {
    return this._queue.length + (this._busy ? 1 : 0);
  }
}

module.exports = { Lane };
