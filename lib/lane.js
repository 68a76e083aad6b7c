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
class Lane {
  constructor() {
    this._busy = false;
    this._queue = [];
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
    let released = false;
    let timer = null;
    let touchedAt = 0;
    const next = () => {
      const t = this._queue.shift();
      if (t) this._start(t);
      else this._busy = false;
    };
    const release = () => {
      if (released) return;
      released = true;
      if (timer) clearTimeout(timer);
      next();
    };
    const arm = (ms) => {
      timer = setTimeout(() => {
        if (released) return;
        const idle = Date.now() - touchedAt;
        if (touchedAt > 0 && idle < task.timeoutMs) {
          arm(task.timeoutMs - idle);
          return;
        }
        released = true;
        if (task.onAbandon) task.onAbandon();
        next();
      }, ms);
      if (typeof timer.unref === 'function') timer.unref();
    };
    const touch = () => {
      touchedAt = Date.now();
    };
    if (task.timeoutMs > 0) arm(task.timeoutMs);
    try {
      task.fn(release, touch);
    } catch (e) {
      release();
      throw e;
    }
  }

  get pending() {
    return this._queue.length + (this._busy ? 1 : 0);
  }
}

module.exports = { Lane };
