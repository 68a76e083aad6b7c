'use strict';

// `DEBUG=skiff*` logging through the `debug` package. Silent by default, and free when off:
// every caller asks `enabled` before it builds a message, and the engine is asked for nothing
// extra unless a namespace is on.
//
//   skiff:node        state changes, start and stop
//   skiff:election    elections started and won, votes granted, leader changes
//   skiff:membership  members joined and left, join/leave calls and how they ended
//   skiff:snapshot    snapshot streams sent and installed
//   skiff:plugin      persistence calls that failed (the engine retries them)

const createDebug = require('debug');

const log = Object.freeze({
  node: createDebug('skiff:node'),
  election: createDebug('skiff:election'),
  membership: createDebug('skiff:membership'),
  snapshot: createDebug('skiff:snapshot'),
  plugin: createDebug('skiff:plugin'),
});

// The engine events each namespace needs heard (the engine sends only listened events).
const EVENTS = Object.freeze({
  election: ['vote granted'],
  membership: ['joined', 'left'],
});

// Snapshot ops worth a line, and what each says.
const SNAPSHOT_OPS = Object.freeze({
  __proto__: null,
  snapshotReset: 'installing a snapshot: clearing the state machine',
  snapshotAbort: 'snapshot install abandoned',
  snapshotClose: 'snapshot stream closed',
});

// What `_namespaces` holds before `debug` was first asked: equal to no namespaces value.
const NOT_READ = Symbol('not read');

function peerId(arg) {
  return arg && typeof arg === 'object' ? arg.id : arg;
}

class DebugLog {
  // `node`: the Node whose doings are logged, each line prefixed with its id.
  constructor(node) {
    this._node = node;
    this._leader = null; // the last leader logged (skiff:election)
    this._reading = new Set(); // snapshot read streams already logged as started
    this._namespaces = NOT_READ; // `debug`'s enabled namespaces when `_watchesLeader` was read
    this._watchesLeader = false;
  }

  // Whether a change of leader needs watching after each batch. Asked after every batch, so it
  // asks `debug` (two getters deep) only when the enabled namespaces changed (`debug.enable()`
  // sets `namespaces`, which is also what `debug` itself checks).
  get watchesLeader() {
    if (createDebug.namespaces !== this._namespaces) {
      this._namespaces = createDebug.namespaces;
      this._watchesLeader = log.election.enabled;
    }
    return this._watchesLeader;
  }

  // Engine events the enabled namespaces need, beside those the user listens to.
  listened() {
    const names = [];
    for (const ns of Object.keys(EVENTS)) if (log[ns].enabled) names.push(...EVENTS[ns]);
    return names;
  }

  // An engine event reached the node.
  event(name, args) {
    const id = this._node.id;
    if (name === 'state') {
      const state = args[0];
      if (log.node.enabled) log.node('%s: %s at term %d', id, state, this._node.currentTerm());
      if (log.election.enabled) {
        if (state === 'candidate') log.election('%s: election started at term %d', id, this._node.currentTerm());
        else if (state === 'leader') log.election('%s: elected leader at term %d', id, this._node.currentTerm());
      }
    } else if (name === 'vote granted') {
      if (log.election.enabled) log.election('%s: voted for %s at term %d', id, args[0], this._node.currentTerm());
    } else if (name === 'joined' || name === 'left') {
      if (log.membership.enabled) log.membership('%s: %s %s', id, peerId(args[0]), name);
    }
  }

  // After a batch: logs a change of leader.
  afterBatch() {
    if (!log.election.enabled) return;
    const leader = this._node.currentLeader();
    if (leader === this._leader) return;
    this._leader = leader;
    if (leader !== null) log.election('%s: leader is %s at term %d', this._node.id, leader, this._node.currentTerm());
    else log.election('%s: no leader known', this._node.id);
  }

  // A `join`/`leave` call of `peer` was made: returns its callback, which logs how it ended
  // when skiff:membership is on.
  membershipCall(kind, peer, callback) {
    if (!log.membership.enabled) return callback;
    const id = this._node.id;
    log.membership('%s: %s %s asked', id, kind, peer);
    return (err, ...rest) => {
      if (err) log.membership('%s: %s %s failed: %s (%s)', id, kind, peer, err.message, err.code);
      else log.membership('%s: %s %s committed', id, kind, peer);
      callback(err, ...rest);
    };
  }

  // An op the engine sent: snapshot ops are logged.
  op(op) {
    if (!log.snapshot.enabled) return;
    const id = this._node.id;
    if (op.op === 'snapshotRead') {
      if (this._reading.has(op.sid)) return;
      this._reading.add(op.sid);
      log.snapshot('%s: sending a snapshot (stream %d)', id, op.sid);
    } else if (op.op === 'snapshotWrite') {
      if (op.end) log.snapshot('%s: snapshot of index %d written', id, op.index);
    } else if (SNAPSHOT_OPS[op.op] !== undefined) {
      if (op.op === 'snapshotClose') this._reading.delete(op.sid);
      log.snapshot('%s: %s', id, SNAPSHOT_OPS[op.op]);
    }
  }

  // removeAllState of the install into stream `sid` called back after that install was
  // abandoned: the engine ignores it.
  staleReset(sid, error) {
    if (!log.snapshot.enabled) return;
    const outcome = error ? `failed (${error.message})` : 'finished';
    log.snapshot('%s: removeAllState of an abandoned install (stream %d) %s late: ignored', this._node.id, sid, outcome);
  }

  // A persistence op (`label`, what NodeStats counts it as) failed: logs it.
  ioFailed(label, error) {
    if (!log.plugin.enabled) return;
    const message = error && typeof error === 'object' ? error.message : String(error);
    const code = error && typeof error === 'object' && error.code ? ` (${error.code})` : '';
    log.plugin('%s: %s failed, the engine retries it: %s%s', this._node.id, label, message, code);
  }

  stopped() {
    if (log.node.enabled) log.node('%s: stopped', this._node.id);
  }
}

module.exports = { DebugLog };
