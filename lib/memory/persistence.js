'use strict';

// The in-memory persistence with fault hooks, disk queues and crashes (see lib/memory/index.js).

const { EventEmitter } = require('events');
const { Readable, Writable } = require('stream');

const { clone, coded, injected, cyclic, Faults } = require('./common');

/**
 * The state machine a MemoryPersistence keeps per node, as four functions: `create()` an empty
 * one (with `index`, the last applied commit index, at 0), `apply(sm, command, index)` one command,
 * `records(sm)` its snapshot as an array of JSON records, `restore(sm, record)` one record back.
 */

/** The default state machine: the log of applied commands, `[{ index, command }]`. */
const commandLog = {
  create: () => ({ index: 0, entries: [] }),
  apply(sm, command, index) {
    sm.entries.push({ index, command });
  },
  records: (sm) => sm.entries.map(clone),
  restore(sm, record) {
    sm.entries.push(clone(record));
  },
};

/** A key/value map: `{ op: 'put', key, value }` sets a key; the snapshot is `[{ key, value }]`. */
const keyValue = {
  create: () => ({ index: 0, kv: new Map() }),
  apply(sm, command) {
    const cmd = clone(command);
    if (cmd && typeof cmd === 'object' && cmd.op === 'put') sm.kv.set(cmd.key, cmd.value);
  },
  records: (sm) => [...sm.kv].map(([key, value]) => clone({ key, value })),
  restore(sm, record) {
    const c = clone(record);
    if (c && typeof c === 'object' && 'key' in c) sm.kv.set(c.key, c.value);
  },
};

// Calls back with what `work()` returns, or with what it throws.
// Thrown by a call's work when part of it took effect before `cause` stopped it: the callback gets
// `(cause, partial)` (applyCommands: the results of the commands applied).
class PartialFailure {
  constructor(cause, partial) {
    this.cause = cause;
    this.partial = partial;
  }
}

function runWork(cb, work) {
  let result;
  try {
    result = work();
  } catch (e) {
    if (e instanceof PartialFailure) cb(e.cause, e.partial);
    else cb(e);
    return;
  }
  cb(null, result);
}

const PERSISTENCE_METHODS = ['loadMeta', 'saveMeta', 'applyCommand', 'lastAppliedCommitIndex',
  'saveCommitIndex', 'removeAllState', 'createReadStream', 'createWriteStream'];
// The incremental extension (saveLog, applyCommands), present with `incremental: true`.
const INCREMENTAL_METHODS = ['saveLog', 'applyCommands'];
// The point-in-time snapshot extension, present with `pointInTime: true`.
const POINT_IN_TIME_METHODS = ['createSnapshotReadStream'];

// Changes `log` (entries with an `index`, in index order) as the saveLog `delta` says: the
// entries with lastIncludedIndex < index < truncateFrom stay, then the delta's. In place, so a
// save costs what it changes, not the length of the log.
function spliceLog(log, delta) {
  const floor = ((delta.meta && delta.meta.lastIncludedIndex) || 0) + 1;
  while (log.length > 0 && log[log.length - 1].index >= delta.truncateFrom) log.pop();
  let k = 0;
  while (k < log.length && log[k].index < floor) k++;
  if (k > 0) log.splice(0, k);
  for (const e of delta.entries) if (e.index >= floor) log.push(e);
  return log;
}

/**
 * Persistence in memory. One object can serve every node (each call names its node). Per node it
 * keeps `{ meta, log, sm }`: the JSON text of the last saveMeta (or, after saveLog, its hard state
 * and `log`, the entries, each cloned once) and the state machine. With `incremental: true` it
 * has the incremental extension too (saveLog, applyCommands). Every call takes
 * effect and calls back on a later turn (or after its `delay`), unless a fault says otherwise.
 * Emits 'applied' (nodeId, index, command) and 'commit index' (nodeId, index).
 */
