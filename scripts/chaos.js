#!/usr/bin/env node
'use strict';

// Long Jepsen-style runs of skiff-rs (the same harness as __test__/chaos.test.js).
//
//   node scripts/chaos.js [--seconds 600] [--seed 42] [--runs 1] [--clients 10] [--reads log|leader|follower]
//                         [--history FILE] [--verbose]
//
// Each run prints its seed and a summary; a failing run prints the violated invariants and the
// fault schedule, and the exit code is 1. --runs N does N runs with seeds seed, seed+1, ...
// --reads leader|follower serves reads through node.read() (ReadIndex on the leader; follower reads
// on any node) instead of the log.
// --history FILE writes the last run's client history as JSON (for the linearizability checker).
// --mutant lying-disk | local-reads tests the test: a broken persistence (saveMeta acknowledged
// before it is durable), or reads served from the contacted node's state machine without the log
// (stale reads); expect failures.

const fs = require('fs');
const path = require('path');
const { runChaos, formatSummary } = require(path.join(__dirname, '..', '__test__', 'helpers', 'chaos-run'));

function parse(argv) {
  const out = { seconds: 600, seed: Math.floor(Math.random() * 2 ** 31), runs: 1 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--seconds') { out.seconds = Number(v); i++; }
    else if (a === '--seed') { out.seed = Number(v); i++; }
    else if (a === '--runs') { out.runs = Number(v); i++; }
    else if (a === '--clients') { out.clients = Number(v); i++; }
    else if (a === '--history') { out.history = v; i++; }
    else if (a === '--reads') { out.reads = v; i++; }
    else if (a === '--verbose' || a === '-v') { out.verbose = true; }
    else if (a === '--mutant') { out.mutant = v; i++; }
    else if (a === '-h' || a === '--help') {
      console.log('usage: node scripts/chaos.js [--seconds S] [--seed N] [--runs R] [--clients C] [--reads MODE] [--history FILE] [--verbose]');
      process.exit(0);
    } else {
      console.error(`unknown argument ${a}`);
      process.exit(2);
    }
  }
  for (const k of ['seconds', 'seed', 'runs']) {
    if (!Number.isFinite(out[k]) || out[k] < 0) {
      console.error(`--${k} must be a non-negative number`);
      process.exit(2);
    }
  }
  return out;
}

async function main() {
  const args = parse(process.argv.slice(2));
  let bad = 0;
  for (let r = 0; r < args.runs; r++) {
    const seed = args.seed + r;
    console.log(`chaos run ${r + 1}/${args.runs}: seed ${seed}, ${args.seconds} s ` +
      `(replay: node scripts/chaos.js --seed ${seed} --seconds ${args.seconds})`);
    const opts = { seed, seconds: args.seconds, log: (s) => console.log(s) };
    if (args.clients) opts.clients = args.clients;
    if (args.mutant) opts.mutant = args.mutant;
    if (args.reads) opts.reads = args.reads;
    const report = await runChaos(opts);
    console.log(formatSummary(report.summary));
    if (args.history) fs.writeFileSync(args.history, JSON.stringify(report.history));
    if (args.verbose && report.ok) {
      console.log('nemesis schedule:');
      for (const line of report.nemesisLog) console.log(`  ${line}`);
    }
    if (report.ok) {
      console.log(`seed ${seed}: OK`);
    } else {
      bad += 1;
      console.log(`seed ${seed}: FAILED`);
      for (const f of report.failures) console.log(`  ${f.split('\n').join('\n  ')}`);
      console.log('nemesis schedule:');
      for (const line of report.nemesisLog) console.log(`  ${line}`);
      if (report.diagnosis) {
        console.log('nodes when recovery failed:');
        for (const line of report.diagnosis) console.log(`  ${line}`);
      }
    }
  }
  process.exitCode = bad ? 1 : 0;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
