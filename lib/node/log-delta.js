'use strict';

// The deltas handed to `persistence.saveLog`: what the engine's `saveMeta` ops changed, each entry
// sent once, and never less than what the plugin may be missing.

// Builds `saveLog` deltas from the engine's `saveMeta` ops and knows which part of the log the
// plugin may not have durably. A delta that failed, or was given up on while it may still land
// late, is not known to be on disk: the next delta starts no later than it did (so it rewrites
// what the failed one carried), and a late one is followed by the whole unconfirmed part again.
class LogDelta {
  constructor() {
    // The unconfirmed part of the newest log: `{ from, entries }`, the entries from index `from`
    // to the newest log's end, in index order. Invariant: the plugin durably holds the newest
    // log's entries below `from` (above lastIncludedIndex); null when it holds the whole log.
    this._tail = null;
    // The newest state's hard state: { currentTerm, votedFor, peers, meta }.
    this._hard = null;
    // Index of the newest log's last entry (lastIncludedIndex for an empty log).
    this._last = 0;
    // saveLog calls started and not yet called back (a call given up on still counts until it
    // calls back): while one may land late, no delta is taken as the last word.
    this._outstanding = 0;
    // Bumped by every op: only a delta of the newest version can confirm the tail.
    this.version = 0;
  }

  // The delta for engine `saveMeta` op `op` (its `state` in saveMeta's format, `from` null for
  // the whole log), merged with what is unconfirmed.
  next(op) {
    const state = op.state || {};
    const log = state.log || {};
    const meta = log.meta || { lastIncludedIndex: 0, lastIncludedTerm: 0 };
    const entries = Array.isArray(log.entries) ? log.entries : [];
    const floor = (meta.lastIncludedIndex || 0) + 1;
    const from = op.from === undefined || op.from === null ? floor : op.from;
    let tail = { from, entries };
    const old = this._tail;
    if (old !== null && old.from < from) {
      // the unconfirmed entries below this op's `from` go again, ahead of its own
      const merged = [];
      for (const e of old.entries) {
        if (e.index >= from) break;
        merged.push(e);
      }
      for (const e of entries) merged.push(e);
      tail = { from: old.from, entries: merged };
    }
    if (tail.from < floor) {
      // compaction dropped those: no need to send them
      let k = 0;
      while (k < tail.entries.length && tail.entries[k].index < floor) k++;
      tail = { from: floor, entries: k === 0 ? tail.entries : tail.entries.slice(k) };
    }
    this._tail = tail;
    this._hard = {
      currentTerm: state.currentTerm,
      votedFor: state.votedFor === undefined ? null : state.votedFor,
      peers: state.peers,
      meta,
    };
    this._last = entries.length > 0 ? entries[entries.length - 1].index : from - 1;
    this.version += 1;
    return this.current();
  }

  // The delta that brings the plugin to the newest state from what it durably has: the whole
  // unconfirmed part, or only the hard state when every entry is confirmed.
  current() {
    const tail = this._tail || { from: this._last + 1, entries: [] };
    // the plugin gets its own array: it may keep or change it
    return Object.assign({}, this._hard, { truncateFrom: tail.from, entries: tail.entries.slice() });
  }

  // Whether there is a state to write again (a late call may have overwritten it).
  hasState() {
    return this._hard !== null;
  }

  // A saveLog call starts.
  started() {
    this._outstanding += 1;
  }

  // A saveLog call of delta `version` called back (also a late one). After a success of the
  // newest delta with no other call that could still land, the plugin holds the newest log.
  finished(ok, version) {
    this._outstanding -= 1;
    if (ok && this._outstanding === 0 && version === this.version) this._tail = null;
  }
}

module.exports = { LogDelta };
