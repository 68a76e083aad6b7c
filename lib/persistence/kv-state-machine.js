'use strict';

// The built-in key-value state machine used by the file persistence plugin.
//
// Commands (JSON values carried through the Raft log):
//   { op: 'put', key, value }   sets key (a missing value is stored as null); result: undefined
//   { op: 'del', key }          removes key; result: true if it existed
//   { op: 'get', key }          result: the value, or undefined. Through the log this is a
//                               linearizable read.
//   { op: 'batch', ops: [command, ...] }
//                               the commands in order, as one log entry; result: the array of
//                               their results. A key-value store (lib/kv.js) proposes the puts,
//                               gets and dels that arrive together this way, so they share one
//                               save, one replication round and one journal sync. Batches do not
//                               nest (an inner batch is a no-op, its result undefined).
// Keys are strings or finite numbers (1 and '1' are different keys). Any other command (the
// original skiff's tests commit strings, numbers and arrays) is a no-op: the log still advances.
//
// The state machine interface the persistence plugin drives (implement it for your own):
//   apply(command, index) → result, or a Promise of it. Deterministic: replaying the same
//                          commands from the same state gives the same state.
//   snapshot()           → an iterable or async iterable of chunks describing the whole state
//                          (non-null values msgpack can carry; a few hundred KB each at most).
//                          Called while no apply() runs, consumed before the next apply().
//   pointInTime()        → optional: like snapshot(), but of the state at the call however many
//                          apply() calls run while it is consumed. With it, the file persistence
//                          hands a leader's snapshot transfer the state machine as it is, without
//                          a checkpoint and without holding applies back.
//   reset()              → clear everything (may return a Promise).
//   restore(chunk)       → add one chunk produced by snapshot(), in order (may return a Promise).
// Chunks of this one: { entries: [[key, value], ...] } with at most `batchSize` entries and
// roughly `batchBytes` bytes.

const DEFAULT_BATCH_SIZE = 256;
const DEFAULT_BATCH_BYTES = 256 * 1024;

/** A key the state machine takes: a string or a finite number. lib/kv.js checks keys with this
 * too, so a client refuses exactly what the state machine would. */
function validKey(key) {
  return typeof key === 'string' || (typeof key === 'number' && Number.isFinite(key));
}

function roughSize(value) {
  if (typeof value === 'string') return value.length + 8;
  if (Buffer.isBuffer(value)) return value.length + 8;
  if (value === null || typeof value !== 'object') return 16;
  // Objects and arrays: a cheap estimate that does not walk deep structures.
  return 64 + (Array.isArray(value) ? value.length * 16 : Object.keys(value).length * 32);
}

/** The chunks of `map`: `{ entries }` of at most `batchSize` entries and about `batchBytes`. */
function* chunksOf(map, batchSize, batchBytes) {
  let entries = [];
  let bytes = 0;
  for (const [key, value] of map) {
    entries.push([key, value]);
    bytes += roughSize(key) + roughSize(value);
    if (entries.length >= batchSize || bytes >= batchBytes) {
      yield { entries };
      entries = [];
      bytes = 0;
    }
  }
  if (entries.length) yield { entries };
}

class KvStateMachine {
  constructor(options = {}) {
    this.batchSize = options.batchSize || DEFAULT_BATCH_SIZE;
    this.batchBytes = options.batchBytes || DEFAULT_BATCH_BYTES;
    this._map = new Map();
  }

  // ------------------------------------------------------------ the state machine interface

  apply(command /* , index */) {
    if (command !== null && typeof command === 'object' && command.op === 'batch' && Array.isArray(command.ops)) {
      return command.ops.map((one) => this._applyOne(one));
    }
    return this._applyOne(command);
  }

  _applyOne(command) {
    if (command === null || typeof command !== 'object' || Array.isArray(command) ||
        !validKey(command.key)) {
      return undefined;
    }
    switch (command.op) {
      case 'put':
        this._map.set(command.key, command.value === undefined ? null : command.value);
        return undefined;
      case 'del':
        return this._map.delete(command.key);
      case 'get':
        return this._map.get(command.key);
      default:
        return undefined;
    }
  }

  snapshot() {
    return chunksOf(this._map, this.batchSize, this.batchBytes);
  }

  // A copy of the map (its values are never changed in place, only replaced, so a shallow copy
  // is the state as it is now): a few ms per 100,000 keys, against a transfer that takes seconds.
  pointInTime() {
    return chunksOf(new Map(this._map), this.batchSize, this.batchBytes);
  }

  reset() {
    this._map = new Map();
  }

  restore(chunk) {
    if (!chunk || !Array.isArray(chunk.entries)) {
      throw Object.assign(new Error('not a key-value snapshot chunk'), { code: 'EBADCHUNK' });
    }
    for (const entry of chunk.entries) {
      if (!Array.isArray(entry) || !validKey(entry[0])) {
        throw Object.assign(new Error('bad entry in a key-value snapshot chunk'), { code: 'EBADCHUNK' });
      }
      this._map.set(entry[0], entry[1] === undefined ? null : entry[1]);
    }
  }

  // ------------------------------------------------------------ local reads (not linearizable)

  get(key) { return this._map.get(key); }

  has(key) { return this._map.has(key); }

  get size() { return this._map.size; }

  keys() { return this._map.keys(); }

  entries() { return this._map.entries(); }

  /** A plain-object copy of the state (string keys), for tests and demos. */
  toObject() {
    const out = {};
    for (const [key, value] of this._map) {
      Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
}

function createKvStateMachine(options) {
  return new KvStateMachine(options);
}

createKvStateMachine.createKvStateMachine = createKvStateMachine;
createKvStateMachine.KvStateMachine = KvStateMachine;
module.exports = createKvStateMachine;
module.exports.validKey = validKey;
