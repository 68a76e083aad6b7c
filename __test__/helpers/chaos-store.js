'use strict';

// Persistence for the chaos test: durable state per node id, a replicated register as the state
// machine, slow disks, crash semantics, and observations for the safety checks.
//
// It is lib/memory.js's persistence (MemoryPersistence), whose disk queues, latencies, crashes and
// lying disk it uses: each Node instance gets its own plugin object (store.plugin(id)); every call
// of a plugin goes through that instance's disk queue and completes (takes effect AND calls back,
// atomically) after the disk's delay, in the order the calls were made. store.crash(id) kills the
// instance's plugin: everything it had not acknowledged yet is lost and it never calls back again,
// so a new instance on the same id sees exactly the acknowledged state. What this file adds is the
// register state machine and the checks made as its effects happen.
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

const { MemoryPersistence, clone } = require('../../lib/memory');

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

/** The register as a lib/memory.js state machine; snapshots are a header, key/value chunks, sessions. */
const register = {
  create: emptySm,
  apply: (sm, command) => applyTo(sm, command),
  records(sm) {
    const chunks = [{ t: 'sm', index: sm.index }];
    const kv = [...sm.kv];
    for (let i = 0; i < kv.length; i += 100) chunks.push({ t: 'kv', e: kv.slice(i, i + 100) });
    chunks.push({ t: 'sessions', e: [...sm.sessions] });
    return clone(chunks);
  },
  /** Writes one chunk of a snapshot; false for one `records` never makes (the header is the caller's). */
  restore(sm, chunk) {
    if (chunk && chunk.t === 'kv') for (const [k, v] of chunk.e) sm.kv.set(k, v);
    else if (chunk && chunk.t === 'sessions') for (const [k, v] of chunk.e) sm.sessions.set(k, v);
    else return false;
    return true;
  },
};

