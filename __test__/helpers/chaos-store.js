'use strict';

// Persistence for the chaos test: durable state per node id, a replicated register as the state
// machine, slow disks, crash semantics, and observations for the safety checks.
//
// Each Node instance gets its own plugin object (store.plugin(id)), following the persistence
// plugin contract (/work/shared/skiff-compat.md, "Persistence plugin"). Every call of a plugin goes
// through that instance's disk queue: it completes (takes effect AND calls back, atomically) after
// the disk's delay, in the order the calls were made. store.crash(id) kills the instance's plugin:
// everything it had not acknowledged yet is lost and it never calls back again, so a new instance
// on the same id sees exactly the acknowledged state.
//
// The state machine: commands are
//   { id, client, seq, op: 'read', key }                   -> result: the value (null if none)
//   { id, client, seq, op: 'write', key, value }           -> result: true
//   { id, client, seq, op: 'cas', key, expected, value }   -> result: true if it swapped
//   { id, op: 'barrier' }                                  -> no effect
// with a session per client (as Raft client sessions do): each client has at most one operation
// under way, numbered by `seq`. A command with the seq the session already has is a retry (a
// client resent it to another leader) and keeps its first result; an older seq is stale and has no
// effect. Sessions are part of the state machine and of its snapshots, so the node a client asked
// can tell the result once `command()` calls back: store.result(nodeId, client, seq).

const { Readable, Writable } = require('stream');

const { clone } = require('../../lib/memory');

function emptySm() {
  return { index: 0, kv: new Map(), sessions: new Map() };
}

function summary(state) {
  if (!state || typeof state !== 'object') return JSON.stringify(state);
  const log = state.log || {};
  const meta = log.meta || {};
  const entries = log.entries || [];
  const last = entries.length ? entries[entries.length - 1] : null;
  return `term ${state.currentTerm} vote ${state.votedFor} log (${meta.lastIncludedIndex}@` +
    `${meta.lastIncludedTerm}, ${last ? `${last.index}@${last.term}` : '-'}]` +
    (meta.pendingSnapshot ? ` pendingSnapshot ${meta.pendingSnapshot.lastIncludedIndex}` : '');
}

/** Canonical text of a state machine's contents (not its index), for comparisons. */
function smText(sm) {
  const kv = [...sm.kv].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const ss = [...sm.sessions].sort((a, b) => (String(a[0]) < String(b[0]) ? -1 : 1));
  return JSON.stringify({ kv, sessions: ss });
}

/** Applies `cmd` to the state machine `sm`; returns { effect, dup, stale, result }. */
function applyTo(sm, cmd) {
  if (!cmd || typeof cmd !== 'object' || cmd.op === 'barrier' || cmd.client === undefined) {
    return { effect: false, result: true };
  }
  const s = sm.sessions.get(cmd.client);
  if (s && cmd.seq < s.seq) return { effect: false, stale: true, result: null };
  if (s && cmd.seq === s.seq) return { effect: false, dup: true, result: s.result };
  let result;
  const cur = sm.kv.has(cmd.key) ? sm.kv.get(cmd.key) : null;
  switch (cmd.op) {
    case 'read':
      result = cur;
      break;
    case 'write':
      sm.kv.set(cmd.key, cmd.value);
      result = true;
      break;
    case 'cas':
      result = cur === cmd.expected;
      if (result) sm.kv.set(cmd.key, cmd.value);
      break;
    default:
      result = null;
  }
  sm.sessions.set(cmd.client, { seq: cmd.seq, result });
  return { effect: true, result };
}

