'use strict';

// Small, targeted reproductions of what the chaos test found, on the same plugins
// (lib/memory.js, chaos-store.js) without random faults:
//
//   node __test__/helpers/chaos-repro.js [scenario] [--tries N]
//
// Each scenario prints what it checks and exits 1 if the engine misbehaved in any try.

const Node = require('../..');
const { MemoryNetwork } = require('../../lib/memory');
const { ChaosStore } = require('./chaos-store');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const { prng: rng } = require('./prng');

async function until(fn, ms, what) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// A small cluster on the chaos plugins.
async function cluster(n, nodeOptions) {
  const t0 = Date.now();
  const net = new MemoryNetwork({ rand: rng(1), partitionMode: 'drop', refuseRate: 0.2 });
  const store = new ChaosStore({ rand: rng(2), now: () => Date.now() - t0 });
  const live = new Map();
  const all = [];
  const errors = [];
  const start = (id, standby) => {
    const node = Node(Object.assign({ id, standby, transport: net, persistence: store.plugin(id) }, nodeOptions));
    node.on('error', (e) => {
      errors.push(`${id}: ${e.code} ${e.message}`);
      store.trace(id, `node error ${e.code}: ${e.message}`);
    });
    node.on('warning', () => {});
    node.listen(id);
    live.set(id, node);
    all.push(node);
    return node;
  };
  const ids = [];
  for (let i = 1; i <= n; i++) ids.push(`n${i}`);
  const first = start(ids[0], false);
  await until(() => first.state.name === 'leader', 5000, 'n1 to lead');
  for (const id of ids.slice(1)) start(id, true);
  for (const id of ids.slice(1)) await first.join(id);
  await until(() => ids.every((id) => live.get(id).currentLeader() === 'n1'), 5000, 'followers');
  return {
    net, store, live, ids, errors,
    leader: () => [...live.values()].find((x) => x.state.name === 'leader'),
    async crash(id) {
      const node = live.get(id);
      live.delete(id);
      net.crash(id);
      store.crash(id);
      await node.stop();
    },
    restart(id) {
      net.revive(id);
      return start(id, true);
    },
    async stop() {
      await Promise.all(all.map((x) => x.stop().catch(() => {})));
      net.shutdown();
      store.shutdown();
    },
  };
}

let cmdSeq = 0;
function cmd(client, key, value) {
  cmdSeq += 1;
  return { id: `r${cmdSeq}`, client, seq: cmdSeq, op: 'write', key, value };
}

// A. The leader's applyCommand is slow (each call takes longer than commandTimeout / batch size),
// so the engine times out apply batches the wrapper is still working through, and retries them.
// A follower that was down needs a snapshot meanwhile. Checks that every snapshot installed is
// labelled with the index of the state it carries (persistence: createReadStream copies the state
// machine at sm.index; the follower's saveCommitIndex(lastIncludedIndex) must equal it).
async function snapshotIndex() {
  const c = await cluster(3, {
    heartbeatInterval: 50, minElectionTimeout: 150, maxElectionTimeout: 300,
    commandTimeout: 1000, retainedLogEntries: 5,
  });
  try {
    const l = c.leader();
    for (let i = 0; i < 20; i++) await l.command(cmd(0, 'a', i));
    await c.crash('n3');
    // once n3 has been silent for a while the leader compacts past its log: n3 will need a snapshot
    await sleep(1000);
    for (let i = 0; i < 30; i++) await l.command(cmd(0, 'a', 100 + i), { timeout: 10000 });
    c.store.setDisk(l.id, [120, 120], ['applyCommand']);
    // many commands at once: apply batches of ~10+ entries take > 1 s, the engine's apply timeout
    const pending = [];
    for (let i = 0; i < 60; i++) pending.push(l.command(cmd(1 + (i % 10), 'b', i), { timeout: 20000 }).catch(() => {}));
    await sleep(1500);
    c.restart('n3');
    await Promise.all(pending);
    c.store.setDisk(l.id, null);
    await until(() => c.store.sm('n3').index >= c.store.sm(l.id).index, 15000, 'n3 to catch up');
  } finally {
    await c.stop();
  }
  const bad = c.store.violations;
  return {
    ok: bad.length === 0,
    detail: bad.map((v) => `${v.invariant}: ${v.detail}\n    ${(v.trace || []).slice(-25).join('\n    ')}`),
    extra: `${c.store.stats.installs} snapshot installs; node errors: ${[...new Set(c.errors.map((e) => e.replace(/\d+/g, 'N')))].join(' | ')}`,
  };
}

// B. A follower's applyCommand is slow, so the engine times out apply batches the wrapper is still
// working through. Meanwhile the follower is cut off long enough that the leader compacts past its
// log; when it is back the leader sends a snapshot, and the follower clears its state machine
// (removeAllState) while the abandoned apply chain is still calling applyCommand. Checks that no
// applyCommand(i) lands on the cleared state machine (sm at 0, i > 1).
async function slowInstall() {
  const c = await cluster(3, {
    heartbeatInterval: 50, minElectionTimeout: 150, maxElectionTimeout: 300,
    commandTimeout: 600, retainedLogEntries: 5,
  });
  try {
    const l = c.leader();
    for (let i = 0; i < 10; i++) await l.command(cmd(0, 'a', i));
    c.store.setDisk('n3', [150, 150], ['applyCommand']);
    for (let i = 0; i < 30; i++) await l.command(cmd(0, 'b', i), { timeout: 10000 });
    c.net.partition([['n3'], ['n1', 'n2']]);
    await sleep(1000);
    for (let i = 0; i < 30; i++) await l.command(cmd(0, 'c', i), { timeout: 10000 });
    c.net.heal();
    await sleep(3000);
    c.store.setDisk('n3', null);
    await until(() => c.store.sm('n3').index >= c.store.sm(l.id).index, 20000, 'n3 to catch up');
  } finally {
    await c.stop();
  }
  const bad = c.store.violations;
  return {
    ok: bad.length === 0,
    detail: bad.map((v) => `${v.invariant}: ${v.detail}\n    ${(v.trace || []).slice(-14).join('\n    ')}`),
    extra: `${c.store.stats.installs} snapshot installs, ${c.store.stats.resets} resets; node errors: ` +
      `${[...new Set(c.errors.map((e) => e.replace(/\d+/g, 'N')))].join(' | ')}`,
  };
}

