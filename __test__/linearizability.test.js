'use strict';

// Tests of the linearizability checker used by the chaos test (__test__/helpers/linearizability.js).

const test = require('node:test');
const assert = require('node:assert');
const { check } = require('./helpers/linearizability');

// Shorthands: r(client, key, result, call, ret), w(client, key, value, call, ret),
// c(client, key, expected, value, result, call, ret). ret defaults to Infinity (unknown outcome).
const r = (client, key, result, call, ret = Infinity) => ({ client, op: 'read', key, result, call, ret });
const w = (client, key, value, call, ret = Infinity) => ({ client, op: 'write', key, value, call, ret });
const c = (client, key, expected, value, result, call, ret = Infinity) =>
  ({ client, op: 'cas', key, expected, value, result, call, ret });

function ok(h, opts) {
  const res = check(h, opts);
  assert.strictEqual(res.ok, true, res.explanation);
}
function bad(h, key, opts) {
  const res = check(h, opts);
  assert.strictEqual(res.ok, false, 'expected a violation');
  assert.ok(!res.unknown);
  if (key !== undefined) assert.deepStrictEqual(res.key, key);
  assert.strictEqual(typeof res.explanation, 'string');
  assert.ok(res.explanation.length > 0);
  return res;
}

test('empty history and unwritten registers', () => {
  ok([]);
  ok([r(1, 'x', null, 0, 1)]);
  bad([r(1, 'x', 5, 0, 1)], 'x');
  ok([r(1, 'x', 5, 0, 1)], { initial: 5 });
});

test('linearizable: sequential', () => {
  ok([
    w(1, 'x', 1, 0, 1),
    r(1, 'x', 1, 2, 3),
    c(1, 'x', 1, 2, true, 4, 5),
    c(1, 'x', 1, 3, false, 6, 7),
    r(1, 'x', 2, 8, 9),
    w(2, 'x', 'a string', 10, 11),
    r(2, 'x', 'a string', 12, 13),
    w(2, 'x', { an: ['object'] }, 14, 15),
    r(1, 'x', { an: ['object'] }, 16, 17),
  ]);
});

test('linearizable: concurrent overlapping operations', () => {
  // Two concurrent writes; reads during them may see either order, as long as one order exists.
  ok([
    w(1, 'x', 1, 0, 10),
    w(2, 'x', 2, 1, 11),
    r(3, 'x', 2, 2, 3),
    r(3, 'x', 1, 4, 5),   // order: w2, r, w1, r
    r(4, 'x', 1, 12, 13),
  ]);
  // A read overlapping a write may return the old or the new value.
  ok([w(1, 'x', 1, 0, 1), w(1, 'x', 2, 2, 6), r(2, 'x', 1, 3, 4), r(3, 'x', 2, 3, 5)]);
  // Same time stamps count as concurrent.
  ok([w(1, 'x', 1, 0, 5), r(2, 'x', 1, 5, 6), r(3, 'x', null, 0, 5)]);
});

test('linearizable: timed-out writes that did or did not take effect', () => {
  // took effect, observed later
  ok([w(1, 'x', 1, 0, 1), w(2, 'x', 2, 2), r(3, 'x', 2, 100, 101)]);
  // never took effect
  ok([w(1, 'x', 1, 0, 1), w(2, 'x', 2, 2), r(3, 'x', 1, 100, 101), r(3, 'x', 1, 102, 103)]);
  // took effect late: first read does not see it, a later one does
  ok([w(1, 'x', 1, 0, 1), w(2, 'x', 2, 2), r(3, 'x', 1, 100, 101), r(3, 'x', 2, 102, 103)]);
  // but it cannot take effect before it was called
  bad([w(1, 'x', 1, 0, 1), r(3, 'x', 2, 2, 3), w(2, 'x', 2, 4)], 'x');
  // and it takes effect at most once
  bad([w(1, 'x', 1, 0, 1), w(2, 'x', 2, 2), r(3, 'x', 2, 10, 11), w(1, 'x', 3, 12, 13),
    r(3, 'x', 2, 14, 15)], 'x');
  // timed-out reads and cas constrain nothing by their results
  ok([w(1, 'x', 1, 0, 1), r(2, 'x', 99, 2), c(3, 'x', 5, 6, true, 2), r(1, 'x', 1, 10, 11)]);
  // a timed-out cas that took effect
  ok([w(1, 'x', 1, 0, 1), c(2, 'x', 1, 7, undefined, 2), r(1, 'x', 7, 10, 11)]);
  // a timed-out cas can only take effect if its expected value was there
  bad([w(1, 'x', 1, 0, 1), c(2, 'x', 5, 7, undefined, 2), r(1, 'x', 7, 10, 11)], 'x');
});