class ChaosStore {
  constructor({ rand, now }) {
    this.rand = rand;
    this.now = now;
    this.nodes = new Map();      // id -> durable { meta, sm }
    this.instances = new Map();  // id -> current live plugin
    this.disks = new Map();      // id -> [min, max] ms
    this.timers = new Set();
    this.closed = false;
    this.lying = false;          // saveMeta acknowledges before it is durable (a broken disk)
    this.baseDisk = null;        // [min, max] ms for every node without its own setting
    // observations
    this.applied = new Map();    // id -> Map index -> command text (through applyCommand)
    this.effects = new Map();    // command id -> { index, at } where it first took effect
    this.indexOf = new Map();    // command id -> indexes it was applied at (any node)
    this.byIndex = new Map();    // index -> { text, node } first application seen, any node
    this.violations = [];        // { invariant, detail, at, trace? }
    this.traces = new Map();     // id -> recent plugin events
    this.installs = [];          // { node, index, sourceIndex, state }
    this.stats = { applied: 0, dupApplied: 0, staleApplied: 0, reapplied: 0, saves: 0, snapshotReads: 0, resets: 0, installs: 0, lost: 0 };
  }

  _durable(id) {
    let d = this.nodes.get(id);
    if (!d) {
      d = { meta: null, sm: emptySm() };
      this.nodes.set(id, d);
    }
    return d;
  }

  violation(invariant, detail, nodeId) {
    const v = { invariant, detail, at: this.now() };
    if (nodeId !== undefined) v.trace = this.traceOf(nodeId);
    this.violations.push(v);
  }

  /** Records a plugin event of node `id` (kept: the last 60 per node). */
  trace(id, what) {
    let t = this.traces.get(id);
    if (!t) {
      t = [];
      this.traces.set(id, t);
    }
    t.push(`${(this.now() / 1000).toFixed(3)}s ${what}`);
    if (t.length > 300) t.shift();
  }

  traceOf(id) {
    return (this.traces.get(id) || []).slice(-60);
  }

  /** Node `id`'s disk takes range[0]..range[1] ms per operation (only `methods`, if given). */
  setDisk(id, range, methods) {
    if (range) this.disks.set(id, { range, methods: methods ? new Set(methods) : null });
    else this.disks.delete(id);
  }

  calm() {
    this.disks.clear();
  }

  /** A fresh plugin for a new instance of node `id` (the previous one, if any, is crashed). */
  plugin(id) {
    const old = this.instances.get(id);
    if (old) old._die();
    const p = new Plugin(this, id);
    this.instances.set(id, p);
    return p;
  }

  /** The instance's unacknowledged work is lost; it never calls back again. */
  crash(id) {
    const p = this.instances.get(id);
    if (p) p._die();
    this.instances.delete(id);
  }

  /** The result of client's command `seq` in node `id`'s state machine, or null. */
  result(id, client, seq) {
    const s = this._durable(id).sm.sessions.get(client);
    return s && s.seq === seq ? { result: s.result } : null;
  }

  sm(id) {
    return this._durable(id).sm;
  }

  meta(id) {
    const m = this._durable(id).meta;
    return m === null ? null : JSON.parse(m);
  }

  // ---- observations made as effects happen

  _onApplied(id, index, cmd, text, r) {
    let m = this.applied.get(id);
    if (!m) {
      m = new Map();
      this.applied.set(id, m);
    }
    const before = m.get(index);
    if (before !== undefined && before !== text) {
      this.violation('state machine safety',
        `${id} applied two different commands at index ${index}: ${before} then ${text}`);
    }
    m.set(index, text);
    const seen = this.byIndex.get(index);
    if (!seen) this.byIndex.set(index, { text, node: id });
    else if (seen.text !== text) {
      this.violation('state machine safety',
        `index ${index}: ${seen.node} applied ${seen.text} but ${id} applied ${text}`);
    }
    if (cmd && typeof cmd.id === 'string') {
      if (r.effect && !this.effects.has(cmd.id)) this.effects.set(cmd.id, { index, at: this.now() });
      const list = this.indexOf.get(cmd.id) || [];
      if (!list.includes(index)) list.push(index);
      this.indexOf.set(cmd.id, list);
    }
  }

  shutdown() {
    this.closed = true;
    for (const p of this.instances.values()) p._die();
    for (const t of this.timers) t.clear();
    this.timers.clear();
  }
}

