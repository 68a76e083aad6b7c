'use strict';

// Gathers a store's operations into batch proposals. While MAX_BATCHES_IN_FLIGHT proposals wait
// to be applied, the operations that arrive (from any number of clients and connections) gather
// into ONE command, `{ op: 'batch', ops }`, proposed when one of those is applied; so they share
// one log entry: one save, one replication round, one journal sync. (Proposed one by one, each
// entry costs a journal sync of its own, since the state machine applies one entry at a time:
// that, not the CPU, bounded a busy store at the disk's sync rate.) The batch's apply returns
// each operation's result, and each caller is answered with its own as soon as the entry is
// applied: nothing is answered before it is committed and applied, as for a lone command. An
// operation that finds fewer proposals waiting goes out at the end of the event-loop turn, alone
// (as itself) or with what arrived in the same turn. A batch stays within maxCommandBytes and
// MAX_BATCH_OPS.

const { CODES, makeError } = require('../errors');

// Most operations one batch command carries: bounds the work of one apply and of one answer burst.
const MAX_BATCH_OPS = 1024;
// Proposals that may wait for their apply at once; later operations gather meanwhile. Two, so
// that one batch gathers while the other is saved, replicated and applied.
const MAX_BATCHES_IN_FLIGHT = 2;
// JSON bytes of a batch around its operations: {"op":"batch","ops":[...]} (and a comma each).
const BATCH_OVERHEAD_BYTES = 24;

class Batcher {
  /**
   * @param {(command) => Promise} propose  proposes one command, resolves with its apply result
   * @param {number} maxCommandBytes        the largest command (JSON bytes) a batch may become
   */
  constructor(propose, maxCommandBytes) {
    this._propose = propose;
    this._maxCommandBytes = maxCommandBytes;
    // Operations waiting to be proposed together: { entries: [{ command, resolve, reject }],
    // bytes } or null. Invariant: entries.length <= MAX_BATCH_OPS and bytes (the batch's JSON
    // size) <= maxCommandBytes.
    this._batch = null;
    this._inFlight = 0; // proposals not yet answered; invariant: <= MAX_BATCHES_IN_FLIGHT
    this._closed = false; // set by close(): what is still gathered fails with ESTOPPED
  }

  /**
   * Adds `command` (`bytes` long as JSON) to the next batch; resolves with its own result once
   * that batch is committed and applied.
   */
  add(command, bytes) {
    return new Promise((resolve, reject) => {
      let batch = this._batch;
      if (batch && (batch.entries.length >= MAX_BATCH_OPS ||
          batch.bytes + bytes + 1 > this._maxCommandBytes)) {
        this._proposeBatch(); // full: goes now, however many wait; the rest gathers anew
        batch = null;
      }
      if (!batch) {
        batch = { entries: [], bytes: BATCH_OVERHEAD_BYTES };
        this._batch = batch;
        if (this._inFlight < MAX_BATCHES_IN_FLIGHT) {
          setImmediate(() => { if (this._batch === batch) this._proposeBatch(); });
        } // else the next answered proposal proposes it
      }
      batch.entries.push({ command, resolve, reject });
      batch.bytes += bytes + 1;
    });
  }

  /** Proposes nothing more: operations not yet proposed fail with ESTOPPED when their turn comes. */
  close() {
    this._closed = true;
  }

  _proposeBatch() {
    const { entries } = this._batch;
    this._batch = null;
    if (this._closed) {
      for (const e of entries) e.reject(makeError('store is stopped', CODES.ESTOPPED));
      return;
    }
    const single = entries.length === 1;
    this._inFlight++;
    const answered = () => {
      this._inFlight--;
      if (this._batch && this._inFlight < MAX_BATCHES_IN_FLIGHT) this._proposeBatch();
    };
    let proposed;
    try {
      proposed = this._propose(single ? entries[0].command : { op: 'batch', ops: entries.map((e) => e.command) });
    } catch (err) {
      proposed = Promise.reject(err); // every caller is answered, whatever the node does
    }
    proposed
      .then((results) => {
        answered();
        if (single) {
          entries[0].resolve(results);
        } else if (!Array.isArray(results) || results.length !== entries.length) {
          // The built-in state machine always does; anything else is a bug worth an error.
          const err = makeError('the state machine did not answer the batch with one result per operation', 'EAPPLY');
          for (const e of entries) e.reject(err);
        } else {
          for (let i = 0; i < entries.length; i++) entries[i].resolve(results[i]);
        }
      }, (err) => {
        answered();
        for (const e of entries) e.reject(err);
      });
  }
}

module.exports = { Batcher };
