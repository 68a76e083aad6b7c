'use strict';

// Calling user code from inside the transport: a callback or listener that throws must not unwind
// the transport's own bookkeeping, and an event nobody listens to must not become an exception.

// Calls a user callback; an exception it throws surfaces as an uncaught exception on a fresh
// stack (as EventEmitter would), without unwinding the caller.
function safeCall(fn, ...args) {
  try {
    fn(...args);
  } catch (e) {
    process.nextTick(() => { throw e; });
  }
}

// Emits `event` with `err` only when someone listens: an 'error' or 'warning' the user did not
// ask to hear about is dropped, never thrown.
function emitIfHeard(emitter, event, err) {
  if (emitter.listenerCount(event) > 0) safeCall(() => emitter.emit(event, err));
}

function emitError(emitter, err) {
  emitIfHeard(emitter, 'error', err);
}

function emitWarning(emitter, err) {
  emitIfHeard(emitter, 'warning', err);
}

// Calls every callback in `callbacks` (emptying it) with `null`: the close callbacks of a
// connection once its socket is gone.
function callAll(callbacks) {
  for (const cb of callbacks.splice(0)) safeCall(cb, null);
}

module.exports = { safeCall, emitError, emitWarning, callAll };
