'use strict';

// Linearizability checker for a key-value register (read / write / cas), in the manner of
// Wing & Gong and Lowe, with the memoisation of (linearized set, model state) that Porcupine uses.
//
// A history is an array of operations:
//
//   { client, op: 'read',  key, result,           call, ret }   // result: the value read
//   { client, op: 'write', key, value,            call, ret }
//   { client, op: 'cas',   key, expected, value,  result, call, ret }   // result: true / false
//
// `call` and `ret` are numbers (any clock, only their order matters). `ret: Infinity` (or a missing
// `ret`) means the outcome is unknown: the operation may have taken effect at any point after
// `call`, or never; its `result` is ignored.
//
// Keys are checked independently (a history is linearizable iff each key's sub-history is:
// P-compositionality). A register that was never written holds `options.initial` (default null).
// Values are compared by their JSON text, so numbers, strings, arrays and plain objects all work.
//
// check(history, [options]) returns
//   { ok: true, keys, ops }                              every key is linearizable
//   { ok: false, key, explanation, op, linearized }      `key` is not: a short counter-example
//   { ok: false, unknown: true, key, explanation }       the search budget (options.timeoutMs) ran out
//
// Options: initial (value of an unwritten register), timeoutMs (per call, default Infinity),
// keys (only check these keys), reduce (false turns off the junk reduction described at
// checkKey; for testing the checker).

const OPS = new Set(['read', 'write', 'cas']);

function text(v) {
  if (v === undefined) return 'null';
  return JSON.stringify(v);
}

function show(v) {
  const s = text(v);
  return s.length > 40 ? s.slice(0, 37) + '...' : s;
}

function describe(o) {
  const pending = !(o.ret < Infinity);
  let s;
  if (o.op === 'read') s = `read(${show(o.key)}) -> ${pending ? '?' : show(o.result)}`;
  else if (o.op === 'write') s = `write(${show(o.key)}, ${show(o.value)})`;
  else {
    s = `cas(${show(o.key)}, ${show(o.expected)}, ${show(o.value)}) -> ` +
      (pending ? '?' : String(o.result));
  }
  return `client ${o.client} ${s} [${o.call}, ${pending ? 'unknown' : o.ret}]`;
}

function validate(o, i) {
  if (!o || typeof o !== 'object') throw new TypeError(`history[${i}] is not an object`);
  if (!OPS.has(o.op)) throw new TypeError(`history[${i}]: unknown op ${JSON.stringify(o.op)}`);
  if (typeof o.call !== 'number' || Number.isNaN(o.call)) {
    throw new TypeError(`history[${i}]: call must be a number`);
  }
  if (o.ret !== undefined && (typeof o.ret !== 'number' || Number.isNaN(o.ret))) {
    throw new TypeError(`history[${i}]: ret must be a number or Infinity`);
  }
  if (o.ret < o.call) throw new TypeError(`history[${i}]: ret before call`);
}

// Splits a history into per-key sub-histories (Map key text -> {key, ops}).
function partition(history) {
  const byKey = new Map();
  history.forEach((o, i) => {
    validate(o, i);
    const k = text(o.key);
    let p = byKey.get(k);
    if (!p) {
      p = { key: o.key, ops: [] };
      byKey.set(k, p);
    }
    p.ops.push(o);
  });
  return byKey;
}

// Model step on the register. States and values are JSON texts. Returns the new state or null when
// the operation cannot happen in `state`.
//   kind 0 read, 1 write, 2 cas; pending ops have `pending` set and their results are unknown.
function step(state, e) {
  switch (e.kind) {
    case 0: // read (completed only; pending reads are dropped up front)
      return state === e.result ? state : null;
    case 1:
      return e.value;
    default: // cas
      if (e.pending) return state === e.expected ? e.value : state;
      if (e.result) return state === e.expected ? e.value : null;
      return state !== e.expected ? state : null;
  }
}

class Timeout extends Error {}

// The register after a pending write (or cas) whose value nobody ever observes: see checkKey.
const JUNK = '\u0001junk';

