'use strict';

// Jepsen-style reliability test (issue 5): 5 in-process nodes under partitions (also one-way),
// dropped / duplicated / delayed / reordered messages, slow disks and crash-restarts that lose
// unacknowledged writes, with clients running a read / write / cas register through the log.
// See helpers/chaos-run.js for the checks.
//
//   CHAOS_SEED=<n>     replay a run's fault schedule (every run prints its seed)
//   CHAOS_SECONDS=<s>  how long faults are injected (default 45)
//   CHAOS_INCREMENTAL=1  the persistence has the incremental extension (saveLog, applyCommands)
//   CHAOS_POINT_IN_TIME=1  the persistence has the point-in-time snapshot extension
//   CHAOS_READS_SECONDS=<s>  how long each of the two runs with reads through node.read() lasts
//                      (on the leader; follower reads on any node) (default 20)
// Longer runs: node scripts/chaos.js --seconds 600 --seed 42

const test = require('node:test');
const assert = require('node:assert/strict');
const { runChaos, formatSummary } = require('./helpers/chaos-run');

const seed = process.env.CHAOS_SEED !== undefined ? Number(process.env.CHAOS_SEED)
  : Math.floor(Math.random() * 2 ** 31);
const seconds = process.env.CHAOS_SECONDS !== undefined ? Number(process.env.CHAOS_SECONDS) : 45;
const incremental = process.env.CHAOS_INCREMENTAL === '1';
const pointInTime = process.env.CHAOS_POINT_IN_TIME === '1';

const readSeconds = process.env.CHAOS_READS_SECONDS !== undefined ? Number(process.env.CHAOS_READS_SECONDS) : 20;

async function chaos(seconds, reads) {
  console.log(`chaos seed ${seed} reads ${reads} (replay: CHAOS_SEED=${seed}, seconds ${seconds})`);
  const report = await runChaos({ seed, seconds, incremental, pointInTime, reads, log: (s) => console.log(s) });
  console.log(formatSummary(report.summary));
  if (!report.ok) {
    console.log('nemesis schedule:');
    for (const line of report.nemesisLog) console.log(`  ${line}`);
    for (const line of report.diagnosis || []) console.log(`  ${line}`);
  }
  assert.ok(report.summary.completed > 100, `too few completed ops: ${report.summary.completed}`);
  assert.deepEqual(report.failures, [], `seed ${seed}: invariants violated`);
  return report;
}

test(`chaos: linearizable register under faults (CHAOS_SEED=${seed} CHAOS_SECONDS=${seconds})`,
  { timeout: (seconds + 120) * 1000 }, () => chaos(seconds, 'log'));

for (const reads of ['leader', 'follower']) {
  test(`chaos: reads through node.read() (${reads}) stay linearizable (CHAOS_SEED=${seed})`,
    { timeout: (readSeconds + 120) * 1000 }, async () => {
      const report = await chaos(readSeconds, reads);
      assert.ok(report.summary.reads > 20, `too few completed reads: ${report.summary.reads}`);
    });
}
