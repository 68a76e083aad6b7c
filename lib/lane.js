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
    // The running call: its number (0: none), its task, and its deadline (ms, 0: none). Kept in
    // the lane's own fields, not in a record per call: the lane lives long, and records of its
    // calls that V8 moved to the old generation kept every young closure and argument they
    // reached alive through each scavenge (3x1 bench: old space 6 -> 19 MB, 10 ms scavenges).
    this._running = 0;
    this._task = null;
    this._deadline = 0;
    this._calls = 0;
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
    const call = ++this._calls;
    this._running = call;
    this._task = task;
    this._deadline = task.timeoutMs > 0 ? Date.now() + task.timeoutMs : 0;
    const release = () => {
      if (this._running !== call) return;
      this._next();
    };
    const touch = () => {
      if (this._running === call && task.timeoutMs > 0) this._deadline = Date.now() + task.timeoutMs;
    };
    if (this._deadline > 0) this._watch(this._deadline);
    try {
      task.fn(release, touch);
    } catch (e) {
      release();
      throw e;
    }
  }

  // The running call is over (released or abandoned): the next one starts.
  _next() {
    this._running = 0;
    this._task = null;
    this._deadline = 0;
    const t = this._queue.shift();
    if (t) this._start(t);
    else this._busy = false;
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
    if (this._running === 0 || this._deadline === 0) return;
    if (Date.now() < this._deadline) {
      this._watch(this._deadline);
      return;
    }
    const task = this._task;
    this._running = 0; // its late release is ignored
    if (task.onAbandon) task.onAbandon();
    this._next();
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