test('linearizable: cas success and failure', () => {
  ok([
    w(1, 'x', 0, 0, 1),
    c(1, 'x', 0, 1, true, 2, 10),
    c(2, 'x', 0, 2, false, 3, 9),   // lost the race to client 1
    c(3, 'x', 1, 3, true, 11, 12),
    c(3, 'x', 1, 4, false, 13, 14),
    r(4, 'x', 3, 15, 16),
  ]);
  // concurrent cas pair, both succeed in one order only
  ok([w(1, 'x', 0, 0, 1), c(2, 'x', 1, 2, true, 2, 10), c(3, 'x', 0, 1, true, 3, 9), r(1, 'x', 2, 11, 12)]);
  // cas on an unwritten register
  ok([c(1, 'x', null, 1, true, 0, 1), r(1, 'x', 1, 2, 3)]);
  bad([c(1, 'x', null, 1, false, 0, 1)], 'x');
});

test('NOT linearizable: stale read after a completed write', () => {
  const res = bad([w(1, 'x', 1, 0, 1), w(1, 'x', 2, 2, 3), r(2, 'x', 1, 4, 5)], 'x');
  assert.match(res.explanation, /read\("x"\) -> 1/);
});

test('NOT linearizable: two readers observe writes in opposite orders', () => {
  bad([
    w(1, 'x', 1, 0, 100),
    w(2, 'x', 2, 0, 100),
    r(3, 'x', 1, 10, 11), r(3, 'x', 2, 20, 21),
    r(4, 'x', 2, 10, 11), r(4, 'x', 1, 20, 21),
  ], 'x');
});

test('NOT linearizable: cas succeeds against a value never written', () => {
  bad([w(1, 'x', 1, 0, 1), c(2, 'x', 7, 8, true, 2, 3)], 'x');
  // nor can a cas fail against the value that is certainly there
  bad([w(1, 'x', 1, 0, 1), c(2, 'x', 1, 8, false, 2, 3)], 'x');
});

test('NOT linearizable: lost acknowledged write', () => {
  bad([
    w(1, 'x', 1, 0, 1),
    w(2, 'x', 2, 2, 3),
    r(1, 'x', 1, 10, 11),   // the acknowledged write(2) is gone
  ], 'x');
});

test('keys are checked independently and the failing key is reported', () => {
  const res = bad([
    w(1, 'a', 1, 0, 1), r(2, 'a', 1, 2, 3),
    w(1, 'b', 1, 0, 1), w(1, 'b', 2, 2, 3), r(2, 'b', 1, 4, 5),
    w(1, 'c', 1, 0, 1),
  ], 'b');
  assert.match(res.explanation, /key "b"/);
  // with per-key checking, a value read on one key cannot come from another
  bad([w(1, 'a', 1, 0, 1), r(2, 'b', 1, 2, 3)], 'b');
  ok([w(1, 1, 'x', 0, 1), r(1, 1, 'x', 2, 3), w(1, 2, 'y', 0, 1), r(1, 2, 'y', 2, 3)]);
});

test('malformed histories are refused', () => {
  assert.throws(() => check({}), TypeError);
  assert.throws(() => check([{ op: 'frob', key: 'x', call: 0, ret: 1 }]), TypeError);
  assert.throws(() => check([{ op: 'read', key: 'x', result: 1, ret: 1 }]), TypeError);
  assert.throws(() => check([{ op: 'read', key: 'x', result: 1, call: 2, ret: 1 }]), TypeError);
  assert.throws(() => check([{ op: 'cas', key: 'x', expected: 1, value: 2, call: 0, ret: 1 }]), TypeError);
});

// ---------------------------------------------------------------------------------------------
// Random histories, cross-checked against a brute-force search on small ones.

const { prng } = require('./helpers/prng');

