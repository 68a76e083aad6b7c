'use strict';

// Guarded plugin calls: whatever a user's plugin does (throws, calls back twice, returns what JSON
// cannot carry), its outcome reaches the caller exactly once, as a value or an error.

const { makeError, toWire, CODES } = require('../errors');

// Calls `target[method](...args, cb)` and hands the outcome to `onResult(err, result)` exactly
// once, whatever the plugin does: a synchronous throw becomes the error, a second callback is
// reported through `warn` and otherwise ignored.
// With a `lane`, the call waits its turn there. `laneOpts.timeoutMs` lets the lane move on
// from a call that never calls back (the engine has timed it out and retries it); such a
// call's eventual outcome goes to `laneOpts.late` instead of `onResult`.
function invoke(warn, label, target, method, args, onResult, lane, laneOpts) {
  if (lane) {
    let abandoned = false;
    const opts = laneOpts || {};
    lane.run((release) => {
      invoke(warn, label, target, method, args, (err, result) => {
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
      warn(makeError(`${label} called back more than once`, CODES.EPLUGINCALLBACK));
      return;
    }
    calledBack = true;
    onResult(err || null, result);
  };
  try {
    const fn = target && target[method];
    if (typeof fn !== 'function') throw makeError(`${label} is not a function`, CODES.EPLUGIN);
    // `args` is the caller's own array (every caller writes a fresh literal): the callback goes
    // on its end rather than into a copy
    args.push(cb);
    fn.apply(target, args);
  } catch (e) {
    if (!calledBack) {
      calledBack = true;
      onResult(e === null || e === undefined ? makeError(`${label} threw ${e}`, CODES.EPLUGIN) : e);
    } else {
      warn(e);
    }
  }
}

// A plugin's result as JSON text (`{text}`), or the wire error saying why it cannot be (`{error}`).
function resultJson(label, result) {
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

// Runs a plugin call for engine IO `io` and hands its outcome to `complete(io, error, resultJson)`.
function callForIo(warn, complete, io, label, target, method, args, withResult, lane, laneOpts) {
  invoke(warn, label, target, method, args, (err, result) => {
    if (err) {
      complete(io, toWire(err), null);
      return;
    }
    if (!withResult) {
      complete(io, null, null);
      return;
    }
    const json = resultJson(label, result);
    if (json.error) complete(io, json.error, null);
    else complete(io, null, json.text);
  }, lane, laneOpts);
}

module.exports = { invoke, resultJson, callForIo };