class Plugin {
  constructor(store, id) {
    this.store = store;
    this.id = id;
    this.alive = true;
    this.queue = [];        // { due, fn }
    this.timer = null;
    this.installing = null; // { sourceIndex, kv } while a snapshot is being written
    for (const m of ['loadMeta', 'saveMeta', 'applyCommand', 'lastAppliedCommitIndex',
      'saveCommitIndex', 'removeAllState', 'createReadStream', 'createWriteStream']) {
      this[m] = this[m].bind(this);
    }
    this._t('new instance');
  }

  _t(what) {
    this.store.trace(this.id, what);
  }

  _die() {
    if (!this.alive) return;
    this._t(`crashed: ${this.queue.length} queued disk operations lost`);
    this.alive = false;
    this.store.stats.lost += this.queue.length;
    this.queue = [];
    if (this.timer) {
      this.timer.clear();
      this.store.timers.delete(this.timer);
      this.timer = null;
    }
  }

  _check(nodeId) {
    if (nodeId !== this.id) {
      this.store.violation('plugin contract', `plugin of ${this.id} called for node ${nodeId}`);
    }
  }

  // Queues `work` (which returns the callback's arguments) on this instance's disk.
  _disk(work, cb, method) {
    if (!this.alive || this.store.closed) return;
    const d = this.store.disks.get(this.id);
    const range = d && (!d.methods || d.methods.has(method)) ? d.range : this.store.baseDisk;
    let ms = 0;
    if (range) ms = range[0] + this.store.rand() * (range[1] - range[0]);
    this.queue.push({ due: this.store.now() + ms, work, cb });
    this._pump();
  }

  _pump() {
    if (this.timer || this.queue.length === 0 || !this.alive) return;
    const wait = Math.max(0, Math.round(this.queue[0].due - this.store.now()));
    const fire = () => {
      this.store.timers.delete(this.timer);
      this.timer = null;
      if (!this.alive || this.store.closed) return;
      const { work, cb } = this.queue.shift();
      let args;
      try {
        args = work();
      } catch (e) {
        args = [e];
      }
      this._pump();
      if (typeof cb === 'function') cb(...args);
    };
    if (wait === 0) {
      const h = setImmediate(fire);
      this.timer = { clear: () => clearImmediate(h) };
    } else {
      const h = setTimeout(fire, wait);
      this.timer = { clear: () => clearTimeout(h) };
    }
    this.store.timers.add(this.timer);
  }

  loadMeta(nodeId, cb) {
    this._check(nodeId);
    this._disk(() => {
      const m = this.store._durable(this.id).meta;
      this._t(`loadMeta -> ${m === null ? 'null' : summary(JSON.parse(m))}`);
      return [null, m === null ? null : JSON.parse(m)];
    }, cb, 'loadMeta');
  }

  saveMeta(nodeId, state, cb) {
    this._check(nodeId);
    const text = JSON.stringify(state);
    const work = () => {
      this._t(`saveMeta ${summary(state)}`);
      this.store._durable(this.id).meta = text;
      this.store.stats.saves += 1;
      return [null];
    };
    if (this.store.lying) {
      // A broken disk (for testing the test): acknowledges at once, writes later.
      if (this.alive && !this.store.closed) setImmediate(() => { if (this.alive) cb(null); });
      this._disk(work, null, 'saveMeta');
      return;
    }
    this._disk(work, cb, 'saveMeta');
  }

  applyCommand(nodeId, commitIndex, command, cb) {
    this._check(nodeId);
    const text = JSON.stringify(command);
    this._disk(() => {
      const sm = this.store._durable(this.id).sm;
      if (commitIndex <= sm.index) {
        this._t(`applyCommand ${commitIndex}: already applied (sm at ${sm.index})`);
        this.store.stats.reapplied += 1;
        return [null];
      }
      this._t(`applyCommand ${commitIndex} (sm at ${sm.index})`);
      if (commitIndex !== sm.index + 1) {
        this.store.violation('no skipped entries',
          `${this.id} applied index ${commitIndex} right after ${sm.index}`, this.id);
      }
      const r = applyTo(sm, command);
      sm.index = commitIndex;
      if (r.dup) this.store.stats.dupApplied += 1;
      else if (r.stale) this.store.stats.staleApplied += 1;
      else this.store.stats.applied += 1;
      this.store._onApplied(this.id, commitIndex, command, text, r);
      return [null];
    }, cb, 'applyCommand');
  }