// Simulates `clients` clients issuing `total` operations on `keys` keys against a real register,
// each taking effect at a random point inside its interval: the history is linearizable.
// pendingRate: share of ops whose outcome is reported unknown (half of them did take effect).
function linearizableHistory(rand, { total, keys, clients, pendingRate = 0, values = 1e9 }) {
  const state = new Map();
  const events = []; // {t, fn}
  const h = [];
  const clientFree = new Array(clients).fill(0);
  for (let i = 0; i < total; i++) {
    const cl = i % clients;
    const call = clientFree[cl] + Math.floor(rand() * 3);
    const dur = 1 + Math.floor(rand() * 20);
    const ret = call + dur;
    clientFree[cl] = ret + 1;
    const key = 'k' + Math.floor(rand() * keys);
    const at = call + rand() * dur;
    const x = rand();
    const pending = rand() < pendingRate;
    const applies = !pending || rand() < 0.5;
    let o;
    if (x < 0.4) {
      o = { client: cl, op: 'read', key, call, ret };
      events.push({ t: at, fn: () => { o.result = state.has(key) ? state.get(key) : null; } });
    } else if (x < 0.75) {
      const value = Math.floor(rand() * values);
      o = { client: cl, op: 'write', key, value, call, ret };
      if (applies) events.push({ t: at, fn: () => state.set(key, value) });
    } else {
      // cas expecting a recently used value or a fresh one
      const cur = state.has(key) ? state.get(key) : null;
      const expected = rand() < 0.6 ? cur : Math.floor(rand() * values);
      const value = Math.floor(rand() * values);
      o = { client: cl, op: 'cas', key, expected, value, call, ret };
      events.push({
        t: at,
        fn: () => {
          const now = state.has(key) ? state.get(key) : null;
          o.result = now === expected;
          if (applies && now === expected) state.set(key, value);
        },
      });
    }
    if (pending) o.ret = Infinity;
    h.push(o);
  }
  // Events happen in time order; ops are generated client by client so sort them.
  events.sort((a, b) => a.t - b.t);
  for (const e of events) e.fn();
  return h;
}

// Brute force: some subset of pending ops plus all completed ops, in some order consistent with
// real time, must be legal for the register. Single key only.
function bruteForce(h, initial = null) {
  const done = h.filter((o) => o.ret < Infinity);
  const pend = h.filter((o) => !(o.ret < Infinity));
  const J = (v) => JSON.stringify(v === undefined ? null : v);
  for (let mask = 0; mask < (1 << pend.length); mask++) {
    const ops = done.concat(pend.filter((_, i) => mask & (1 << i)));
    const used = new Array(ops.length).fill(false);
    const rec = (state, count) => {
      if (count === ops.length) return true;
      for (let i = 0; i < ops.length; i++) {
        if (used[i]) continue;
        // i may go next only if no unused op returned before i was called
        let okNext = true;
        for (let j = 0; j < ops.length; j++) {
          if (!used[j] && j !== i && ops[j].ret < ops[i].call) { okNext = false; break; }
        }
        if (!okNext) continue;
        const o = ops[i];
        const pending = !(o.ret < Infinity);
        let ns = null;
        if (o.op === 'read') ns = pending || J(o.result) === state ? state : null;
        else if (o.op === 'write') ns = J(o.value);
        else if (pending) ns = state === J(o.expected) ? J(o.value) : state;
        else if (o.result) ns = state === J(o.expected) ? J(o.value) : null;
        else ns = state !== J(o.expected) ? state : null;
        if (ns === null) continue;
        used[i] = true;
        if (rec(ns, count + 1)) return true;
        used[i] = false;
      }
      return false;
    };
    if (rec(J(initial), 0)) return true;
  }
  return false;
}

test('random small histories agree with a brute-force search', () => {
  const rand = prng(7);
  let yes = 0;
  let no = 0;
  for (let i = 0; i < 600; i++) {
    const n = 2 + Math.floor(rand() * 6);
    const h = [];
    for (let j = 0; j < n; j++) {
      const call = Math.floor(rand() * 10);
      const ret = rand() < 0.15 ? Infinity : call + 1 + Math.floor(rand() * 5);
      const x = rand();
      const v = () => (rand() < 0.2 ? null : Math.floor(rand() * 3));
      if (x < 0.4) h.push(r(j % 3, 'x', v(), call, ret));
      else if (x < 0.75) h.push(w(j % 3, 'x', Math.floor(rand() * 3), call, ret));
      else h.push(c(j % 3, 'x', v(), Math.floor(rand() * 3), rand() < 0.5, call, ret));
    }
    const want = bruteForce(h);
    const got = check(h);
    assert.strictEqual(got.ok, want, `checker says ${got.ok}, brute force ${want}: ${JSON.stringify(h)}`);
    if (want) yes++; else no++;
  }
  assert.ok(yes > 50 && no > 50, `both verdicts exercised (${yes} yes, ${no} no)`);
});

