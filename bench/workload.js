'use strict';

// The bench's workload, shared by `npm run bench` (run.js) and `npm run bench:compare` (compare.js,
// compare-child.js) so that both sides of a comparison run the same clients: the row names, the
// node options, C closed-loop clients driving a cluster, and one measured row.
//
// Commands are `{op: 'put', key: 'k' + (i % 1000), value: i}` (the key space is bounded so that the
// state machine does not grow with the run), or with a 10 KB string as value. Latency is per
// command, from the `command()` call to its callback.

const v8 = require('v8');
const vm = require('vm');
const { performance } = require('perf_hooks');

const ALL_ROWS = ['3x1', '3x16', '3x64', '3x256', '3x256-1', '5x256', '7x256', '3x64x10k', '3x64-inc', '3x256-inc',
  'long'];
const KEYS = 1000;
const PAD_10K = 'x'.repeat(10 * 1024);
// Same node options for both engines. skiff-algorithm arms a never-cleared timer of
// `commandTimeout` per peer call, which keeps the process alive that long after it stops.
const NODE_OPTIONS = { commandTimeout: 2000 };


// A full GC between rows and before each memory reading of the long run, so that RSS and heap
// figures show what is retained rather than when the collector last ran.
v8.setFlagsFromString('--expose-gc');
const gc = global.gc || vm.runInNewContext('gc');

function rowSpec(name) {
  const m = /^(\d+)x(\d+)(x10k)?(-1)?(-inc)?$/.exec(name);
  return {
    name,
    nodes: Number(m[1]),
    clients: Number(m[2]),
    big: Boolean(m[3]),
    pipelining: !m[4],
    incremental: Boolean(m[5]),
    title: `${m[1]} nodes, C=${m[2]}${m[3] ? ', 10 KB' : ''}${m[4] ? ', 1 request in flight' : ''}` +
      `${m[5] ? ', incremental persistence' : ''}`,
  };
}


/**
 * How long each row runs: `time` seconds and `count` commands at most (whichever first), after a
 * warm-up; `quick` makes all of them short (a smoke run). Null `time` / `count` take the defaults.
 */
function runLengths({ quick = false, time = null, count = null } = {}) {
  return {
    timeMs: (time || (quick ? 1 : 5)) * 1000,
    count: Math.floor(count || (quick ? 2000 : 100000)),
    warmMs: quick ? 200 : 1000,
    warmCount: quick ? 200 : 2000,
  };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[i];
}

class Latencies {
  constructor() {
    this.values = new Float64Array(1024);
    this.n = 0;
  }

  add(v) {
    if (this.n === this.values.length) {
      const bigger = new Float64Array(this.values.length * 2);
      bigger.set(this.values);
      this.values = bigger;
    }
    this.values[this.n++] = v;
  }

  summary() {
    const sorted = this.values.slice(0, this.n).sort();
    return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99) };
  }
}

/**
 * C clients issue commands until `count` were issued or `ms` elapsed, whichever first; then the
 * commands in flight finish. `onDone(latency, err)` for each command (optional).
 * Resolves with { done, errors, firstError, elapsedMs, latencies }.
 */
function drive(cluster, { clients, count, ms, big, seq, onDone, record = true }) {
  return new Promise((resolve) => {
    const lat = new Latencies();
    const start = performance.now();
    const deadline = start + ms;
    let issued = 0;
    let done = 0;
    let errors = 0;
    let firstError = null;
    let active = 0;
    let finished = false;
    let lostLeader = false;
    const next = () => {
      if (issued >= count || performance.now() >= deadline) {
        active -= 1;
        if (active === 0 && !finished) {
          finished = true;
          resolve({ done, errors, firstError, lostLeader, elapsedMs: performance.now() - start, latencies: lat });
        }
        return;
      }
      issued += 1;
      const i = seq.next++;
      const cmd = { op: 'put', key: `k${i % KEYS}`, value: big ? PAD_10K : i };
      const t0 = performance.now();
      let called = false;
      cluster.command(cmd, (err) => {
        if (called) return;
        called = true;
        const l = performance.now() - t0;
        done += 1;
        if (err) {
          errors += 1;
          if (!firstError) firstError = err;
        } else if (record) {
          lat.add(l);
        }
        if (onDone) onDone(l, err);
        if (err && err.code === 'ENOTLEADER') {
          // leadership moved (or was lost): go to the new leader like a client would; while
          // there is none, wait a little
          lostLeader = true;
          if (!cluster.redirect(err)) {
            setTimeout(next, 10);
            return;
          }
        }
        // a client goes on from the callback, on a fresh tick like a real client would
        setImmediate(next);
      });
    };
    active = clients;
    for (let c = 0; c < clients; c++) next();
  });
}

/**
 * One engine row: a fresh cluster made by `startCluster` (bench/engines.js's, of this checkout or of
 * another commit's), a warm-up, then the measured commands; the cluster is stopped in every case.
 * `cpuUs` is this process's CPU time (user + system) over the measured part alone.
 */
async function measureRow(startCluster, engine, row, opts) {
  gc();
  const cluster = await startCluster(engine, row.nodes, NODE_OPTIONS,
    { pipelining: row.pipelining, incremental: row.incremental });
  const seq = { next: 0 };
  try {
    await drive(cluster, {
      clients: row.clients, count: opts.warmCount, ms: opts.warmMs, big: row.big, seq,
    });
    const changes0 = cluster.leaderChanges;
    const cpu0 = process.cpuUsage();
    const r = await drive(cluster, {
      clients: row.clients, count: opts.count, ms: opts.timeMs, big: row.big, seq,
    });
    const cpu = process.cpuUsage(cpu0);
    const leaderChanges = cluster.leaderChanges - changes0;
    const { p50, p99 } = r.latencies.summary();
    const ok = r.done - r.errors;
    return {
      label: cluster.label,
      done: r.done,
      errors: r.errors,
      firstError: r.firstError,
      lostLeader: r.lostLeader,
      leaderChanges,
      seconds: r.elapsedMs / 1000,
      rate: ok / (r.elapsedMs / 1000),
      p50,
      p99,
      cpuUs: cpu.user + cpu.system,
    };
  } finally {
    await cluster.stop();
  }
}


module.exports = { ALL_ROWS, NODE_OPTIONS, gc, rowSpec, runLengths, Latencies, drive, measureRow };
