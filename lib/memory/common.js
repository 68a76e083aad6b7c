'use strict';

// What the in-memory plugins share (lib/memory): the JSON copy that stands for a wire or a disk,
// errors as they arrive across it, and the one-shot fault list both plugins consume.

/** What crosses the in-memory wire or disk: a JSON copy. */
function clone(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

/**
 * An error as it arrives at the other end: a fresh Error with the message and the fields a skiff
 * error carries (`code`, `leader`); no error (null, undefined, false) stays none.
 */
function wireError(err) {
  if (err === null || err === undefined || err === false) return null;
  if (err instanceof Error || (typeof err === 'object' && typeof err.message === 'string')) {
    const e = new Error(err.message);
    if (err.code !== undefined) e.code = err.code;
    if (err.leader !== undefined) e.leader = err.leader;
    return e;
  }
  return new Error(String(err));
}

function coded(message, code) {
  const e = new Error(message);
  e.code = code;
  return e;
}

function injected(what) {
  return coded(`injected failure: ${what}`, 'EINJECTED');
}

function cyclic() {
  const o = { note: 'cannot be JSON' };
  o.self = o;
  return o;
}

/** One-shot faults, consumed in the order they were added: { key, nodeId, mode, times }. */
class Faults {
  constructor() {
    this.list = [];
    this.hits = [];
  }

  add(key, mode, times, nodeId) {
    this.list.push({ key, mode, times: times === undefined ? 1 : times, nodeId });
  }

  /** The mode of the first fault for `key` (and `nodeId`), used up by one; null if none. */
  take(key, nodeId) {
    if (this.list.length === 0) return null;
    for (let i = 0; i < this.list.length; i++) {
      const f = this.list[i];
      if (f.key !== key) continue;
      if (f.nodeId !== undefined && f.nodeId !== nodeId) continue;
      f.times -= 1;
      if (f.times <= 0) this.list.splice(i, 1);
      this.hits.push({ key, nodeId, mode: f.mode });
      return f.mode;
    }
    return null;
  }

  clear() {
    this.list = [];
  }
}

module.exports = { clone, wireError, coded, injected, cyclic, Faults };