test('random small histories with many unknown outcomes agree with a brute-force search', () => {
  // Writes use more values than reads and cas look at, so that unobserved ("junk") pending writes
  // and cas, which the checker handles apart, are common.
  const rand = prng(11);
  let yes = 0;
  let no = 0;
  for (let i = 0; i < 1500; i++) {
    const n = 3 + Math.floor(rand() * 6);
    const h = [];
    for (let j = 0; j < n; j++) {
      const call = Math.floor(rand() * 12);
      const ret = rand() < 0.35 ? Infinity : call + 1 + Math.floor(rand() * 5);
      const x = rand();
      const small = () => (rand() < 0.2 ? null : Math.floor(rand() * 2));
      const wide = () => Math.floor(rand() * 6);
      if (x < 0.3) h.push(r(j % 4, 'x', small(), call, ret));
      else if (x < 0.6) h.push(w(j % 4, 'x', wide(), call, ret));
      else h.push(c(j % 4, 'x', small(), wide(), rand() < 0.4, call, ret));
    }
    const want = bruteForce(h);
    const got = check(h);
    assert.strictEqual(got.ok, want, `checker says ${got.ok}, brute force ${want}: ${JSON.stringify(h)}`);
    assert.strictEqual(check(h, { reduce: false }).ok, want);
    if (want) yes++; else no++;
  }
  assert.ok(yes > 100 && no > 100, `both verdicts exercised (${yes} yes, ${no} no)`);
});

test('medium random histories: same verdict with and without the junk reduction', () => {
  const rand = prng(5);
  let yes = 0;
  let no = 0;
  for (let i = 0; i < 300; i++) {
    const h = linearizableHistory(rand, { total: 60, keys: 1, clients: 4, pendingRate: 0.15, values: 4 });
    // corrupt a third of them
    if (i % 3 === 0) {
      const o = h[Math.floor(rand() * h.length)];
      if (o.op === 'read') o.result = Math.floor(rand() * 4);
      else if (o.op === 'cas') o.result = !o.result;
      else o.value = 7;
    }
    const a = check(h);
    const b = check(h, { reduce: false, timeoutMs: 5000 });
    if (b.unknown) continue;
    assert.strictEqual(a.ok, b.ok, JSON.stringify(h));
    if (a.ok) yes++; else no++;
  }
  assert.ok(yes > 50 && no > 20, `both verdicts exercised (${yes} yes, ${no} no)`);
});

test('simulated linearizable histories pass, with a corrupted read they fail', () => {
  for (let seed = 1; seed <= 40; seed++) {
    const rand = prng(seed);
    const h = linearizableHistory(rand, { total: 300, keys: 2, clients: 5, pendingRate: 0.1,
      values: seed % 2 ? 1e9 : 5 });
    const res = check(h);
    assert.strictEqual(res.ok, true, `seed ${seed}: ${res.explanation}`);
    // Corrupt one completed read that was preceded (strictly) by a completed write on its key.
    const reads = h.filter((o) => o.op === 'read' && o.ret < Infinity && h.some((x) =>
      x.op === 'write' && x.key === o.key && x.ret < o.call));
    if (reads.length === 0) continue;
    const victim = reads[Math.floor(rand() * reads.length)];
    victim.result = 'never written';
    const res2 = check(h);
    assert.strictEqual(res2.ok, false, `seed ${seed}: corruption not detected`);
    assert.deepStrictEqual(res2.key, victim.key);
  }
});

test('performance: 2,000 ops over 5 keys with concurrency 10', () => {
  const rand = prng(42);
  const h = linearizableHistory(rand, { total: 2000, keys: 5, clients: 10, pendingRate: 0.02 });
  const t0 = process.hrtime.bigint();
  const res = check(h);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  console.log(`checked ${h.length} ops over 5 keys (concurrency 10, 2% unknown outcomes) in ${ms.toFixed(1)} ms`);
  assert.strictEqual(res.ok, true, res.explanation);

  // Same size, one key, and a violation near the end: the search has to give up everywhere.
  const rand2 = prng(43);
  const h2 = linearizableHistory(rand2, { total: 1000, keys: 1, clients: 10, pendingRate: 0.01 });
  const last = Math.max(...h2.map((o) => (o.ret < Infinity ? o.ret : o.call)));
  h2.push(w(99, 'k0', 'final', last + 10, last + 11), r(99, 'k0', 'stale', last + 12, last + 13));
  const t1 = process.hrtime.bigint();
  const res2 = check(h2);
  const ms2 = Number(process.hrtime.bigint() - t1) / 1e6;
  console.log(`rejected ${h2.length} ops on one key in ${ms2.toFixed(1)} ms`);
  assert.strictEqual(res2.ok, false);
  assert.ok(ms + ms2 < 30000);
});

test('a search budget turns into an unknown verdict, not a pass', () => {
  // Many concurrent unknown-outcome writes and an impossible read make the search exponential.
  const h = [];
  for (let i = 0; i < 40; i++) h.push(w(i, 'x', i, 0));
  for (let i = 0; i < 40; i++) h.push(c(100 + i, 'x', i, 1000 + i, false, 1, 2));
  h.push(r(200, 'x', 'nope', 3, 4));
  const res = check(h, { timeoutMs: 50 });
  assert.strictEqual(res.ok, false);
  if (res.unknown) assert.match(res.explanation, /budget/);
});
