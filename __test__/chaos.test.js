'use strict';

// Jepsen-style reliability test (issue 5): 5 in-process nodes under partitions (also one-way),
// dropped / duplicated / delayed / reordered messages, slow disks and crash-restarts that lose
// unacknowledged writes, with clients running a read / write / cas register through the log.
// See helpers/chaos-run.js for the checks.
//
//   CHAOS_SEED=<n>     replay a run's fault schedule (every run prints its seed)
//   CHAOS_SECONDS=<s>  how long faults are injected (default 45)
//   CHAOS_INCREMENTAL=1  the persistence has the incremental extension (saveLog, applyCommands)
// Longer runs: node scripts/chaos.js --seconds 600 --seed 42

const test = require('node:test');
const assert = require('node:assert/strict');
const { runChaos, formatSummary } = require('./helpers/chaos-run');

const seed = process.env.CHAOS_SEED !== undefined ? Number(process.env.CHAOS_SEED)
  : Math.floor(Math.random() * 2 ** 31);
const seconds = process.env.CHAOS_SECONDS !== undefined ? Number(process.env.CHAOS_SECONDS) : 45;
const incremental = process.env.CHAOS_INCREMENTAL === '1';

test(`chaos: linearizable register under faults (CHAOS_SEED=${seed} CHAOS_SECONDS=${seconds})`,
  { timeout: (seconds + 120) * 1000 }, async () => {
    console.log(`chaos seed ${seed} (replay: CHAOS_SEED=${seed} CHAOS_SECONDS=${seconds})`);
    const report = await runChaos({ seed, seconds, incremental, log: (s) => console.log(s) });
    console.log(formatSummary(report.summary));
    if (!report.ok) {
      console.log('nemesis schedule:');
      for (const line of report.nemesisLog) console.log(`  ${line}`);
      for (const line of report.diagnosis || []) console.log(`  ${line}`);
    }
    assert.ok(report.summary.completed > 100, `too few completed ops: ${report.summary.completed}`);
    assert.deepEqual(report.failures, [], `seed ${seed}: invariants violated`);
  });
