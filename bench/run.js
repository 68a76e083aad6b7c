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
// callback -> next command (./workload.js).
//
// To compare skiff-rs at two commits rather than against skiff-algorithm: bench/compare.js.

const { performance } = require('perf_hooks');
const { ENGINES, startCluster, sleep } = require('./engines');
const { ALL_ROWS, NODE_OPTIONS, gc, rowSpec, runLengths, Latencies, drive, measureRow } = require('./workload');
const { fmt, ms, ratio, line, mb, machine, loadAverage } = require('./format');
const { parseFlags, fail } = require('./args');

function parseArgs(argv) {
  const args = parseFlags(argv, {
    switches: ['quick'],
    numbers: ['long', 'time', 'count'],
    lists: ['rows'],
    usage: `usage: node bench/run.js [--quick] [--rows=${ALL_ROWS.join(',')}] [--long=N] [--time=S] [--count=N]`,
  });
  const rows = args.rows || ALL_ROWS;
  for (const r of rows) {
    if (!ALL_ROWS.includes(r)) fail(`unknown row ${r}; rows: ${ALL_ROWS.join(',')}`);
  }
  return {
    quick: args.quick,
    rows,
    long: Math.floor(args.long || (args.quick ? 20000 : 1000000)),
    ...runLengths(args),
  };
}

function header(opts) {
  console.log('# skiff-rs benchmark');
  console.log('');
  console.log(`- date: ${new Date().toISOString()}`);
  console.log(`- machine: ${machine()}; load average at start ${loadAverage()}`);
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
      results[engine] = await measureRow(startCluster, engine, row, opts);
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