class ChaosStore extends MemoryPersistence {
  // `incremental`: the plugins have saveLog and applyCommands too (the engine then uses them);
  // `pointInTime`: createSnapshotReadStream (a leader's snapshot transfer holds nothing back and
  // resumes after a failure).
  constructor({ rand, now, incremental = false, pointInTime = false }) {
    super({ stateMachine: register, rand, now, incremental, pointInTime });
    this.installing = null;      // on a plugin object: { sourceIndex, state, finished } while a snapshot is written
    // observations
    this.applied = new Map();    // id -> Map index -> command text (through applyCommand)
    this.effects = new Map();    // command id -> { index, at } where it first took effect
    this.indexOf = new Map();    // command id -> indexes it was applied at (any node)
    this.byIndex = new Map();    // index -> { text, node } first application seen, any node
    this.violations = [];        // { invariant, detail, at, trace? }
    this.traces = new Map();     // id -> recent plugin events
    this.installs = [];          // { node, index, sourceIndex, state }
    Object.assign(this.stats, { dupApplied: 0, staleApplied: 0, snapshotReads: 0, resets: 0, installs: 0 });
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

  /** A fresh plugin for a new instance of node `id` (the previous one, if any, is crashed). */
  plugin(id) {
    const p = super.plugin(id);
    this.trace(id, 'new instance');
    return p;
  }

  _die(inst) {
    if (inst.alive) this.trace(inst.id, `crashed: ${inst.queue.length} queued disk operations lost`);
    super._die(inst);
  }

  /** The result of client's command `seq` in node `id`'s state machine, or null. */
  result(id, client, seq) {
    const s = this._node(id).sm.sessions.get(client);
    return s && s.seq === seq ? { result: s.result } : null;
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

  // ---- the plugin methods (called on a plugin(id) object): the register plus the checks

  _t(what) {
    this.trace(this.instance.id, what);
  }

  _check(nodeId) {
    if (nodeId !== this.instance.id) {
      this.violation('plugin contract', `plugin of ${this.instance.id} called for node ${nodeId}`);
    }
  }

  loadMeta(nodeId, cb) {
    this._check(nodeId);
    this._run('loadMeta', nodeId, cb, () => {
      const m = this.meta(nodeId);
      this._t(`loadMeta -> ${m === null ? 'null' : summary(m)}`);
      return m;
    });
  }

  saveMeta(nodeId, state, cb) {
    this._check(nodeId);
    const text = JSON.stringify(state);
    this._run('saveMeta', nodeId, cb, () => {
      this._t(`saveMeta ${summary(state)}`);
      const n = this._node(nodeId);
      n.meta = text;
      n.log = null;
      this.stats.saves += 1;
      return undefined;
    });
  }

  applyCommand(nodeId, commitIndex, command, cb) {
    this._check(nodeId);
    const text = JSON.stringify(command);
    const id = this.instance.id;
    this._run('applyCommand', nodeId, cb, () => this._applyOne(id, commitIndex, command, text));
  }

  // applyCommands: the batch as one disk operation, each command checked as applyCommand's.
  _applyCommands(nodeId, batch, cb) {
    this._check(nodeId);
    const items = batch.map(({ index, command }) => ({ index, command, text: JSON.stringify(command) }));
    const id = this.instance.id;
    this._t(`applyCommands ${items.length} from ${items.length ? items[0].index : '-'} called`);
    this._run('applyCommands', nodeId, cb, () => items.map((it) => this._applyOne(id, it.index, it.command, it.text)));
  }

  _applyOne(id, commitIndex, command, text) {
    const sm = this._node(id).sm;
    if (commitIndex <= sm.index) {
      this._t(`applyCommand ${commitIndex}: already applied (sm at ${sm.index})`);
      this.stats.reapplied += 1;
      return undefined;
    }
    this._t(`applyCommand ${commitIndex} (sm at ${sm.index})`);
    if (commitIndex !== sm.index + 1) {
      this.violation('no skipped entries', `${id} applied index ${commitIndex} right after ${sm.index}`, id);
    }
    const r = applyTo(sm, command);
    sm.index = commitIndex;
    if (r.dup) this.stats.dupApplied += 1;
    else if (r.stale) this.stats.staleApplied += 1;
    else this.stats.applied += 1;
    this._onApplied(id, commitIndex, command, text, r);
    return undefined;
  }

  lastAppliedCommitIndex(nodeId, cb) {
    this._check(nodeId);
    this._run('lastAppliedCommitIndex', nodeId, cb, () => {
      this._t(`lastAppliedCommitIndex -> ${this.appliedIndex(this.instance.id)}`);
      return this.appliedIndex(this.instance.id);
    });
  }

  saveCommitIndex(nodeId, index, cb) {
    this._check(nodeId);
    const id = this.instance.id;
    this._t(`saveCommitIndex ${index} called`);
    this._run('saveCommitIndex', nodeId, cb, () => {
      const sm = this._node(id).sm;
      const inst = this.installing;
      this._t(`saveCommitIndex ${index} (sm at ${sm.index}${inst ? `, snapshot ${inst.finished ? 'written' : 'being written'}` : ''})`);
      if (inst && inst.finished) {
        this.installing = null;
        if (inst.sourceIndex !== index) {
          this.violation('snapshot integrity',
            `${id} installed a snapshot of the state at index ${inst.sourceIndex} as index ${index}`, id);
        }
        this.installs.push({ node: id, index, sourceIndex: inst.sourceIndex, state: inst.state });
        this.stats.installs += 1;
      } else if (index !== sm.index + 1 && index > sm.index) {
        this.violation('no skipped entries', `${id} recorded commit index ${index} right after ${sm.index}`, id);
      }
      if (index > sm.index || (inst && inst.finished)) sm.index = index;
      return undefined;
    });
  }

  removeAllState(nodeId, cb) {
    this._check(nodeId);
    this._t('removeAllState called');
    this._run('removeAllState', nodeId, cb, () => {
      this._t('removeAllState done (sm at 0)');
      this._node(this.instance.id).sm = emptySm();
      this.stats.resets += 1;
      this.installing = null;
      return undefined;
    });
  }

  // The whole state machine, copied when the stream is made.
  createReadStream(nodeId) {
    this._check(nodeId);
    const sm = this._node(this.instance.id).sm;
    this.stats.snapshotReads += 1;
    this._t(`createReadStream (sm at ${sm.index})`);
    return Readable.from(register.records(sm), { objectMode: true });
  }

  createWriteStream(nodeId) {
    this._check(nodeId);
    const self = this;
    const id = this.instance.id;
    const inst = { sourceIndex: null, state: null, finished: false };
    this.installing = inst;
    this._t('createWriteStream');
    return new Writable({
      objectMode: true,
      write(chunk, _enc, done) {
        self._run('snapshotWrite', nodeId, done, () => {
          const sm = self._node(id).sm;
          if (chunk && chunk.t === 'sm') {
            inst.sourceIndex = chunk.index;
            self._t(`snapshot header written: state at index ${chunk.index}`);
          }
          else if (!register.restore(sm, chunk)) self.violation('snapshot integrity', `${id} got a chunk it never wrote: ${JSON.stringify(chunk)}`);
          return undefined;
        });
      },
      final(done) {
        self._run('snapshotWrite', nodeId, done, () => {
          self._t('snapshot write stream finished');
          inst.finished = true;
          inst.state = smText(self._node(id).sm);
          return undefined;
        });
      },
      destroy(err, done) {
        if (!inst.finished) self._t(`snapshot write stream destroyed${err ? `: ${err.message}` : ''}`);
        done(err);
      },
    });
  }
}

module.exports = { ChaosStore, applyTo, emptySm, smText };
