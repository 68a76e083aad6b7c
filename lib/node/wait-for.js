'use strict';

// `node.waitFor(condition, [timeout])`: promises that settle, with `node.stats()`, when the node
// reaches a state.
// Event-driven: the conditions are checked after each batch the engine hands the wrapper (every
// change of role, leader, membership or applied index arrives with one), never on a timer. Only
// a given timeout holds a timer, so a waiter keeps the process alive no longer than that.

const { makeError, CODES } = require('../errors');

function noop() {}

function invalid(message) {
  return makeError(message, CODES.EINVALIDOPTIONS);
}

function isIndex(v) {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}

// The test a condition stands for, as `(node) => boolean`, or throws EINVALIDOPTIONS. `states`:
// the state names there are.
function compile(condition, states) {
  if (condition === null || typeof condition !== 'object' || Array.isArray(condition)) {
    throw invalid('waitFor: the condition must be an object: {state}, {leader}, {applied} or {voter}');
  }
  const keys = Object.keys(condition).filter((k) => condition[k] !== undefined);
  if (keys.length !== 1) {
    throw invalid(`waitFor: the condition must have exactly one of state, leader, applied, voter (got ${keys.join(', ') || 'none'})`);
  }
  const [key] = keys;
  const value = condition[key];
  switch (key) {
    case 'state':
      if (!states.includes(value)) throw invalid(`waitFor: state must be one of ${states.join(', ')}`);
      return (node) => node.state.name === value;
    case 'leader':
      if (value === true) return (node) => node.currentLeader() !== null;
      if (typeof value !== 'string' || value === '') throw invalid('waitFor: leader must be a node id or true');
      return (node) => node.currentLeader() === value;
    case 'applied':
      if (!isIndex(value)) throw invalid('waitFor: applied must be a log index (an integer >= 0)');
      return (node) => node._appliedIndex() >= value;
    case 'voter':
      if (typeof value !== 'string' || value === '') throw invalid('waitFor: voter must be a node id');
      // a learner is a member that does not vote yet (or ever)
      return (node) => node.members().some((m) => m.id === value && m.voter);
    default:
      throw invalid(`waitFor: unknown condition ${JSON.stringify(key)}`);
  }
}

class Waiters {
  // `node`: the Node whose state the conditions read; `states`: its state names.
  constructor(node, states) {
    this._node = node;
    this._states = states;
    this._pending = new Set(); // { test, resolve, reject, timer }
  }

  get size() {
    return this._pending.size;
  }

  // A promise for `condition`, rejected with ETIMEDOUT after `timeout` ms (none: no limit).
  // Its rejection is pre-handled, as with the node's other promises: a waiter nobody awaits
  // must not crash the process when the node stops.
  add(condition, timeout) {
    const promise = new Promise((resolve, reject) => {
      let test;
      try {
        test = compile(condition, this._states);
        if (timeout !== undefined && timeout !== null
          && (typeof timeout !== 'number' || !(timeout > 0) || !Number.isFinite(timeout))) {
          throw invalid('waitFor: timeout must be a positive finite number of milliseconds');
        }
      } catch (e) {
        reject(e);
        return;
      }
      const node = this._node;
      if (test(node)) {
        resolve(node.stats());
        return;
      }
      if (node._released) {
        reject(makeError('node is stopped', CODES.ESTOPPED));
        return;
      }
      const w = { test, resolve, reject, timer: null };
      if (timeout !== undefined && timeout !== null) {
        w.timer = setTimeout(() => {
          this._pending.delete(w);
          reject(makeError(`waitFor ${JSON.stringify(condition)} timed out after ${timeout} ms`, CODES.ETIMEDOUT));
        }, timeout);
      }
      this._pending.add(w);
    });
    promise.catch(noop);
    return promise;
  }

  // Settles the waiters whose condition now holds.
  check() {
    if (this._pending.size === 0) return;
    for (const w of [...this._pending]) {
      let ok;
      try {
        ok = w.test(this._node);
      } catch (_) {
        ok = false;
      }
      if (ok) this._settle(w, null);
    }
  }

  // The node stopped: what waited for that resolves, the rest reject with ESTOPPED.
  release() {
    this.check();
    const err = makeError('node stopped before the condition held', CODES.ESTOPPED);
    for (const w of [...this._pending]) this._settle(w, err);
  }

  _settle(w, err) {
    this._pending.delete(w);
    if (w.timer) clearTimeout(w.timer);
    if (err) w.reject(err);
    else w.resolve(this._node.stats());
  }
}

module.exports = { Waiters };