class MemoryPersistence extends EventEmitter {
  /**
   * @param {object} [options]
   * @param {object} [options.stateMachine]  see commandLog (the default) and keyValue
   * @param {() => number} [options.rand]    the random source for disk latencies
   * @param {() => number} [options.now]     the clock (ms) the disk queues schedule by
   * @param {boolean} [options.incremental]  has saveLog and applyCommands
   * @param {boolean} [options.pointInTime]  has createSnapshotReadStream
   */
  constructor(options = {}) {
    super();
    this.setMaxListeners(Infinity);
    this.stateMachine = options.stateMachine || commandLog;
    this.rand = options.rand || Math.random;
    this.now = options.now || (() => performance.now());
    // node id -> { meta: JSON text | null, log: [{ index, json }] | null, sm }. Invariant: with
    // `log`, `meta` is the hard state's JSON (`log.entries` left out) and `log` the entries, each
    // as its index and JSON text.
    this.nodes = new Map();
    this.methods = PERSISTENCE_METHODS.concat(options.incremental ? INCREMENTAL_METHODS : [],
      options.pointInTime ? POINT_IN_TIME_METHODS : []);
    this.faults = new Faults();
    this.delays = []; // { method, ms, nodeId }
    this.stats = { reapplied: 0, applied: 0, saves: 0, lost: 0 };
    // Instances (plugin(id)): each has a disk queue whose calls complete in order.
    this.instance = null; // on an instance's plugin object: { id, alive, queue, timer }
    this.instances = new Map(); // node id -> the current instance's plugin object
    this.disks = new Map(); // node id -> { range: [min, max] ms, methods: Set | null }
    this.baseDisk = null; // [min, max] ms for every node without its own setting
    this.lying = false; // saveMeta acknowledges before it is durable (a broken disk)
    this.timers = new Set();
    this.closed = false;
    for (const m of this.methods) this[m] = this[`_${m}`] ? this[`_${m}`].bind(this) : this[m].bind(this);
  }

  /**
   * A plugin object for a new instance of node `nodeId` (the previous one is crashed). Its calls
   * go through the instance's own disk queue: each takes effect and calls back, atomically, after
   * the disk's latency and in the order made. It shares the store's durable state.
   */
  plugin(nodeId) {
    this.crash(nodeId);
    const p = Object.create(this);
    p.instance = { id: nodeId, alive: true, queue: [], timer: null };
    const proto = Object.getPrototypeOf(this);
    for (const m of this.methods) p[m] = (proto[`_${m}`] || proto[m]).bind(p);
    this.instances.set(nodeId, p);
    return p;
  }

  /** The current instance of `nodeId` is gone: what it had not acknowledged is lost, it never calls back again. */
  crash(nodeId) {
    const p = this.instances.get(nodeId);
    if (!p) return;
    this.instances.delete(nodeId);
    this._die(p.instance);
  }

  _die(inst) {
    if (!inst.alive) return;
    inst.alive = false;
    this.stats.lost += inst.queue.length;
    inst.queue = [];
    if (inst.timer) {
      inst.timer.clear();
      this.timers.delete(inst.timer);
      inst.timer = null;
    }
  }

  /** Node `id`'s disk takes range[0]..range[1] ms per operation (only `methods`, if given); null: back to the base. */
  setDisk(id, range, methods) {
    if (range) this.disks.set(id, { range, methods: methods ? new Set(methods) : null });
    else this.disks.delete(id);
  }

  /** Every disk back to no latency. */
  calm() {
    this.disks.clear();
  }

  /** Stops every instance and timer; nothing calls back afterwards. */
  shutdown() {
    this.closed = true;
    for (const p of this.instances.values()) this._die(p.instance);
    for (const t of this.timers) t.clear();
    this.timers.clear();
  }

  // Queues `finish` on the instance's disk, after the latency set for its node and `method`.
  _queue(inst, method, finish) {
    const d = this.disks.get(inst.id);
    const range = d && (!d.methods || d.methods.has(method)) ? d.range : this.baseDisk;
    let ms = 0;
    if (range) ms = range[0] + this.rand() * (range[1] - range[0]);
    inst.queue.push({ due: this.now() + ms, finish });
    this._pump(inst);
  }

  _pump(inst) {
    if (inst.timer || inst.queue.length === 0 || !inst.alive) return;
    const wait = Math.max(0, Math.round(inst.queue[0].due - this.now()));
    const fire = () => {
      this.timers.delete(inst.timer);
      inst.timer = null;
      if (!inst.alive || this.closed) return;
      const { finish } = inst.queue.shift();
      this._pump(inst);
      finish();
    };
    if (wait === 0) {
      const h = setImmediate(fire);
      inst.timer = { clear: () => clearImmediate(h) };
    } else {
      const h = setTimeout(fire, wait);
      inst.timer = { clear: () => clearTimeout(h) };
    }
    this.timers.add(inst.timer);
  }

