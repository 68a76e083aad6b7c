'use strict';

// Error helpers shared by the wrapper. Everything the user sees is an `Error` with a string `code`.

// Every code skiff-rs itself reports: the engine's (crates/skiff-driver/src/code.rs, exported by the binding as
// `errorCodes()`) and the wrapper's. A plugin's own codes (a transport's ECONNRESET, a store's
// ECORRUPT) pass through unchanged and are not listed. index.d.ts's `ErrorCode` lists the same;
// __test__/codes.test.js checks all three agree.
const CODES = Object.freeze({
  // --- reported by the engine (crates/skiff-driver/src/code.rs) ---
  // The options are not valid (shape, range, or timing rules).
  EINVALIDOPTIONS: 'EINVALIDOPTIONS',
  // This node is not the leader; the error carries `leader` (an id, or null).
  ENOTLEADER: 'ENOTLEADER',
  // A request, a plugin call or a peer's reply did not finish in time.
  ETIMEDOUT: 'ETIMEDOUT',
  // The node stopped before the request completed, or was called after stop.
  ESTOPPED: 'ESTOPPED',
  // The native node was started twice.
  ESTARTED: 'ESTARTED',
  // A command (or peer metadata) is not JSON skiff-rs can carry, or is over maxCommandBytes.
  EBADCOMMAND: 'EBADCOMMAND',
  // Peer metadata given to `join` is not JSON.
  EBADMETADATA: 'EBADMETADATA',
  // A plugin called back with a value of the wrong shape.
  EBADRESULT: 'EBADRESULT',
  // What persistence loaded is not a state the engine can start from.
  EBADSTATE: 'EBADSTATE',
  // `join` named this node itself.
  EJOINSELF: 'EJOINSELF',
  // The log cannot take another entry (its index would pass 2^53 - 1).
  ELOGFULL: 'ELOGFULL',
  // A peer message arrived while the node was still loading its state.
  ENOTREADY: 'ENOTREADY',
  // A peer message was refused: malformed, or a term that leaves no room for elections.
  EBADMESSAGE: 'EBADMESSAGE',
  // A peer message claimed a sender other than the peer its connection was opened with.
  EBADSENDER: 'EBADSENDER',
  // A persistence call failed without a code of its own.
  EPERSISTENCE: 'EPERSISTENCE',
  // A transport call failed without a code of its own.
  ETRANSPORT: 'ETRANSPORT',
  // A plugin call failed (threw, or was not a function) without a code of its own.
  EPLUGIN: 'EPLUGIN',
  // A bug in the engine (it could not encode its own operations).
  EINTERNAL: 'EINTERNAL',
  // Too many reads (`read()`) or peer requests are waiting; this one was refused at once.
  EBUSY: 'EBUSY',
  // The leader is handing leadership over and takes no command meanwhile (retried by `command`).
  ETRANSFERRING: 'ETRANSFERRING',
  // No voter can take leadership over (`transferLeadership()`).
  ENOVOTER: 'ENOVOTER',
  // --- reported by the wrapper only ---
  // A plugin called back twice.
  EPLUGINCALLBACK: 'EPLUGINCALLBACK',
  // `join`/`leave` got a peer id that is not a non-empty string.
  EINVALIDPEER: 'EINVALIDPEER',
  // The transport has no connection to the peer.
  ENOTCONNECTED: 'ENOTCONNECTED',
  // A peer request's arguments are not what its type needs.
  EBADARGS: 'EBADARGS',
  // The transport handed over something that is not a connection.
  EBADCONNECTION: 'EBADCONNECTION',
  // The engine sent an operation this wrapper cannot read (a mismatched addon).
  EUNKNOWNOP: 'EUNKNOWNOP',
  // No prebuilt native addon for this platform (lib/platform.js).
  ENOBINDING: 'ENOBINDING',
  // skiff-rs/metrics was used without prom-client installed (an optional peer dependency).
  ENOPROMCLIENT: 'ENOPROMCLIENT',
});

function makeError(message, code, extra) {
  const err = new Error(message);
  if (code !== undefined) err.code = code;
  if (extra) copyFields(extra, err, Infinity, () => true);
  return err;
}

function describe(value) {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    let message;
    try { message = value.message; } catch (_) { message = undefined; } // a throwing getter
    if (typeof message === 'string') return message;
  }
  try {
    const json = JSON.stringify(value);
    if (typeof json === 'string') return json;
  } catch (_) { /* fall through */ }
  try {
    return String(value);
  } catch (_) {
    return 'unknown error';
  }
}

/** A `TypeError` for a bad option or argument, with a `code` like every error we throw. */
function optionError(message, code = 'EINVALIDOPTIONS') {
  const err = new TypeError(message);
  err.code = code;
  return err;
}

/** Keys never copied between an error and its wire form (`__proto__` as an own key, which
 * `JSON.parse` and msgpack can make, would replace the prototype of the error it is copied to). */
const NOT_COPIED = new Set(['message', 'stack', '__proto__']);

function isScalar(v) {
  return v === null || typeof v === 'string' || typeof v === 'boolean' ||
    (typeof v === 'number' && Number.isFinite(v));
}

/** Copies up to `limit` own fields that `accept(key, value)` takes from `from` to `to`, never
 * those in NOT_COPIED; a field (or the key list) that throws when read is left out. */
function copyFields(from, to, limit, accept) {
  let keys = [];
  try { keys = Object.keys(from); } catch (_) { return; }
  let copied = 0;
  for (const key of keys) {
    if (copied >= limit) break;
    if (NOT_COPIED.has(key)) continue;
    let v;
    try { v = from[key]; } catch (_) { continue; }
    if (!accept(key, v)) continue;
    to[key] = v;
    copied++;
  }
}

/**
 * Any thrown or called-back value → a plain `{ message, code?, ...}` that can cross a boundary:
 * to the engine (`RaftNode.complete` reads message and code) or over a transport.
 * @param {*} value
 * @param {number} [fields=2] how many fields the result may have in all; beyond message and code
 *   only scalar ones are carried (e.g. `leader` on ENOTLEADER), so a peer learns nothing else.
 */
function toWire(value, fields = 2) {
  const wire = { message: describe(value) };
  if (value && (typeof value === 'object' || typeof value === 'function')) {
    let code;
    try { code = value.code; } catch (_) { code = undefined; }
    if (typeof code === 'string' && code) wire.code = code;
    else if (typeof code === 'number' && Number.isFinite(code)) wire.code = String(code);
    copyFields(value, wire, fields - 2, (key, v) => key !== 'code' && isScalar(v));
  }
  if (!wire.message) wire.message = wire.code || 'unknown error';
  return wire;
}

/**
 * A value coming from the engine (`{ message, code, ...rest }`), a peer or a plugin → an `Error`
 * with its fields. An `Error` is returned as it is.
 * @param {*} value
 * @param {string} [code] the code of the result when `value` is not an object (has no fields)
 */
function toError(value, code) {
  if (value instanceof Error) return value;
  const err = new Error(describe(value));
  if (value && typeof value === 'object') {
    copyFields(value, err, Infinity, () => true);
  } else if (code !== undefined) {
    err.code = code;
  }
  return err;
}

module.exports = { CODES, makeError, optionError, toWire, toError, describe };
