'use strict';

// `node.stats()`: what JS counts itself (commands, persistence latencies and failures, snapshots
// installed), joined with the engine's published status (positions, members, elections, leader
// changes, snapshots sent). Counting costs two clock reads per save and apply op (timed where they
// run), and for the rarer persistence ops (loads, snapshot streams) a map entry while one is under
// way; nothing is built until `stats()` is called.

const { performance } = require('perf_hooks');

// Upper bounds, in ms, of the latency histograms' buckets; one more bucket holds the rest.
const LATENCY_BUCKETS_MS = Object.freeze([0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500]);

// The IO ops whose outcome comes from a persistence plugin call: op name -> what it is counted as.
// A failed one is retried by the engine (load, save and apply after a pause; a snapshot transfer
// from its start), which is what `pluginRetries` counts.
const PERSISTENCE_OPS = Object.freeze({
  __proto__: null,
  loadMeta: 'persistence.loadMeta',
  lastApplied: 'persistence.lastAppliedCommitIndex',
  saveMeta: 'persistence.saveMeta',
  apply: 'persistence.applyCommand',
  snapshotRead: 'persistence.createReadStream',
  snapshotReset: 'persistence.removeAllState',
  snapshotWrite: 'persistence.createWriteStream',
});

// A fixed-bucket histogram of durations in ms: `counts[i]` holds the samples at most
// `buckets[i]` and above the bucket before; `counts[buckets.length]` the samples above all.
class Histogram {
  constructor() {
    this.counts = new Array(LATENCY_BUCKETS_MS.length + 1).fill(0);
    this.count = 0;
    this.sum = 0;
  }

  observe(ms) {
    let i = 0;
    while (i < LATENCY_BUCKETS_MS.length && ms > LATENCY_BUCKETS_MS[i]) i++;
    this.counts[i] += 1;
    this.count += 1;
    this.sum += ms;
  }

  toJSON() {
    return { buckets: LATENCY_BUCKETS_MS.slice(), counts: this.counts.slice(), count: this.count, sum: this.sum };
  }
}

class NodeStats {
  constructor() {
    this.commandsCommitted = 0;
    this.commandsFailed = 0;
    this.snapshotsInstalled = 0;
    this.pluginRetries = 0;
    this.save = new Histogram();
    this.apply = new Histogram();
    // io -> { label, kind, end } of the persistence ops under way other than saves and applies
    // (at most a few at a time: a load, a snapshot op per stream)
    this._open = new Map();
  }

  // The callback a command's outcome goes through, counted on the way.
  countCommand(callback) {
    return (err, result) => {
      if (err) this.commandsFailed += 1;
      else this.commandsCommitted += 1;
      callback(err, result);
    };
  }

  // The clock persistence latencies are measured by (ms).
  now() {
    return performance.now();
  }

  // A save or an apply op (`kind`: 'saveMeta' or 'apply'), started at `start` (by `now()`),
  // finished: its latency is observed, or, when it failed (`error`), counted as a retry. Returns
  // what it is counted as. Those two ops are timed where they run (save-meta.js, apply-chain.js)
  // rather than through `opStarted` and a lookup on every completed IO: they are most of the IO.
  finished(kind, start, error) {
    if (error) this.pluginRetries += 1;
    else (kind === 'saveMeta' ? this.save : this.apply).observe(performance.now() - start);
    return PERSISTENCE_OPS[kind];
  }

  // Any other persistence op the engine sent is starting (others are ignored).
  opStarted(op) {
    const label = PERSISTENCE_OPS[op.op];
    if (label === undefined || typeof op.io !== 'number') return;
    this._open.set(op.io, { label, kind: op.op, end: op.end === true });
  }

  // IO `io` completed (with `error` when it failed): returns its record when it was a
  // persistence op, else undefined.
  ioCompleted(io, error) {
    if (this._open.size === 0) return undefined;
    const rec = this._open.get(io);
    if (rec === undefined) return undefined;
    this._open.delete(io);
    if (error) {
      this.pluginRetries += 1;
      return rec;
    }
    if (rec.kind === 'snapshotWrite' && rec.end) this.snapshotsInstalled += 1;
    return rec;
  }

  // The whole `stats()` object: `engine` is the binding's `stats()` parsed (null when the
  // engine cannot say), `node` the Node it describes.
  build(node, engine) {
    const e = engine || {};
    return {
      id: node.id,
      state: node.state.name,
      term: typeof e.term === 'number' ? e.term : node.currentTerm(),
      leader: e.leader === undefined ? node.currentLeader() : e.leader,
      commitIndex: e.commitIndex || 0,
      lastApplied: node._appliedIndex(),
      lastLogIndex: e.lastLogIndex || 0,
      firstLogIndex: e.firstLogIndex || 1,
      members: Array.isArray(e.members) ? e.members : [],
      counters: {
        electionsStarted: e.electionsStarted || 0,
        leaderChanges: e.leaderChanges || 0,
        commandsCommitted: this.commandsCommitted,
        commandsFailed: this.commandsFailed,
        snapshotsSent: e.snapshotsSent || 0,
        snapshotBytesSent: e.snapshotBytesSent || 0,
        snapshotsInstalled: this.snapshotsInstalled,
        pluginRetries: this.pluginRetries,
      },
      latency: { save: this.save.toJSON(), apply: this.apply.toJSON() },
    };
  }
}

module.exports = { NodeStats, Histogram, LATENCY_BUCKETS_MS };