  _node(nodeId) {
    let n = this.nodes.get(nodeId);
    if (!n) {
      n = { meta: null, log: null, sm: this.stateMachine.create() };
      this.nodes.set(nodeId, n);
    }
    return n;
  }

  fail(method, mode, times, nodeId) {
    this.faults.add(method, mode, times, nodeId);
  }

  /** Calls of `method` (for `nodeId`, or all nodes) call back after `ms` instead of at once. */
  delay(method, ms, nodeId) {
    this.delays.push({ method, ms, nodeId });
  }

  // Runs `work()` then calls back `cb(null, result)`, or misbehaves as an injected fault says.
  _run(method, nodeId, cb, work) {
    const inst = this.instance;
    if (inst !== null && (!inst.alive || this.closed)) return;
    const fault = this.faults.take(method, nodeId);
    if (fault === null && inst === null && this.delays.length === 0) {
      setImmediate(runWork, cb, work); // the common case, without a closure per call
      return;
    }
    if (fault === 'throw') throw injected(method);
    if (fault === 'never') return;
    if (fault === 'error') {
      setImmediate(cb, injected(method));
      return;
    }
    if (fault === 'value') {
      setImmediate(cb, `${method} failed (a string, not an Error)`);
      return;
    }
    if (fault === 'bad') {
      setImmediate(cb, null, cyclic());
      return;
    }
    const finish = () => runWork(fault !== 'twice' ? cb : (err, result) => {
      cb(err, result);
      if (!err) cb(null, result);
    }, work);
    if (inst !== null) {
      if (this.lying && (method === 'saveMeta' || method === 'saveLog')) {
        // A broken disk (to test the tests): acknowledges at once, writes later.
        const ack = cb;
        setImmediate(() => { if (inst.alive) ack(null); });
        cb = () => {};
      }
      this._queue(inst, method, finish);
      return;
    }
    const d = this.delays.length === 0 ? null
      : this.delays.find((x) => x.method === method && (x.nodeId === undefined || x.nodeId === nodeId));
    if (d && d.ms > 0) setTimeout(finish, d.ms);
    else setImmediate(finish);
  }

  loadMeta(nodeId, cb) {
    this._run('loadMeta', nodeId, cb, () => this.meta(nodeId));
  }

  saveMeta(nodeId, state, cb) {
    // what is saved is the state as it was when the call was made, as a disk write would take it
    let text;
    let failure = null;
    try {
      text = JSON.stringify(state);
    } catch (e) {
      failure = e;
    }
    this._run('saveMeta', nodeId, cb, () => {
      if (failure !== null) throw failure;
      const n = this._node(nodeId);
      n.meta = text;
      n.log = null;
      this.stats.saves += 1;
      return undefined;
    });
  }

  // saveLog (the incremental extension): the delta as it was when the call was made.
  _saveLog(nodeId, delta, cb) {
    let hard;
    let entries;
    let from;
    let failure = null;
    try {
      if (!delta || typeof delta !== 'object' || !Number.isSafeInteger(delta.truncateFrom) ||
        !Array.isArray(delta.entries)) {
        throw coded('saveLog needs { truncateFrom, entries, ... }', 'EBADARGS');
      }
      hard = JSON.stringify({ currentTerm: delta.currentTerm, votedFor: delta.votedFor, peers: delta.peers,
        log: { meta: delta.meta } });
      // each entry as its JSON text (the copy a disk would take), parsed only when loaded
      entries = delta.entries.map((e) => ({ index: e && e.index, json: JSON.stringify(e) }));
      from = delta.truncateFrom;
    } catch (e) {
      failure = e;
    }
    this._run('saveLog', nodeId, cb, () => {
      if (failure !== null) throw failure;
      const n = this._node(nodeId);
      const before = n.log !== null ? n.log : (((this.meta(nodeId) || {}).log || {}).entries || [])
        .map((e) => ({ index: e.index, json: JSON.stringify(e) }));
      n.log = spliceLog(before, { meta: JSON.parse(hard).log.meta, truncateFrom: from, entries });
      n.meta = hard;
      this.stats.saves += 1;
      return undefined;
    });
  }