  lastAppliedCommitIndex(nodeId, cb) {
    this._check(nodeId);
    this._disk(() => {
      this._t(`lastAppliedCommitIndex -> ${this.store._durable(this.id).sm.index}`);
      return [null, this.store._durable(this.id).sm.index];
    }, cb, 'lastAppliedCommitIndex');
  }

  saveCommitIndex(nodeId, index, cb) {
    this._check(nodeId);
    this._t(`saveCommitIndex ${index} called`);
    this._disk(() => {
      const sm = this.store._durable(this.id).sm;
      const inst = this.installing;
      this._t(`saveCommitIndex ${index} (sm at ${sm.index}${inst ? `, snapshot ${inst.finished ? 'written' : 'being written'}` : ''})`);
      if (inst && inst.finished) {
        this.installing = null;
        if (inst.sourceIndex !== index) {
          this.store.violation('snapshot integrity',
            `${this.id} installed a snapshot of the state at index ${inst.sourceIndex} as index ${index}`, this.id);
        }
        this.store.installs.push({ node: this.id, index, sourceIndex: inst.sourceIndex, state: inst.state });
        this.store.stats.installs += 1;
      } else if (index !== sm.index + 1 && index > sm.index) {
        this.store.violation('no skipped entries',
          `${this.id} recorded commit index ${index} right after ${sm.index}`, this.id);
      }
      if (index > sm.index || (inst && inst.finished)) sm.index = index;
      return [null];
    }, cb, 'saveCommitIndex');
  }

  removeAllState(nodeId, cb) {
    this._check(nodeId);
    this._t('removeAllState called');
    this._disk(() => {
      this._t('removeAllState done (sm at 0)');
      this.store._durable(this.id).sm = emptySm();
      this.store.stats.resets += 1;
      this.installing = null;
      return [null];
    }, cb, 'removeAllState');
  }

  // The whole state machine, copied when the stream is made: a header, chunks of key/values, then
  // the client sessions.
  createReadStream(nodeId) {
    this._check(nodeId);
    const sm = this.store._durable(this.id).sm;
    this.store.stats.snapshotReads += 1;
    this._t(`createReadStream (sm at ${sm.index})`);
    const chunks = [{ t: 'sm', index: sm.index }];
    const kv = [...sm.kv];
    for (let i = 0; i < kv.length; i += 100) chunks.push({ t: 'kv', e: kv.slice(i, i + 100) });
    chunks.push({ t: 'sessions', e: [...sm.sessions] });
    return Readable.from(clone(chunks), { objectMode: true });
  }

  createWriteStream(nodeId) {
    this._check(nodeId);
    const self = this;
    const inst = { sourceIndex: null, state: null, finished: false };
    this.installing = inst;
    this._t('createWriteStream');
    const ws = new Writable({
      objectMode: true,
      write(chunk, _enc, done) {
        self._disk(() => {
          const sm = self.store._durable(self.id).sm;
          if (chunk && chunk.t === 'sm') {
            inst.sourceIndex = chunk.index;
            self._t(`snapshot header written: state at index ${chunk.index}`);
          }
          else if (chunk && chunk.t === 'kv') for (const [k, v] of chunk.e) sm.kv.set(k, v);
          else if (chunk && chunk.t === 'sessions') for (const [k, v] of chunk.e) sm.sessions.set(k, v);
          else self.store.violation('snapshot integrity', `${self.id} got a chunk it never wrote: ${JSON.stringify(chunk)}`);
          return [null];
        }, done, 'snapshotWrite');
      },
      final(done) {
        self._disk(() => {
          self._t('snapshot write stream finished');
          inst.finished = true;
          inst.state = smText(self.store._durable(self.id).sm);
          return [null];
        }, done, 'snapshotWrite');
      },
      destroy(err, done) {
        if (!inst.finished) self._t(`snapshot write stream destroyed${err ? `: ${err.message}` : ''}`);
        done(err);
      },
    });
    return ws;
  }
}

module.exports = { ChaosStore, applyTo, emptySm, smText };
