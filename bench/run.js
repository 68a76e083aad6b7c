'use strict';

// `npm run bench`: the same workload on skiff-algorithm 0.8.2 and skiff-rs, side by side, in one
// process, then a long run on skiff-rs alone. Prints a Markdown table that can be pasted into the
// README.
//
//   node bench/run.js [--quick] [--rows=3x1,3x64,...] [--long=N] [--time=S] [--count=N]
//
//   --quick      short rows and a short long run (a smoke run)
//   --rows=...   rows to run, comma separated: 3x1 3x16 3x64 3x256 3x256-1 5x256 7x256 3x64x10k
//                3x64-inc 3x256-inc long
//                (3x256-1: a transport that declares nothing, so one request in flight per
//                connection: throughput then comes from batching alone; -inc: skiff-rs alone, on a
//                persistence with the incremental extension, saveLog and applyCommands)
//   --long=N     commands in the long run (default 1,000,000; --quick: 20,000)
//   --time=S     measured seconds per engine row, at most (default 5; --quick: 1)
//   --count=N    measured commands per engine row, at most (default 100,000; --quick: 2,000)
//
// Workload: N nodes in this process over the in-memory plugins of ./plugins.js (every message and
// state JSON-cloned, every callback on setImmediate). C clients, each: command -> wait for its
// callback -> next command. Commands are `{op: 'put', key: 'k' + (i % 1000), value: i}` (the key
// space is bounded so that the state machine does not grow with the run), or with a 10 KB string
// as value. Latency is per command, from the `command()` call to its callback.

const os = require('os');
const v8 = require('v8');
const vm = require('vm');
const { performance } = require('perf_hooks');
const { ENGINES, startCluster, sleep } = require('./engines');

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

function parseArgs(argv) {
  const args = { quick: false, rows: null, long: null, time: null, count: null };
  for (const a of argv) {
    if (a === '--quick') args.quick = true;
    else if (a.startsWith('--rows=')) args.rows = a.slice(7).split(',').map((s) => s.trim()).filter(Boolean);
    else if (a.startsWith('--long=')) args.long = Number(a.slice(7));
    else if (a.startsWith('--time=')) args.time = Number(a.slice(7));
    else if (a.startsWith('--count=')) args.count = Number(a.slice(8));
    else if (a === '--help' || a === '-h') {
      console.log(`usage: node bench/run.js [--quick] [--rows=${ALL_ROWS.join(',')}] ` +
        '[--long=N] [--time=S] [--count=N]');
      process.exit(0);
    } else {
      console.error(`unknown argument ${a}`);
      process.exit(2);
    }
  }
  const rows = args.rows || ALL_ROWS;
  for (const r of rows) {
    if (!ALL_ROWS.includes(r)) {
      console.error(`unknown row ${r}; rows: ${ALL_ROWS.join(',')}`);
      process.exit(2);
    }
  }
  for (const k of ['long', 'time', 'count']) {
    if (args[k] !== null && !(Number.isFinite(args[k]) && args[k] > 0)) {
      console.error(`--${k} must be a positive number`);
      process.exit(2);
    }
  }
  return {
    quick: args.quick,
    rows,
    long: Math.floor(args.long || (args.quick ? 20000 : 1000000)),
    timeMs: (args.time || (args.quick ? 1 : 5)) * 1000,
    count: Math.floor(args.count || (args.quick ? 2000 : 100000)),
    warmMs: args.quick ? 200 : 1000,
    warmCount: args.quick ? 200 : 2000,
  };
}

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

// ------------------------------------------------------------------------------------------------
// measuring

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

// ------------------------------------------------------------------------------------------------
// output

function fmt(n, digits = 0) {
  if (!Number.isFinite(n)) return '–';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ms(n) {
  if (!Number.isFinite(n)) return '–';
  return n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0);
}

function ratio(a, b) {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '–';
  const r = a / b;
  return `${r < 10 ? r.toFixed(2) : r.toFixed(1)}×`;
}

function line(cells) {
  console.log(`| ${cells.join(' | ')} |`);
}

function mb(bytes) {
  return (bytes / (1024 * 1024)).toFixed(0);
}

