'use strict';

// What a key-value operation is between a client and a store and in the log: the request type
// and hello that mark the KV protocol, the command an operation becomes, and its size as JSON
// (checked against maxCommandBytes before anything is proposed).

const { CODES, makeError } = require('../errors');
const { encode } = require('../codec');
const { validKey } = require('../persistence/kv-state-machine');

// In the metadata of a client's hello: the store serves the connection itself.
const CLIENT_HELLO = 'skiffKvClient';
// The one request type a client sends: args { op, key, value }.
const REQUEST_TYPE = 'SkiffKv';
const OPS = new Set(['put', 'get', 'del']);
const DEFAULT_MAX_COMMAND_BYTES = 1024 * 1024;

function checkKey(key) {
  if (!validKey(key)) {
    return makeError(`key must be a string or a finite number, got ${key === null ? 'null' : typeof key}`,
      CODES.EBADARGS);
  }
  return null;
}

// A command for the key-value state machine, or an error.
function toCommand(op, key, value) {
  if (!OPS.has(op)) return makeError(`unknown operation ${JSON.stringify(op)}`, CODES.EBADARGS);
  const bad = checkKey(key);
  if (bad) return bad;
  if (op === 'put') return { op, key, value: value === undefined ? null : value };
  return { op, key };
}

// True when JSON.stringify(value) certainly takes more than `limit` bytes. Counts a lower bound
// and stops as soon as it passes the limit, so a huge value is refused without being stringified.
function surelyLarger(value, limit) {
  let size = 0;
  const stack = [value];
  while (stack.length) {
    if (size > limit) return true;
    const v = stack.pop();
    if (typeof v === 'string') size += v.length + 2; // UTF-16 units never outnumber UTF-8 bytes
    else if (Buffer.isBuffer(v)) size += 2 * v.length + 26; // {"type":"Buffer","data":[b,...]}
    else if (Array.isArray(v)) {
      size += 1 + v.length;
      for (let i = 0; i < v.length; i++) stack.push(v[i]);
    } else if (v !== null && typeof v === 'object') {
      size += 2;
      for (const k of Object.keys(v)) {
        size += k.length + 4;
        stack.push(v[k]);
      }
    } else size += 1;
  }
  return size > limit;
}

// The command's size as JSON in bytes, or an Error: EBADCOMMAND when it takes more than `limit`
// bytes, or the error of encoding it.
function commandBytes(command, limit) {
  const tooLarge = (what) => makeError(`the command takes ${what} bytes as JSON, more than maxCommandBytes ` +
    `(${limit})`, CODES.EBADCOMMAND);
  if (surelyLarger(command, limit)) return tooLarge(`over ${limit}`);
  let json;
  try {
    json = encode(command);
  } catch (e) {
    return e;
  }
  const bytes = Buffer.byteLength(json);
  return bytes > limit ? tooLarge(bytes) : bytes;
}

function checkMaxCommandBytes(v) {
  if (v === undefined) return DEFAULT_MAX_COMMAND_BYTES;
  if (!Number.isSafeInteger(v) || v <= 0) {
    throw makeError('options.maxCommandBytes must be a positive whole number of bytes', CODES.EINVALIDOPTIONS);
  }
  return v;
}

module.exports = {
  CLIENT_HELLO,
  REQUEST_TYPE,
  checkKey,
  toCommand,
  commandBytes,
  checkMaxCommandBytes,
};