// Checks one key. `ops` are the original operation objects of that key.
//
// Operations with unknown outcomes make the search exponential in their number, so two reductions
// (both exact) keep it tractable:
// - a pending read constrains nothing and is dropped;
// - a pending write, or a pending cas, whose new value no completed read returns and no cas
//   expects ("junk") can only matter by hiding the register's value from a completed cas that
//   failed. In any linearization it can be moved to just before the first such cas that needs it
//   (or dropped), and all available junk writes are interchangeable. So junk operations are kept
//   out of the search and spent only when a failed cas finds the value it expected, a junk cas
//   (which must find its own expected value, the current one) before a junk write.
function checkKey(ops, initial, deadline, reduce) {
  const observed = new Set([text(initial)]);
  for (const o of ops) {
    const pending = !(o.ret < Infinity);
    if (o.op === 'read' && !pending) observed.add(text(o.result));
    if (o.op === 'cas') observed.add(text(o.expected));
  }
  const es = [];
  for (const o of ops) {
    const pending = !(o.ret < Infinity);
    if (pending && o.op === 'read') continue;
    if (o.op === 'cas' && !pending && typeof o.result !== 'boolean') {
      throw new TypeError(`cas result must be a boolean: ${describe(o)}`);
    }
    const value = o.op === 'read' ? null : text(o.value);
    const junk = reduce && pending && o.op !== 'read' && !observed.has(value);
    es.push({
      op: o,
      pending,
      junk,
      group: pending ? (junk ? 2 : 1) : 0,
      kind: o.op === 'read' ? 0 : o.op === 'write' ? 1 : 2,
      value: junk ? JUNK : value,
      expected: o.op === 'cas' ? text(o.expected) : null,
      result: o.op === 'read' ? text(o.result) : o.op === 'cas' ? o.result === true : null,
      call: o.call,
      ret: pending ? Infinity : o.ret,
    });
  }
  // Ids: completed operations, then pending ones, then junk ones; each group in call order.
  es.sort((a, b) => (a.group - b.group) || (a.call - b.call));
  const total = es.length;
  let nc = 0;
  while (nc < total && es[nc].group === 0) nc++;
  let n = nc; // operations in the search list
  while (n < total && es[n].group === 1) n++;
  if (n === 0) return { ok: true };
  // Junk operations: writes and cas apart, each in call order.
  const junkW = [];
  const junkC = [];
  for (let i = n; i < total; i++) (es[i].kind === 1 ? junkW : junkC).push(i);
  const junkUsed = new Uint8Array(total);

  // Event list: 2n events sorted by time; calls before returns at equal times (touching
  // operations count as concurrent). Pending returns go last, in call order.
  const ev = [];
  for (let i = 0; i < n; i++) {
    ev.push({ t: es[i].call, ret: 0, id: i });
    ev.push({ t: es[i].ret, ret: 1, id: i });
  }
  ev.sort((a, b) => {
    if (a.t !== b.t) return a.t < b.t ? -1 : 1;
    if (a.ret !== b.ret) return a.ret - b.ret;
    return a.id - b.id;
  });

  // Doubly-linked list over event positions 1..2n, with 0 as the head sentinel.
  const m = 2 * n;
  const next = new Int32Array(m + 2);
  const prev = new Int32Array(m + 2);
  const evId = new Int32Array(m + 1);
  const isCall = new Uint8Array(m + 1);
  const retPos = new Int32Array(n); // position of each op's return event
  for (let p = 1; p <= m; p++) {
    const x = ev[p - 1];
    evId[p] = x.id;
    isCall[p] = x.ret ? 0 : 1;
    if (x.ret) retPos[x.id] = p;
    prev[p] = p - 1;
    next[p] = p === m ? -1 : p + 1;
  }
  next[0] = 1;

  function lift(p) {
    // remove call event p and its return event
    next[prev[p]] = next[p];
    if (next[p] !== -1) prev[next[p]] = prev[p];
    const r = retPos[evId[p]];
    next[prev[r]] = next[r];
    if (next[r] !== -1) prev[next[r]] = prev[r];
  }
  function unlift(p) {
    const r = retPos[evId[p]];
    if (next[r] !== -1) prev[next[r]] = r;
    next[prev[r]] = r;
    if (next[p] !== -1) prev[next[p]] = p;
    next[prev[p]] = p;
  }

  // Linearized set. Ids are in call order, completed operations first, so the completed part is
  // a prefix of all-ones words, a short window of mixed words, then zeros: the memo key holds only
  // the window (and the small pending part), which keeps the cache compact for long histories.
  const cw = (nc + 31) >>> 5;
  const bits = new Uint32Array(cw + ((total - nc + 31) >>> 5));
  let lo = 0;   // first completed word that is not all ones
  let hi = -1;  // last completed word that is not zero
  // Pending operations' bits start on a fresh word after the completed ones.
  const pendingBase = cw * 32 - nc;
  function setBit(id) {
    const b = id < nc ? id : id + pendingBase;
    const w = b >>> 5;
    bits[w] |= (1 << (b & 31));
    if (id < nc) {
      if (w > hi) hi = w;
      while (lo < cw && bits[lo] === 0xffffffff) lo++;
    }
  }
  function clearBit(id) {
    const b = id < nc ? id : id + pendingBase;
    const w = b >>> 5;
    bits[w] &= ~(1 << (b & 31));
    if (id < nc) {
      if (w < lo) lo = w;
      while (hi >= 0 && bits[hi] === 0) hi--;
    }
  }
  const cache = new Set();
  function cacheAdd(state) {
    let k = state + '\u0000' + lo;
    for (let w = lo; w <= hi; w++) k += ',' + bits[w];
    if (total > nc) {
      k += '|';
      for (let w = cw; w < bits.length; w++) k += bits[w] + ',';
    }
    if (cache.has(k)) return false;
    cache.add(k);
    return true;
  }

  // A junk operation that may take effect just before the call event at position p in `state`:
  // called no later than the earliest return still in the list. -1 if none.
  function findJunk(p, state) {
    if (junkW.length === 0 && junkC.length === 0) return -1;
    let q = p;
    while (q !== -1 && isCall[q]) q = next[q];
    const limit = q === -1 ? Infinity : es[evId[q]].ret;
    for (const j of junkC) {
      if (es[j].call > limit) break;
      if (!junkUsed[j] && es[j].expected === state) return j;
    }
    for (const j of junkW) {
      if (es[j].call > limit) break;
      if (!junkUsed[j]) return j;
    }
    return -1;
  }

  const stack = []; // frames of three: position, state before, junk id used first (or -1)
  let state = text(initial);
  let p = next[0];
  let steps = 0;
  // Deepest point reached, for the counter-example.
  let best = { depth: -1, blocked: -1, state: null, order: [] };

  while (next[0] !== -1) {
    if ((++steps & 0xfff) === 0 && Date.now() > deadline) throw new Timeout();
    if (isCall[p]) {
      const id = evId[p];
      const e = es[id];
      let ns = step(state, e);
      let j = -1;
      if (ns === null && e.kind === 2 && !e.pending && !e.result) {
        // a failed cas that found its expected value: a junk operation may hide it
        j = findJunk(p, state);
        if (j !== -1) ns = step(JUNK, e);
      }
      let moved = false;
      if (ns !== null) {
        setBit(id);
        if (j !== -1) setBit(j);
        if (cacheAdd(ns)) {
          stack.push(p, state, j);
          if (j !== -1) junkUsed[j] = 1;
          state = ns;
          lift(p);
          p = next[0];
          moved = true;
        } else {
          clearBit(id);
          if (j !== -1) clearBit(j);
        }
      }
      if (!moved) p = next[p];
    } else {
      // An operation's return is reached without it being linearized: backtrack.
      const depth = stack.length / 3;
      if (depth > best.depth) {
        const order = [];
        for (let i = 0; i < stack.length; i += 3) {
          if (stack[i + 2] !== -1) order.push(stack[i + 2]);
          order.push(evId[stack[i]]);
        }
        best = { depth, blocked: evId[p], state, order };
      }
      if (stack.length === 0) break;
      const j = stack.pop();
      const st = stack.pop();
      const pp = stack.pop();
      state = st;
      clearBit(evId[pp]);
      if (j !== -1) {
        clearBit(j);
        junkUsed[j] = 0;
      }
      unlift(pp);
      p = next[pp];
    }
  }
  if (next[0] === -1) return { ok: true };

  // Not linearizable: describe the deepest partial linearization and the operation that could
  // not follow it.
  const blocked = es[best.blocked].op;
  const order = best.order.map((i) => es[i].op);
  const tail = order.slice(-5);
  const lines = [];
  const st = best.state === JUNK ? '(a value nobody reads)' : best.state;
  lines.push(`no linearization of ${ops.length} operations on key ${show(ops[0].key)}.`);
  lines.push(`deepest partial linearization: ${order.length} operations, register = ${
    st.length > 40 ? st.slice(0, 37) + '...' : st}; it ends with:`);
  for (const o of tail) lines.push('  ' + describe(o));
  lines.push('then this operation must take effect before it returns, but cannot:');
  lines.push('  ' + describe(blocked));
  const inOrder = new Set(best.order);
  const concurrent = es.filter((e, i) => !inOrder.has(i) && i !== best.blocked &&
    e.call <= blocked.ret).slice(0, 5).map((e) => e.op);
  if (concurrent.length) {
    lines.push('other operations not yet linearized that had started by then:');
    for (const o of concurrent) lines.push('  ' + describe(o));
  }
  return { ok: false, op: blocked, linearized: tail, explanation: lines.join('\n') };
}

function check(history, options = {}) {
  if (!Array.isArray(history)) throw new TypeError('history must be an array');
  const initial = options.initial === undefined ? null : options.initial;
  const timeoutMs = options.timeoutMs === undefined ? Infinity : options.timeoutMs;
  const deadline = Date.now() + timeoutMs;
  const byKey = partition(history);
  const only = options.keys ? new Set(options.keys.map(text)) : null;
  let keys = 0;
  for (const [k, part] of byKey) {
    if (only && !only.has(k)) continue;
    keys++;
    let r;
    try {
      r = checkKey(part.ops, initial, deadline, options.reduce !== false);
    } catch (e) {
      if (e instanceof Timeout) {
        return {
          ok: false, unknown: true, key: part.key,
          explanation: `search budget of ${timeoutMs} ms ran out on key ${show(part.key)} ` +
            `(${part.ops.length} operations): linearizability unknown`,
        };
      }
      throw e;
    }
    if (!r.ok) return Object.assign({ ok: false, key: part.key }, r);
  }
  return { ok: true, keys, ops: history.length };
}

module.exports = { check, describe, partition };
