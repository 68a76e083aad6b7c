'use strict';

// Commands travel to the engine as JSON text. This module refuses what JSON cannot carry exactly
// and revives Buffers (carried in their standard `{ type: 'Buffer', data: [...] }` form).

const { makeError } = require('./errors');

const REFUSED_CLASSES = [
  ['Map', typeof Map === 'function' ? Map : null],
  ['Set', typeof Set === 'function' ? Set : null],
  ['WeakMap', typeof WeakMap === 'function' ? WeakMap : null],
  ['WeakSet', typeof WeakSet === 'function' ? WeakSet : null],
  ['RegExp', RegExp],
  ['Promise', Promise],
  ['ArrayBuffer', typeof ArrayBuffer === 'function' ? ArrayBuffer : null],
  ['SharedArrayBuffer', typeof SharedArrayBuffer === 'function' ? SharedArrayBuffer : null],
];

// `path` holds the raw steps from the top (an array index as a number, a property name as a
// string), formatted only when an error names them: a command that is fine costs no strings.
function pathText(path) {
  if (path.length === 0) return '(top level)';
  let text = '';
  for (const step of path) {
    if (typeof step === 'number') text += `[${step}]`;
    else text += /^[A-Za-z_$][\w$]*$/.test(step) ? `.${step}` : `[${JSON.stringify(step)}]`;
  }
  return text;
}

// Whether `value` (an object) is a plain object: none of the refused classes then, so the
// `instanceof` walk over them can be skipped.
function isPlain(value) {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function bad(what, path, code) {
  return makeError(`${what} cannot be carried as JSON at ${pathText(path)}`, code);
}

// Walks `value` the way JSON.stringify would and throws on anything it would drop, change or choke on.
function check(value, key, path, ancestors, code, inArray) {
  if (value !== null && typeof value === 'object' && !Buffer.isBuffer(value) &&
      typeof value.toJSON === 'function') {
    if (ancestors.has(value)) throw bad('a cycle', path, code);
    let replaced;
    try {
      replaced = value.toJSON(key);
    } catch (e) {
      throw makeError(`toJSON() threw at ${pathText(path)}: ${e && e.message}`, code);
    }
    ancestors.add(value);
    try {
      check(replaced, key, path, ancestors, code, inArray);
    } finally {
      ancestors.delete(value);
    }
    return;
  }
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return;
    case 'number':
      if (!Number.isFinite(value)) throw bad(String(value), path, code);
      return;
    case 'undefined':
      // A property holding undefined is simply absent in JSON; anywhere else it would change.
      if (path.length === 0) throw bad('undefined', path, code);
      if (inArray) throw bad('undefined', path, code);
      return;
    case 'function':
      throw bad('a function', path, code);
    case 'symbol':
      throw bad('a symbol', path, code);
    case 'bigint':
      throw bad('a bigint', path, code);
    case 'object':
      break;
    default:
      throw bad(typeof value, path, code);
  }
  if (value === null) return;
  if (Buffer.isBuffer(value)) return;
  if (ArrayBuffer.isView(value)) {
    throw bad(`a ${value.constructor && value.constructor.name || 'typed array'} (use a Buffer)`, path, code);
  }
  if (!isPlain(value)) {
    for (const [name, Ctor] of REFUSED_CLASSES) {
      if (Ctor && value instanceof Ctor) throw bad(`a ${name}`, path, code);
    }
  }
  if (ancestors.has(value)) throw bad('a cycle', path, code);
  ancestors.add(value);
  try {
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        path.push(i);
        check(value[i], String(i), path, ancestors, code, true);
        path.pop();
      }
    } else {
      for (const k of Object.keys(value)) {
        path.push(k);
        let v;
        try {
          v = value[k];
        } catch (e) {
          throw makeError(`reading ${pathText(path)} threw: ${e && e.message}`, code);
        }
        check(v, k, path, ancestors, code, false);
        path.pop();
      }
    }
  } finally {
    ancestors.delete(value);
  }
}

/**
 * Encodes a value as JSON text, or throws an Error with `code` (default `EBADCOMMAND`) when JSON
 * cannot carry it exactly.
 */
function encode(value, code = 'EBADCOMMAND') {
  try {
    check(value, '', [], new Set(), code, false);
  } catch (e) {
    if (e && e.code === code) throw e;
    // e.g. RangeError from absurdly deep nesting
    throw makeError(`value cannot be carried as JSON: ${e && e.message}`, code);
  }
  let json;
  try {
    json = JSON.stringify(value);
  } catch (e) {
    throw makeError(`value cannot be carried as JSON: ${e && e.message}`, code);
  }
  if (typeof json !== 'string') throw bad('undefined', [], code);
  return json;
}

function isBufferJson(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  if (value.type !== 'Buffer' || !Array.isArray(value.data)) return false;
  const keys = Object.keys(value);
  if (keys.length !== 2) return false;
  const data = value.data;
  for (let i = 0; i < data.length; i++) {
    const b = data[i];
    if (typeof b !== 'number' || !Number.isInteger(b) || b < 0 || b > 255) return false;
  }
  return true;
}

/** Turns every `{ type: 'Buffer', data: [bytes] }` inside a parsed JSON value back into a Buffer. */
function revive(value) {
  if (value === null || typeof value !== 'object') return value;
  if (isBufferJson(value)) return Buffer.from(value.data);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = revive(value[i]);
    return value;
  }
  for (const k of Object.keys(value)) value[k] = revive(value[k]);
  return value;
}

module.exports = { encode, revive, isBufferJson };
