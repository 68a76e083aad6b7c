'use strict';

// A Jepsen-style run against skiff-rs: 5 in-process nodes on a fault-injecting transport
// (lib/memory.js) and persistence (chaos-store.js), clients running a replicated register workload
// (read / write / cas, all through the log; or reads through `node.read()`, on the leader or on any
// node: option `reads`), a nemesis injecting faults, then checks:
//
//   - linearizability of the client history, per key (helpers/linearizability.js);
//   - state machine safety: no two nodes applied different commands at one index, and no node
//     skipped an index (except through a snapshot);
//   - snapshot integrity: an installed snapshot equals the log replayed to its index;
//   - election safety: at most one node sent AppendEntries for any term;
//   - no acknowledged write lost: every acknowledged write / successful cas took effect in the log,
//     and every node's final state equals the whole log replayed;
//   - after healing every fault the cluster answers again, and every node catches up.
//
//   const { runChaos } = require('./chaos-run');
//   const report = await runChaos({ seed: 42, seconds: 60, log: console.log });
//   report.ok, report.failures (list of strings), report.summary
//
// The seed fixes the fault schedule and the workload's choices; thread timing still varies, so a
// replay explores the same faults, not the same interleaving.

const { performance } = require('perf_hooks');
const Node = require('../..');
const { MemoryNetwork } = require('../../lib/memory');
const { ChaosStore, applyTo, emptySm, smText } = require('./chaos-store');
const { check } = require('./linearizability');

const { prng } = require('./prng');

const DEFAULTS = {
  seed: 1,
  seconds: 45,
  nodes: 5,
  clients: 10,
  keySlots: 5,          // keys in use at a time
  opsPerKey: 250,       // then the slot moves to a fresh key (keeps per-key histories small)
  opTimeout: 1000,      // command({timeout}) per attempt; a timed-out op has an unknown outcome
  opBudget: 3000,       // an op redirected (ENOTLEADER) for longer than this is given up
  thinkMs: 8,           // clients pause 0..thinkMs between ops
  nemesisEvery: [800, 3000],
  maxDown: 2,           // nodes crashed at the same time
  recoverWithin: 30000, // after healing: a command must succeed and every node catch up
  traces: true,         // failures carry the node's recent persistence calls
  incremental: false,   // the persistence has saveLog and applyCommands (the engine uses them)
  pointInTime: false,   // the persistence has createSnapshotReadStream (the engine uses it)
  reads: 'log',         // how reads are served: 'log' (a command), 'leader' (node.read() on the
                        // leader, then its state machine: ReadIndex), 'follower' (node.read() on
                        // whichever node the client talks to: follower reads)
  mutant: null,         // tests the test: 'lying-disk' (saves acknowledge before they are durable),
                        // 'local-reads' (reads served from the contacted node's state machine)
  nodeOptions: {
    heartbeatInterval: 50,
    minElectionTimeout: 150,
    maxElectionTimeout: 300,
    commandTimeout: 2000,
    retainedLogEntries: 50,
  },
  log: () => {},
};

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function within(promise, ms) {
  let timer;
  return Promise.race([
    promise.then(() => true, () => true),
    new Promise((resolve) => { timer = setTimeout(() => resolve(false), ms); }),
  ]).finally(() => clearTimeout(timer));
}