// C. A follower's applyCommand takes 20 ms (a slow disk, but a steady one) and it has a backlog of
// 100 committed entries: 2 s of work, more than commandTimeout (500 ms). Checks that it catches up
// within 10 s (it needs 2 s of disk time; an engine that retries a timed-out batch from its start
// without waiting for the work under way never gets further).
async function slowApplyCatchUp() {
  const c = await cluster(3, {
    heartbeatInterval: 50, minElectionTimeout: 150, maxElectionTimeout: 300,
    commandTimeout: 500, retainedLogEntries: 1000,
  });
  let ok = true;
  let detail = [];
  let start = 0;
  try {
    const l = c.leader();
    c.store.setDisk('n3', [20, 20], ['applyCommand']);
    c.net.partition([['n3'], ['n1', 'n2']]);
    for (let i = 0; i < 100; i++) await l.command(cmd(0, 'a', i));
    const target = c.store.sm(l.id).index;
    c.net.heal();
    start = Date.now();
    try {
      await until(() => c.store.sm('n3').index >= target, 10000, 'n3 to apply the backlog');
    } catch (e) {
      ok = false;
      detail = [`n3 applied ${c.store.sm('n3').index} of ${target} after 10 s ` +
        `(${c.store.stats.reapplied} applyCommand calls for indexes it already had)\n    ` +
        c.store.traceOf('n3').slice(-8).join('\n    ')];
    }
  } finally {
    await c.stop();
  }
  return {
    ok,
    detail,
    extra: `caught up ${ok ? `in ${Date.now() - start} ms` : 'never'}; node errors: ` +
      `${[...new Set(c.errors.map((e) => e.replace(/\d+/g, 'N')))].join(' | ')}`,
  };
}

// D. One follower of three is down (a majority is healthy) and far enough behind to need a
// snapshot. Checks that commands keep completing: none of 5 s of sequential commands times out
// (1 s each) and throughput stays above half of what it is with all three up.
async function followerDownStall() {
  const c = await cluster(3, {
    heartbeatInterval: 50, minElectionTimeout: 150, maxElectionTimeout: 300,
    commandTimeout: 1000, retainedLogEntries: 5,
  });
  const measure = async (l) => {
    let ok = 0;
    let failed = 0;
    let worst = 0;
    const end = Date.now() + 5000;
    while (Date.now() < end) {
      const t = Date.now();
      try {
        await l.command(cmd(0, 'a', ok));
        ok += 1;
      } catch (e) {
        failed += 1;
      }
      worst = Math.max(worst, Date.now() - t);
    }
    return { ok, failed, worst };
  };
  let up;
  let down;
  try {
    const l = c.leader();
    up = await measure(l);
    await c.crash('n3');
    down = await measure(l);
  } finally {
    await c.stop();
  }
  const good = down.failed === 0 && down.ok * 2 >= up.ok;
  return {
    ok: good,
    detail: good ? [] : [`all up: ${up.ok} commands in 5 s; n3 down: ${down.ok} completed, ${down.failed} timed out, ` +
      `slowest ${down.worst} ms; ${c.store.stats.snapshotReads} snapshot reads started by the leader for the dead n3`],
    extra: `all up ${up.ok}/5 s, n3 down ${down.ok}/5 s`,
  };
}

const SCENARIOS = {
  'snapshot-index': snapshotIndex,
  'slow-install': slowInstall,
  'slow-apply-catch-up': slowApplyCatchUp,
  'follower-down-stall': followerDownStall,
};

async function main() {
  const args = process.argv.slice(2);
  let tries = 3;
  const ti = args.indexOf('--tries');
  if (ti !== -1) {
    tries = Number(args[ti + 1]);
    args.splice(ti, 2);
  }
  const names = args.length ? args : Object.keys(SCENARIOS);
  let failed = 0;
  for (const name of names) {
    const fn = SCENARIOS[name];
    if (!fn) throw new Error(`unknown scenario ${name}; have ${Object.keys(SCENARIOS).join(', ')}`);
    for (let t = 1; t <= tries; t++) {
      let r;
      try {
        r = await fn();
      } catch (e) {
        r = { ok: false, detail: [`harness: ${e.message}`], extra: '' };
      }
      console.log(`${name} try ${t}: ${r.ok ? 'OK' : 'ENGINE MISBEHAVED'} (${r.extra})`);
      for (const d of r.detail.slice(0, 3)) console.log(`  ${d}`);
      if (!r.ok) failed += 1;
    }
  }
  process.exitCode = failed ? 1 : 0;
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

module.exports = { SCENARIOS, cluster };
