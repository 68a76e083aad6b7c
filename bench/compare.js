'use strict';

// `npm run bench:compare -- <rev>`: skiff-rs at this checkout (HEAD, with any uncommitted changes)
// against skiff-rs at another commit, side by side in one run, so that "no slower than the previous
// commit" can be judged on a shared machine whose load swings. Prints a Markdown table.
//
//   node bench/compare.js <rev> [--rows=3x1,3x64,...] [--rounds=N] [--time=S] [--count=N] [--quick]
//
//   <rev>        any git revision; its addon is built once into a cached checkout (./checkout.js).
//                A revision with HEAD's tree uses this checkout on both sides (no build).
//   --rows=...   rows of `npm run bench` (bench/run.js), without `long`; default 3x1,3x64,3x256 and
//                3x64-inc,3x256-inc when both sides know them. A row one side does not know is left
//                out, and the output says so.
//   --rounds=N   rounds (default 3): each round runs every row on both sides, HEAD first in odd
//                rounds and <rev> first in even ones (A B B A ...), so the two sides share whatever
//                load the machine has meanwhile and neither always runs first
//   --time=S, --count=N, --quick   the length of each run, as for bench/run.js
//
// Each run is a fresh child process (./compare-child.js): one cluster of skiff-rs over the
// checkout's own in-memory plugins, driven by this checkout's clients. Per row and side the table
// gives cmd/s as the median and the min–max over the rounds, and CPU µs per command (the child's
// process.cpuUsage over the measured commands, median over the rounds): under load, wall-clock
// throughput moves with what else runs, while CPU time per command moves much less. Ratios are
// HEAD / <rev>: above 1× HEAD is faster for cmd/s, below 1× HEAD is cheaper for CPU.

const { execFile } = require('child_process');
const path = require('path');
const { ALL_ROWS, rowSpec, runLengths } = require('./workload');
const { fmt, ratio, line, machine, loadAverage } = require('./format');
const { parseFlags, fail } = require('./args');
const { ROOT, git, resolveCommit, sameTreeAsHead, builtCheckout, knownRows } = require('./checkout');

const DEFAULT_ROWS = ['3x1', '3x64', '3x256', '3x64-inc', '3x256-inc'];
const COMPARABLE_ROWS = ALL_ROWS.filter((r) => r !== 'long');

function usage() {
  return `usage: node bench/compare.js <rev> [--rows=${COMPARABLE_ROWS.join(',')}] [--rounds=N] ` +
    '[--time=S] [--count=N] [--quick]';
}

function parseArgs(argv) {
  const args = parseFlags(argv, {
    switches: ['quick'],
    numbers: ['rounds', 'time', 'count'],
    lists: ['rows'],
    positional: 'rev',
    usage: usage(),
  });
  if (args.rev === null) fail(usage());
  for (const r of args.rows || []) {
    if (!COMPARABLE_ROWS.includes(r)) fail(`unknown row ${r}; rows: ${COMPARABLE_ROWS.join(',')}`);
  }
  return {
    rev: args.rev,
    rows: args.rows,
    rounds: Math.floor(args.rounds || 3),
    ...runLengths(args),
  };
}

/** One run of `row` on the checkout in `dir`, in a child process: its result, or { failed }. */
function runChild(dir, row, opts) {
  const args = [path.join(__dirname, 'compare-child.js'), `--dir=${dir}`, `--row=${row.name}`,
    `--time-ms=${opts.timeMs}`, `--count=${opts.count}`, `--warm-ms=${opts.warmMs}`,
    `--warm-count=${opts.warmCount}`];
  // a generous bound: cluster start, warm-up, the run, and stop
  const timeout = opts.timeMs + opts.warmMs + 60000;
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: ROOT, timeout, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const last = stdout.trim().split('\n').pop();
      if (err) {
        resolve({ failed: `${err.killed ? 'timed out' : `exit ${err.code ?? err.signal}`}: ${stderr.trim()}` });
        return;
      }
      try {
        resolve(JSON.parse(last));
      } catch (_) {
        resolve({ failed: `no result line in its output: ${stdout.trim()} ${stderr.trim()}` });
      }
    });
  });
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** The figures of one side of one row over its rounds (failed runs left out). */
function summarize(runs) {
  const ok = runs.filter((r) => !r.failed);
  const rates = ok.map((r) => r.rate);
  return {
    runs: ok.length,
    failed: runs.length - ok.length,
    errors: ok.reduce((n, r) => n + r.errors, 0),
    rate: median(rates),
    min: Math.min(...rates),
    max: Math.max(...rates),
    cpuPerCmd: median(ok.filter((r) => r.done > 0).map((r) => r.cpuUs / r.done)),
  };
}