async function runChaos(options = {}) {
  const o = Object.assign({}, DEFAULTS, options);
  o.nodeOptions = Object.assign({}, DEFAULTS.nodeOptions, options.nodeOptions || {});
  const log = o.log;
  const t0 = performance.now();
  const now = () => Math.round((performance.now() - t0) * 1000) / 1000; // ms since start
  const rand = prng(o.seed);
  // Separate streams so that the fault schedule does not depend on how many ops ran.
  const nemRand = prng(o.seed * 7919 + 1);
  const netRand = prng(o.seed * 104729 + 2);
  const diskRand = prng(o.seed * 1299709 + 3);

  const net = new MemoryNetwork({ rand: netRand, partitionMode: 'drop', refuseRate: 0.2 });
  const store = new ChaosStore({ rand: diskRand, now, incremental: Boolean(o.incremental),
    pointInTime: Boolean(o.pointInTime) });
  if (!['log', 'leader', 'follower'].includes(o.reads)) throw new Error(`unknown reads mode ${o.reads}`);
  if (o.mutant === 'lying-disk') {
    store.lying = true;
    store.baseDisk = [5, 60];
  } else if (o.mutant && o.mutant !== 'local-reads') {
    throw new Error(`unknown mutant ${o.mutant}`);
  }
  const ids = [];
  for (let i = 1; i <= o.nodes; i++) ids.push(`n${i}`);
  const live = new Map();      // id -> running Node instance
  const allNodes = [];         // every instance ever made
  const nodeErrors = [];       // { at, node, code, message }
  const failures = [];
  const nemesisLog = [];
  const aeSenders = new Map(); // term -> Set of senders
  let stopping = false;

  const fail = (what) => {
    if (failures.length < 200) failures.push(what);
  };

  net.onMessage = (from, to, type, args) => {
    if ((type === 'AppendEntries' || type === 'InstallSnapshot') && args && typeof args.term === 'number') {
      let set = aeSenders.get(args.term);
      if (!set) {
        set = new Set();
        aeSenders.set(args.term, set);
      }
      set.add(from);
      if (args.leaderId !== from) fail(`election safety: ${from} sent ${type} claiming leader ${args.leaderId}`);
    }
  };

  function startNode(id, standby) {
    const node = Node(Object.assign({}, o.nodeOptions, {
      id,
      standby,
      transport: net,
      persistence: store.plugin(id),
    }));
    node.on('error', (e) => {
      nodeErrors.push({ at: now(), node: id, code: e && e.code, message: e && e.message });
      store.trace(id, `node error ${e && e.code}: ${e && e.message}`);
    });
    node.on('warning', (e) => {
      const m = String(e && e.message);
      if (!/got no reply|unreachable|cannot connect|cannot reach|not connected|closed/.test(m)) {
        store.trace(id, `node warning ${e && e.code}: ${m}`);
      }
    });
    node.on('state', (name) => store.trace(id, `state ${name}`));
    node.listen(id);
    live.set(id, node);
    allNodes.push(node);
    return node;
  }

  async function crash(id) {
    const node = live.get(id);
    if (!node) return;
    live.delete(id);
    net.crash(id);
    store.crash(id);
    const ok = await within(node.stop(), 5000);
    if (!ok) fail(`liveness: stopping crashed node ${id} did not finish within 5 s`);
  }

  function restart(id) {
    if (live.has(id) || stopping) return;
    net.revive(id);
    startNode(id, true);
  }

  function leaders() {
    return [...live.values()].filter((n) => n.state.name === 'leader');
  }

  // Where every node stands, for failure reports.
  function diagnose() {
    return ids.map((id) => {
      const n = live.get(id);
      const meta = store.meta(id);
      let pos = '';
      try {
        pos = n && n._native && typeof n._native.positions === 'function' ? n._native.positions() : '';
      } catch (_) { /* internal, best effort */ }
      const entries = meta && meta.log && meta.log.entries ? meta.log.entries : [];
      const last = entries.length ? entries[entries.length - 1] : null;
      const errs = nodeErrors.filter((e) => e.node === id).slice(-3)
        .map((e) => `${(e.at / 1000).toFixed(2)}s ${e.code} ${e.message}`);
      return `${id}: ${n ? n.state.name : 'down'} term ${n ? n.currentTerm() : '?'} leader ` +
        `${n ? n.currentLeader() : '?'} ${pos} sm@${store.sm(id).index}; persisted term ` +
        `${meta && meta.currentTerm} vote ${meta && meta.votedFor} log ` +
        `(${meta && meta.log.meta.lastIncludedIndex}, ${last ? `${last.index}@${last.term}` : '-'}]` +
        (errs.length ? `; last errors: ${errs.join(' | ')}` : '');
    });
  }
  let diagnosis = null;

  // ---- bootstrap: n1 alone, the others standby and joined by it

  const first = startNode(ids[0], false);
  const bootDeadline = Date.now() + 10000;
  while (first.state.name !== 'leader') {
    if (Date.now() > bootDeadline) throw new Error('bootstrap: n1 did not become leader');
    await sleep(10);
  }
  for (const id of ids.slice(1)) startNode(id, true);
  for (const id of ids.slice(1)) await first.join(id);
  while (!ids.every((id) => live.get(id).currentLeader() === first.id)) {
    if (Date.now() > bootDeadline) throw new Error('bootstrap: the nodes did not all follow n1');
    await sleep(10);
  }
  log(`chaos: cluster of ${o.nodes} up at ${now().toFixed(0)} ms; running ${o.seconds} s`);

  // ---- workload

  const history = [];          // every op, in call order
  const slots = [];
  for (let i = 0; i < o.keySlots; i++) slots.push({ gen: 0, ops: 0 });
  const endAt = now() + o.seconds * 1000;
  let opCounter = 0;

  function pickTarget(avoid) {
    const cands = ids.filter((id) => id !== avoid && live.has(id));
    const pool = cands.length ? cands : ids;
    return pool[Math.floor(rand() * pool.length)];
  }

  const known = new Map(); // key -> last value some client saw (cas expects it)

  // A read without the log: `node.read()`, then that node's own state machine. With reads
  // 'leader' the client goes to the leader as for a command; with 'follower' any node serves it.
  // Returns the node to talk to next.
  async function readOp(rec, key, target, deadline) {
    for (;;) {
      const node = live.get(target);
      const leader = node ? node.currentLeader() : null;
      const redirect = !node || (o.reads === 'leader' && node.state.name !== 'leader');
      if (redirect) {
        target = leader && leader !== target && ids.includes(leader) && node ? leader : pickTarget(target);
        if (now() > deadline) {
          rec.failed = node ? 'ENOTLEADER' : 'no node';
          return target;
        }
        if (!leader) await sleep(5 + rand() * 20);
        continue;
      }
      rec.attempts += 1;
      try {
        await node.read({ timeout: o.opTimeout });
      } catch (err) {
        if (err && err.code === 'ENOTLEADER' && now() <= deadline) {
          await sleep(10 + rand() * 40);
          continue;
        }
        // ETIMEDOUT, ESTOPPED, ...: a read that did not finish constrains nothing.
        rec.error = (err && (err.code || err.message)) || 'rejected without an error';
        return pickTarget(target);
      }
      const sm = store.sm(target);
      rec.result = sm.kv.has(key) ? sm.kv.get(key) : null;
      rec.ret = now();
      rec.node = target;
      known.set(key, rec.result);
      return target;
    }
  }

  async function client(c) {
    let seq = 0;
    let target = pickTarget();
    while (now() < endAt && !stopping) {
      const si = Math.floor(rand() * slots.length);
      const slot = slots[si];
      if (slot.ops >= o.opsPerKey) {
        slot.gen += 1;
        slot.ops = 0;
      }
      slot.ops += 1;
      const key = `k${si}.${slot.gen}`;
      seq += 1;
      opCounter += 1;
      const x = rand();
      const cmd = { id: `c${c}.${seq}`, client: c, seq, key };
      const rec = { client: c, key, call: now(), ret: Infinity, id: cmd.id };
      if (x < 0.4) {
        cmd.op = 'read';
      } else if (x < 0.75) {
        cmd.op = 'write';
        cmd.value = `${c}.${seq}`;
        rec.value = cmd.value;
      } else {
        cmd.op = 'cas';
        cmd.expected = known.has(key) ? known.get(key) : null;
        cmd.value = `${c}.${seq}`;
        rec.expected = cmd.expected;
        rec.value = cmd.value;
      }
      rec.op = cmd.op;
      history.push(rec);
      const deadline = rec.call + o.opBudget;
      rec.attempts = 0;
      if (o.mutant === 'local-reads' && cmd.op === 'read' && live.has(target)) {
        // A broken client (for testing the test): reads the contacted node's state machine
        // directly instead of going through the log.
        const sm = store.sm(target);
        rec.result = sm.kv.has(key) ? sm.kv.get(key) : null;
        rec.ret = now();
        rec.local = true;
        if (o.thinkMs > 0) await sleep(rand() * o.thinkMs);
        continue;
      }
      if (cmd.op === 'read' && o.reads !== 'log') {
        target = await readOp(rec, key, target, deadline);
        if (o.thinkMs > 0) await sleep(rand() * o.thinkMs);
        continue;
      }
      for (;;) {
        const node = live.get(target);
        if (!node) {
          target = pickTarget(target);
          if (now() > deadline) {
            rec.failed = 'no node';
            break;
          }
          await sleep(5 + rand() * 20);
          continue;
        }
        rec.attempts += 1;
        let err = null;
        try {
          await node.command(cmd, { timeout: o.opTimeout });
        } catch (e) {
          err = e || new Error('rejected without an error');
        }
        if (!err) {
          const r = store.result(target, c, seq);
          if (!r) {
            fail(`contract: ${target} acknowledged ${JSON.stringify(cmd)} but its state machine has no result for it`);
            rec.failed = 'no result';
          } else {
            rec.ret = now();
            rec.result = r.result;
            rec.node = target;
            if (cmd.op === 'read') known.set(key, r.result);
            else if (cmd.op === 'write' || r.result === true) known.set(key, cmd.value);
          }
          break;
        }
        if (err.code === 'ENOTLEADER') {
          // not appended (or overwritten by another leader): go to the leader it names
          const next = typeof err.leader === 'string' && err.leader !== target && ids.includes(err.leader)
            ? err.leader : pickTarget(target);
          target = next;
          if (now() > deadline) {
            rec.failed = 'ENOTLEADER';
            break;
          }
          if (!err.leader) await sleep(10 + rand() * 40);
          continue;
        }
        // ETIMEDOUT, ESTOPPED (the node crashed with our command pending), anything else: the
        // outcome is unknown. The op stays in the history with ret Infinity; move on.
        rec.error = err.code || err.message;
        target = pickTarget(target);
        break;
      }
      if (o.thinkMs > 0) await sleep(rand() * o.thinkMs);
    }
  }

  // ---- nemesis

  const down = new Set();
  const restarts = [];

  function note(what) {
    nemesisLog.push(`${(now() / 1000).toFixed(2)}s ${what}`);
  }

  function shuffled(list) {
    const a = list.slice();
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(nemRand() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }

  function currentLeaderId() {
    const ls = leaders();
    return ls.length ? ls[Math.floor(nemRand() * ls.length)].id : ids[Math.floor(nemRand() * ids.length)];
  }

  const actions = [
    [3, 'partition halves', () => {
      const s = shuffled(ids);
      const k = 1 + Math.floor(nemRand() * Math.floor(ids.length / 2));
      net.heal();
      net.partition([s.slice(0, k), s.slice(k)]);
      return `${s.slice(0, k).join(',')} | ${s.slice(k).join(',')}`;
    }],
    [2, 'isolate leader', () => {
      const l = currentLeaderId();
      net.heal();
      net.partition([[l], ids.filter((i) => i !== l)]);
      return l;
    }],
    [1, 'bridge', () => {
      const s = shuffled(ids);
      const mid = s[2];
      net.heal();
      net.partition([s.slice(0, 2), s.slice(3)]);
      return `${s.slice(0, 2).join(',')} <-${mid}-> ${s.slice(3).join(',')}`;
    }],
    [2, 'one-way', () => {
      net.heal();
      const cuts = [];
      if (nemRand() < 0.5) {
        // the leader cannot reach some followers, but hears them
        const l = currentLeaderId();
        for (const f of shuffled(ids.filter((i) => i !== l)).slice(0, 2 + Math.floor(nemRand() * 2))) {
          net.block(l, f);
          cuts.push(`${l}->${f}`);
        }
      } else {
        for (let i = 0; i < 4; i++) {
          const [a, b] = shuffled(ids);
          net.block(a, b);
          cuts.push(`${a}->${b}`);
        }
      }
      return cuts.join(' ');
    }],
    [2, 'heal links', () => { net.heal(); return ''; }],
    [2, 'flaky net', () => {
      net.dropRate = Math.round(nemRand() * 20) / 100;
      net.dupRate = Math.round(nemRand() * 10) / 100;
      const hi = Math.round(5 + nemRand() * 40);
      net.delay = [0, hi];
      net.lagRate = nemRand() < 0.5 ? 0.02 : 0;
      net.lagMax = 600;
      return `drop ${net.dropRate} dup ${net.dupRate} delay 0-${hi}ms lag ${net.lagRate}`;
    }],
    [1, 'calm net', () => { net.calm(); return ''; }],
    [2, 'slow disk', () => {
      const id = ids[Math.floor(nemRand() * ids.length)];
      const extreme = nemRand() < 0.15;
      const range = extreme ? [800, 2600] : [2, Math.round(20 + nemRand() * 250)];
      store.setDisk(id, range);
      return `${id} ${range[0]}-${range[1]}ms`;
    }],
    [1, 'fast disks', () => { store.calm(); return ''; }],
    [4, 'crash-restart', () => {
      if (down.size >= o.maxDown) return null;
      const pool = ids.filter((i) => !down.has(i) && live.has(i));
      if (!pool.length) return null;
      const l = leaders().find((n) => pool.includes(n.id));
      const id = l && nemRand() < 0.4 ? l.id : pool[Math.floor(nemRand() * pool.length)];
      const downFor = Math.round(100 + nemRand() * 2500);
      down.add(id);
      restarts.push((async () => {
        await crash(id);
        await sleep(downFor);
        down.delete(id);
        if (!stopping) {
          restart(id);
          note(`restart ${id}`);
        }
      })());
      return `${id} for ${downFor}ms`;
    }],
    [0.5, 'crash-restart all', () => {
      if (down.size > 0) return null;
      const downFor = Math.round(100 + nemRand() * 1000);
      for (const id of ids) down.add(id);
      restarts.push((async () => {
        await Promise.all(ids.map((id) => crash(id)));
        await sleep(downFor);
        for (const id of ids) {
          down.delete(id);
          if (!stopping) restart(id);
        }
        if (!stopping) note('restart all');
      })());
      return `for ${downFor}ms`;
    }],
  ];
  const totalWeight = actions.reduce((s, a) => s + a[0], 0);

  async function nemesis() {
    await sleep(500);
    while (now() < endAt - 1000) {
      let r = nemRand() * totalWeight;
      let act = actions[0];
      for (const a of actions) {
        r -= a[0];
        if (r < 0) {
          act = a;
          break;
        }
      }
      const what = act[2]();
      if (what !== null) note(`${act[1]} ${what}`.trim());
      const [lo, hi] = o.nemesisEvery;
      const wait = lo + nemRand() * (hi - lo);
      await sleep(Math.min(wait, Math.max(0, endAt - 1000 - now())));
    }
  }

  const clientRuns = [];
  for (let c = 0; c < o.clients; c++) clientRuns.push(client(c));
  await nemesis();

  // ---- heal and recover

  note('heal everything');
  net.heal();
  net.calm();
  store.calm();
  await Promise.all(clientRuns);
  await Promise.all(restarts);
  for (const id of ids) restart(id);
  const healedAt = now();

  let recoveredAt = null;
  let caughtUpAt = null;
  const barrier = { id: 'barrier', op: 'barrier' };
  const recoverDeadline = healedAt + o.recoverWithin;
  let target = ids[0];
  while (now() < recoverDeadline) {
    const node = live.get(target);
    try {
      await node.command(barrier, { timeout: 1000 });
      recoveredAt = now();
      break;
    } catch (e) {
      target = e && e.code === 'ENOTLEADER' && ids.includes(e.leader) ? e.leader : pickTarget(target);
      await sleep(20);
    }
  }
  if (recoveredAt === null) {
    fail(`liveness: after healing, no command succeeded within ${o.recoverWithin} ms`);
  } else {
    const idx = (store.indexOf.get('barrier') || [])[0];
    while (now() < recoverDeadline) {
      if (idx !== undefined && ids.every((id) => store.sm(id).index >= idx)) {
        caughtUpAt = now();
        break;
      }
      await sleep(20);
    }
    if (caughtUpAt === null) {
      fail(`liveness: after healing, not every node applied the barrier (index ${idx}) within ` +
        `${o.recoverWithin} ms: ${ids.map((id) => `${id}@${store.sm(id).index}`).join(' ')}`);
    }
  }
  if (caughtUpAt === null) diagnosis = diagnose();
  // settle: let the last saves land before comparing
  await sleep(200);

  // ---- stop everything

  stopping = true;
  const stopped = await within(Promise.all(allNodes.map((n) => n.stop().catch(() => undefined))), 10000);
  if (!stopped) fail('liveness: stopping the nodes did not finish within 10 s');
  const states = allNodes.map((n) => n.state.name);
  if (states.some((s) => s !== 'stopped')) fail(`stop: nodes not stopped: ${states.join(',')}`);
  net.shutdown();
  store.shutdown();
  const runMs = now();

  // ---- checks

  for (const v of store.violations) {
    fail(`${v.invariant}: ${v.detail} (at ${(v.at / 1000).toFixed(2)}s)` +
      (v.trace && o.traces ? `\n  persistence calls of that node before it:\n    ${v.trace.join('\n    ')}` : ''));
  }

  for (const [term, set] of aeSenders) {
    if (set.size > 1) fail(`election safety: term ${term} had leaders ${[...set].join(', ')}`);
  }

  // The log, as applied (index -> command), replayed from scratch.
  const indexes = [...store.byIndex.keys()].sort((a, b) => a - b);
  const installsByIndex = new Map();
  for (const inst of store.installs) {
    const list = installsByIndex.get(inst.index) || [];
    list.push(inst);
    installsByIndex.set(inst.index, list);
  }
  const replay = emptySm();
  const effective = new Set();
  const checkInstalls = (upto) => {
    for (const [index, list] of installsByIndex) {
      if (index > upto) continue;
      for (const inst of list) {
        if (inst.state !== smText(replay)) {
          fail(`snapshot integrity: ${inst.node} installed a snapshot at index ${index} that differs ` +
            'from the log replayed to that index');
        }
      }
      installsByIndex.delete(index);
    }
  };
  for (const index of indexes) {
    checkInstalls(index - 1);
    const cmd = JSON.parse(store.byIndex.get(index).text);
    const r = applyTo(replay, cmd);
    if (r.effect && cmd && cmd.id) effective.add(cmd.id);
    replay.index = index;
  }
  checkInstalls(Infinity);
  const finalText = smText(replay);
  for (const id of ids) {
    const sm = store.sm(id);
    if (smText(sm) !== finalText) {
      fail(`final state: ${id} (applied to ${sm.index}) differs from the log replayed (to ${replay.index})`);
    }
  }

  // Acknowledged writes and cas are in the log.
  let acked = 0;
  for (const rec of history) {
    if (!(rec.ret < Infinity) || rec.op === 'read') continue;
    if (rec.op === 'cas' && rec.result !== true) continue;
    acked += 1;
    if (!effective.has(rec.id)) {
      fail(`lost write: ${rec.op} ${rec.key}=${rec.value} by client ${rec.client} was acknowledged at ` +
        `${(rec.ret / 1000).toFixed(2)}s but is not in the log`);
    }
  }

  // Linearizability. Ops given up after ENOTLEADER only were never appended: left out. Ops with
  // unknown outcome that never took effect anywhere are left out too; those that did stay in with
  // ret Infinity.
  const lin = [];
  let pendingKept = 0;
  let pendingDropped = 0;
  let definiteFailures = 0;
  for (const rec of history) {
    if (rec.failed) {
      definiteFailures += 1;
      if (store.effects.has(rec.id)) {
        fail(`contract: ${rec.op} ${rec.id} was given up after only ENOTLEADER answers but took effect`);
      }
      continue;
    }
    if (!(rec.ret < Infinity)) {
      if (!store.effects.has(rec.id)) {
        pendingDropped += 1;
        continue;
      }
      pendingKept += 1;
    }
    const op = { client: rec.client, op: rec.op, key: rec.key, call: rec.call, ret: rec.ret };
    if (rec.op !== 'read') op.value = rec.value;
    if (rec.op === 'cas') op.expected = rec.expected;
    if (rec.ret < Infinity) op.result = rec.result;
    lin.push(op);
  }
  const tc = performance.now();
  const verdict = check(lin, { timeoutMs: 60000 });
  const checkMs = performance.now() - tc;
  if (!verdict.ok) {
    fail(verdict.unknown ? `linearizability: ${verdict.explanation}` :
      `linearizability: key ${verdict.key} is not linearizable\n${verdict.explanation}`);
  }

  const completed = history.filter((r) => r.ret < Infinity).length;
  const errorCodes = {};
  for (const e of nodeErrors) errorCodes[e.code] = (errorCodes[e.code] || 0) + 1;
  const summary = {
    seed: o.seed,
    seconds: o.seconds,
    runMs: Math.round(runMs),
    ops: history.length,
    completed,
    unknown: history.length - completed - definiteFailures,
    unknownTookEffect: pendingKept,
    unknownDropped: pendingDropped,
    givenUp: definiteFailures,
    ackedWrites: acked,
    reads: history.filter((r) => r.op === 'read' && r.ret < Infinity).length,
    casOk: history.filter((r) => r.op === 'cas' && r.result === true).length,
    casFailed: history.filter((r) => r.op === 'cas' && r.result === false).length,
    keys: new Set(history.map((r) => r.key)).size,
    logLength: indexes.length ? indexes[indexes.length - 1] : 0,
    terms: aeSenders.size,
    nemesis: nemesisLog.length,
    instances: allNodes.length,
    snapshotInstalls: store.installs.length,
    recoveryMs: recoveredAt === null ? null : Math.round(recoveredAt - healedAt),
    catchUpMs: caughtUpAt === null ? null : Math.round(caughtUpAt - healedAt),
    checkMs: Math.round(checkMs),
    net: net.stats,
    store: store.stats,
    nodeErrors: errorCodes,
  };
  return {
    ok: failures.length === 0,
    failures,
    summary,
    nemesisLog,
    history,
    verdict,
    diagnosis,
  };
}

function formatSummary(s) {
  return [
    `seed ${s.seed}: ${s.seconds}s of faults, ${s.runMs} ms in all; ${s.ops} ops (${s.completed} completed, ` +
      `${s.unknown} unknown: ${s.unknownTookEffect} took effect, ${s.unknownDropped} never; ${s.givenUp} given up)`,
    `  ${s.reads} reads, ${s.ackedWrites} acknowledged writes/cas (${s.casOk} cas ok, ${s.casFailed} cas failed) ` +
      `over ${s.keys} keys; log ${s.logLength} entries, ${s.terms} terms with a leader, ` +
      `${s.instances} node instances, ${s.snapshotInstalls} snapshot installs`,
    `  recovery after healing ${s.recoveryMs} ms, all caught up ${s.catchUpMs} ms; linearizability check ${s.checkMs} ms`,
    `  net ${JSON.stringify(s.net)}`,
    `  store ${JSON.stringify(s.store)}; node errors ${JSON.stringify(s.nodeErrors)}`,
  ].join('\n');
}

module.exports = { runChaos, formatSummary, prng, DEFAULTS };