  applyCommand(nodeId, commitIndex, command, cb) {
    this._run('applyCommand', nodeId, cb, () => {
      const sm = this._node(nodeId).sm;
      if (commitIndex <= sm.index) {
        this.stats.reapplied += 1;
        return undefined;
      }
      this.stateMachine.apply(sm, command, commitIndex);
      sm.index = commitIndex;
      this.stats.applied += 1;
      this.emit('applied', nodeId, commitIndex, command);
      return undefined;
    });
  }

  // applyCommands (the incremental extension): the batch in order, as one step.
  _applyCommands(nodeId, batch, cb) {
    const commands = Array.isArray(batch) ? batch.map((b) => ({ index: b && b.index, command: b && b.command })) : null;
    this._run('applyCommands', nodeId, cb, () => {
      if (commands === null) throw coded('applyCommands needs an array of { index, command }', 'EBADARGS');
      const sm = this._node(nodeId).sm;
      const results = [];
      for (const { index, command } of commands) {
        if (index <= sm.index) {
          this.stats.reapplied += 1;
        } else {
          try {
            this.stateMachine.apply(sm, command, index);
          } catch (e) {
            throw new PartialFailure(e, results); // the ones before took effect, with their index
          }
          sm.index = index;
          this.stats.applied += 1;
          this.emit('applied', nodeId, index, command);
        }
        results.push(undefined);
      }
      return results;
    });
  }

  lastAppliedCommitIndex(nodeId, cb) {
    this._run('lastAppliedCommitIndex', nodeId, cb, () => this.appliedIndex(nodeId));
  }

  saveCommitIndex(nodeId, commitIndex, cb) {
    this._run('saveCommitIndex', nodeId, cb, () => {
      this._node(nodeId).sm.index = commitIndex;
      this.emit('commit index', nodeId, commitIndex);
      return undefined;
    });
  }

  removeAllState(nodeId, cb) {
    this._run('removeAllState', nodeId, cb, () => {
      this._node(nodeId).sm = this.stateMachine.create();
      return undefined;
    });
  }

  createReadStream(nodeId) {
    return Readable.from(this.stateMachine.records(this._node(nodeId).sm), { objectMode: true });
  }

  // createSnapshotReadStream (the point-in-time extension): the state machine's records as they
  // are when the call takes effect, and the index they are of.
  _createSnapshotReadStream(nodeId, cb) {
    this._run('createSnapshotReadStream', nodeId, cb, () => {
      const sm = this._node(nodeId).sm;
      return { index: sm.index, stream: Readable.from(this.stateMachine.records(sm), { objectMode: true }) };
    });
  }

  createWriteStream(nodeId) {
    const n = this._node(nodeId);
    const machine = this.stateMachine;
    return new Writable({
      objectMode: true,
      write(chunk, _enc, done) {
        machine.restore(n.sm, chunk);
        setImmediate(done);
      },
    });
  }

  // ---- inspection, for tests and tools

  /** Sets `nodeId`'s durable state as if it had been saved: `meta` (an object) and `sm`. */
  setState(nodeId, { meta, sm }) {
    this.nodes.set(nodeId, { meta: meta === null ? null : JSON.stringify(meta), log: null, sm });
  }

  /** The state last given to saveMeta by `nodeId` (parsed), or null. */
  meta(nodeId) {
    const n = this.nodes.get(nodeId);
    if (n === undefined || n.meta === null) return null;
    const state = JSON.parse(n.meta);
    if (n.log !== null) state.log.entries = n.log.map((e) => JSON.parse(e.json));
    return state;
  }

  /** The last commit index applied (or recorded) on `nodeId`. */
  appliedIndex(nodeId) {
    const n = this.nodes.get(nodeId);
    return n === undefined ? 0 : n.sm.index;
  }

  /** `nodeId`'s state machine (live, not a copy). */
  sm(nodeId) {
    return this._node(nodeId).sm;
  }

  /** Commands applied on `nodeId`, in order (command log state machine). */
  commands(nodeId) {
    return (this._node(nodeId).sm.entries || []).map((r) => r.command);
  }

  /** Indexes applied on `nodeId`, in order (command log state machine). */
  indexes(nodeId) {
    return (this._node(nodeId).sm.entries || []).map((r) => r.index);
  }
}

module.exports = { MemoryPersistence, commandLog, keyValue };