function rateCell(s) {
  return s.runs ? `${fmt(s.rate)} (${fmt(s.min)}–${fmt(s.max)})` : '–';
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = new Date();
  const loadStart = loadAverage();
  let commit;
  try {
    commit = resolveCommit(opts.rev);
  } catch (_) {
    fail(`bench:compare: git does not know the revision ${opts.rev}`);
  }
  const head = git(['rev-parse', '--short', 'HEAD']);
  const dirty = git(['status', '--porcelain', '--untracked-files=no']) !== '';
  const same = sameTreeAsHead(commit);
  const otherDir = same ? ROOT : builtCheckout(commit);
  const a = { name: head, label: `HEAD ${head}${dirty ? ' + uncommitted changes' : ''}`, dir: ROOT };
  const short = commit.slice(0, 7);
  const b = { name: short, label: commit.startsWith(opts.rev) ? short : `${opts.rev} (${short})`, dir: otherDir };
  // against HEAD's own commit the two columns need names that differ
  if (b.name === a.name) a.name = 'this checkout';

  const knownA = knownRows(a.dir);
  const knownB = knownRows(b.dir);
  const wanted = opts.rows || DEFAULT_ROWS;
  const rows = wanted.filter((r) => knownA.includes(r) && knownB.includes(r)).map(rowSpec);
  const skipped = wanted.filter((r) => !rows.some((row) => row.name === r));
  if (rows.length === 0) fail(`bench:compare: no row that both sides know among ${wanted.join(',')}`);

  const runs = new Map(rows.map((row) => [row.name, { a: [], b: [] }]));
  for (let round = 1; round <= opts.rounds; round++) {
    for (const row of rows) {
      // ABBA: which side goes first alternates from round to round, so that whatever favours
      // the first (or the second) run of a pair falls on both sides alike
      const order = round % 2 === 1 ? [['a', a], ['b', b]] : [['b', b], ['a', a]];
      for (const [key, side] of order) {
        process.stderr.write(`bench:compare: round ${round}/${opts.rounds}, ${row.name}, ${side.label}\n`);
        const r = await runChild(side.dir, row, opts);
        if (r.failed) process.stderr.write(`  failed: ${r.failed}\n`);
        else if (r.firstError) process.stderr.write(`  ${r.errors} errors; first: ${r.firstError}\n`);
        runs.get(row.name)[key].push(r);
      }
    }
  }

  console.log(`# skiff-rs bench: ${a.label} against ${b.label}`);
  console.log('');
  console.log(`- started ${started.toISOString()}; machine: ${machine()}; node ${process.version}`);
  console.log(`- command: node ${['bench/compare.js', ...process.argv.slice(2)].join(' ')}`);
  console.log(`- ${opts.rounds} rounds, the sides alternating (A B B A ...), each run a fresh child process: warm-up ` +
    `${fmt(opts.warmCount)} commands or ${opts.warmMs / 1000} s, then ${fmt(opts.count)} commands or ` +
    `${opts.timeMs / 1000} s, whichever first; in-memory transport and persistence`);
  if (same) {
    console.log(`- ${opts.rev} has HEAD's tree: both sides run this checkout` +
      `${dirty ? ', uncommitted changes included' : ''}`);
  }
  if (skipped.length) console.log(`- left out (not known to both sides): ${skipped.join(', ')}`);
  console.log(`- load average at start ${loadStart}`);
  console.log('');
  line(['row', `${a.name} cmd/s: median (min–max)`, `${b.name} cmd/s: median (min–max)`,
    `cmd/s ${a.name} / ${b.name}`, `${a.name} CPU µs/cmd`, `${b.name} CPU µs/cmd`, `CPU ${a.name} / ${b.name}`]);
  line(['---', '---:', '---:', '---:', '---:', '---:', '---:']);
  let failures = 0;
  for (const row of rows) {
    const sa = summarize(runs.get(row.name).a);
    const sb = summarize(runs.get(row.name).b);
    failures += sa.failed + sb.failed;
    line([row.title, rateCell(sa), rateCell(sb), ratio(sa.rate, sb.rate), fmt(sa.cpuPerCmd, 1),
      fmt(sb.cpuPerCmd, 1), ratio(sa.cpuPerCmd, sb.cpuPerCmd)]);
    for (const [side, s] of [[a, sa], [b, sb]]) {
      if (s.failed || s.errors) {
        console.log(`  (${row.name} on ${side.name}: ${s.failed} of ${opts.rounds} runs failed, ` +
          `${fmt(s.errors)} command errors)`);
      }
    }
  }
  console.log('');
  console.log(`- load average at end ${loadAverage()}`);
  if (failures) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exitCode = 1;
});