function header(opts) {
  const cpus = os.cpus();
  const model = cpus.length ? cpus[0].model.trim() : 'unknown CPU';
  console.log('# skiff-rs benchmark');
  console.log('');
  console.log(`- date: ${new Date().toISOString()}`);
  console.log(`- machine: ${model}, ${cpus.length} cores, ${fmt(os.totalmem() / 2 ** 30, 0)} GB, ` +
    `${os.platform()} ${os.release()} ${os.arch()}; load average at start ` +
    `${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(`- node ${process.version}; engines: ${ENGINES['skiff-algorithm'].label}, ${ENGINES['skiff-rs'].label}`);
  console.log(`- command: node ${['bench/run.js', ...process.argv.slice(2)].join(' ')}`);
  console.log(`- each engine row: fresh cluster, warm-up ${opts.warmCount} commands or ` +
    `${opts.warmMs / 1000} s, then ${fmt(opts.count)} commands or ${opts.timeMs / 1000} s, whichever first; ` +
    'in-memory transport and persistence (JSON-cloned, setImmediate callbacks); C clients each ' +
    'waiting for its command\'s callback before the next; latency from command() to its callback');
  console.log('');
}

// ------------------------------------------------------------------------------------------------
// rows

async function runEngineRow(engine, row, opts) {
  gc();
  const cluster = await startCluster(engine, row.nodes, NODE_OPTIONS,
    { pipelining: row.pipelining, incremental: row.incremental });
  const seq = { next: 0 };
  try {
    await drive(cluster, {
      clients: row.clients, count: opts.warmCount, ms: opts.warmMs, big: row.big, seq,
    });
    const changes0 = cluster.leaderChanges;
    const r = await drive(cluster, {
      clients: row.clients, count: opts.count, ms: opts.timeMs, big: row.big, seq,
    });
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
    };
  } finally {
    await cluster.stop();
  }
}

function printEngine(title, res) {
  const errors = res.lostLeader ? `${fmt(res.errors)} (leader lost; ${res.leaderChanges} new)` : fmt(res.errors);
  line([title, res.label, fmt(res.done), errors, res.seconds.toFixed(2), fmt(res.rate),
    ms(res.p50), ms(res.p99)]);
  if (res.firstError) {
    console.error(`  (${res.label}: first error: ${res.firstError.code || ''} ${res.firstError.message})`);
  }
}

// Both engines on the row's workload, and their ratio; a row on the incremental extension runs
// skiff-rs alone (skiff-algorithm knows only the original contract).
async function sideBySide(row, opts) {
  const results = {};
  for (const engine of row.incremental ? ['skiff-rs'] : ['skiff-algorithm', 'skiff-rs']) {
    try {
      results[engine] = await runEngineRow(engine, row, opts);
      printEngine(row.title, results[engine]);
    } catch (e) {
      line([row.title, ENGINES[engine].label, `failed: ${e.message}`, '', '', '', '', '']);
    }
  }
  const a = results['skiff-algorithm'];
  const b = results['skiff-rs'];
  if (a && b) {
    line([row.title, '**ratio skiff-rs / skiff-algorithm**', '', '', '', `**${ratio(b.rate, a.rate)}**`,
      ratio(b.p50, a.p50), ratio(b.p99, a.p99)]);
  }
}

async function longRun(opts) {
  const total = opts.long;
  const every = total >= 1000000 ? 100000 : Math.max(1000, Math.ceil(total / 10));
  console.log('');
  console.log(`## long run: skiff-rs alone, 3 nodes, C=256, ${fmt(total)} commands (after a warm-up of ` +
    `${fmt(opts.warmCount)} commands), reported every ${fmt(every)}`);
  console.log('');
  line(['commands', 'cmd/s (this chunk)', 'cmd/s (so far)', 'p50 ms', 'p99 ms', 'errors', 'RSS MB', 'heap MB']);
  // memory is read after a full GC; the GC's own time is left out of the throughput figures
  line(['---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:']);
  gc();
  const cluster = await startCluster('skiff-rs', 3, NODE_OPTIONS);
  const seq = { next: 0 };
  const chunks = [];
  try {
    await drive(cluster, { clients: 256, count: opts.warmCount, ms: opts.warmMs, big: false, seq });
    gc();
    const rss0 = process.memoryUsage().rss;
    const start = performance.now();
    let chunkStart = start;
    let chunkLat = new Latencies();
    let n = 0;
    let chunkErrors = 0;
    let errors = 0;
    let gcMs = 0;
    const report = () => {
      const now = performance.now();
      const { p50, p99 } = chunkLat.summary();
      const rate = chunkLat.n / ((now - chunkStart) / 1000);
      const soFar = n / ((now - start - gcMs) / 1000);
      const g0 = performance.now();
      gc(); // its time is left out of the throughput figures
      const mem = process.memoryUsage();
      gcMs += performance.now() - g0;
      chunks.push({ n, rate, rss: mem.rss });
      line([fmt(n), fmt(rate), fmt(soFar), ms(p50), ms(p99), fmt(chunkErrors), mb(mem.rss), mb(mem.heapUsed)]);
      chunkStart = performance.now();
      chunkLat = new Latencies();
      chunkErrors = 0;
    };
    const r = await drive(cluster, {
      clients: 256, count: total, ms: Infinity, big: false, seq, record: false,
      onDone(l, err) {
        n += 1;
        if (err) {
          chunkErrors += 1;
          errors += 1;
        } else {
          chunkLat.add(l);
        }
        if (n % every === 0) report();
      },
    });
    const rate = (r.done - r.errors) / ((r.elapsedMs - gcMs) / 1000);
    if (n % every !== 0) report();
    const first = chunks[0];
    const last = chunks[chunks.length - 1];
    console.log('');
    console.log(`long run: ${fmt(r.done)} commands in ${(r.elapsedMs / 1000).toFixed(1)} s (GC for the memory ` +
      `readings: ${(gcMs / 1000).toFixed(1)} s, left out) = ${fmt(rate)} cmd/s, ` +
      `${fmt(errors)} errors; last chunk / first chunk throughput ${ratio(last.rate, first.rate)}; ` +
      `RSS ${mb(rss0)} MB after warm-up, ${mb(first.rss)} MB after the first chunk, ${mb(last.rss)} MB at the end`);
    if (r.firstError) console.error(`  (first error: ${r.firstError.code || ''} ${r.firstError.message})`);
  } finally {
    await cluster.stop();
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  header(opts);
  const sideRows = opts.rows.filter((r) => r !== 'long').map(rowSpec);
  if (sideRows.length) {
    line(['row', 'engine', 'commands', 'errors', 'seconds', 'cmd/s', 'p50 ms', 'p99 ms']);
    line(['---', '---', '---:', '---:', '---:', '---:', '---:', '---:']);
    for (const row of sideRows) {
      await sideBySide(row, opts);
      await sleep(50);
    }
  }
  if (opts.rows.includes('long')) await longRun(opts);
  console.log('');
  console.log('done');
}

main().then(() => {
  // nothing is left running: the process exits on its own (skiff-algorithm's leftover timers may
  // hold it for up to its commandTimeout)
}, (e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exitCode = 1;
});
