'use strict';

// One measured bench row of skiff-rs, in a process of its own, for `npm run bench:compare`
// (compare.js starts one per row, per side, per round). The cluster comes from `--dir`'s own
// bench/engines.js, so it loads that checkout's addon, wrapper and in-memory plugins; the clients
// and the measuring are this checkout's (./workload.js), so both sides run the same workload.
//
//   node bench/compare-child.js --dir=PATH --row=3x64 --time-ms=N --count=N --warm-ms=N --warm-count=N
//
// Prints one line of JSON: { done, errors, firstError, seconds, rate, p50, p99, cpuUs }; `cpuUs` is
// this process's CPU time over the measured commands alone (startup, warm-up and stop left out).

const path = require('path');
const { ALL_ROWS, measureRow, rowSpec } = require('./workload');
const { parseFlags, fail } = require('./args');

const USAGE = 'usage: node bench/compare-child.js --dir=PATH --row=ROW --time-ms=N --count=N --warm-ms=N ' +
  '--warm-count=N';

function parseArgs(argv) {
  const args = parseFlags(argv, {
    strings: ['dir', 'row'],
    numbers: ['time-ms', 'count', 'warm-ms', 'warm-count'],
    usage: USAGE,
  });
  for (const [k, v] of Object.entries(args)) {
    if (v === null) fail(`--${k} is required\n${USAGE}`);
  }
  if (!ALL_ROWS.includes(args.row) || args.row === 'long') fail(`unknown row ${args.row}`);
  return {
    dir: args.dir,
    row: rowSpec(args.row),
    opts: {
      timeMs: args['time-ms'], count: args.count, warmMs: args['warm-ms'], warmCount: args['warm-count'],
    },
  };
}

async function main() {
  const { dir, row, opts } = parseArgs(process.argv.slice(2));
  const { startCluster } = require(path.join(path.resolve(dir), 'bench', 'engines.js'));
  const r = await measureRow(startCluster, 'skiff-rs', row, opts);
  const firstError = r.firstError ? `${r.firstError.code || ''} ${r.firstError.message}`.trim() : null;
  process.stdout.write(`${JSON.stringify({
    done: r.done, errors: r.errors, firstError, seconds: r.seconds, rate: r.rate, p50: r.p50, p99: r.p99,
    cpuUs: r.cpuUs,
  })}\n`);
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exitCode = 1;
});
