'use strict';

// Error helpers shared by the wrapper. Everything the user sees is an `Error` with a string `code`.

const CODES = Object.freeze({
  EINVALIDOPTIONS: 'EINVALIDOPTIONS',
  ENOTLEADER: 'ENOTLEADER',
  ETIMEDOUT: 'ETIMEDOUT',
  ESTOPPED: 'ESTOPPED',
  EBADCOMMAND: 'EBADCOMMAND',
  EBADRESULT: 'EBADRESULT',
  EJOINSELF: 'EJOINSELF',
  EINVALIDPEER: 'EINVALIDPEER',
  ENOTCONNECTED: 'ENOTCONNECTED',
  EBADARGS: 'EBADARGS',
  EPLUGIN: 'EPLUGIN',
  EPLUGINCALLBACK: 'EPLUGINCALLBACK',
  EBADCONNECTION: 'EBADCONNECTION',
  EUNKNOWNOP: 'EUNKNOWNOP',
  // A peer message was refused: malformed, or a term that leaves no room for elections.
  EBADMESSAGE: 'EBADMESSAGE',
  // A peer message claimed a sender other than the peer its connection was opened with.
  EBADSENDER: 'EBADSENDER',
  // Too many peer requests are waiting for their answers; this one was refused at once.
  EBUSY: 'EBUSY',
});

function makeError(message, code, extra) {
  const err = new Error(message);
  if (code !== undefined) err.code = code;
  if (extra) {
    for (const key of Object.keys(extra)) {
      if (key !== 'message' && key !== 'stack') err[key] = extra[key];
    }
  }
  return err;
}

function describe(value) {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof value.message === 'string') return value.message;
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

/** Any thrown or called-back value → the `{ message, code }` object `RaftNode.complete` takes. */
function toWire(value) {
  const wire = { message: describe(value) };
  if (value && (typeof value === 'object' || typeof value === 'function')) {
    let code;
    try { code = value.code; } catch (_) { code = undefined; }
    if (typeof code === 'string' && code) wire.code = code;
    else if (typeof code === 'number' && Number.isFinite(code)) wire.code = String(code);
  }
  if (!wire.message) wire.message = wire.code || 'unknown error';
  return wire;
}

/** A value coming from the engine (`{ message, code, ...rest }`) or a plugin → an `Error`. */
function toError(value) {
  if (value instanceof Error) return value;
  if (value && typeof value === 'object') {
    const err = new Error(describe(value));
    for (const key of Object.keys(value)) {
      if (key === 'message' || key === 'stack') continue;
      err[key] = value[key];
    }
    return err;
  }
  return new Error(describe(value));
}

module.exports = { CODES, makeError, optionError, toWire, toError, describe };
