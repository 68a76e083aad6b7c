'use strict';

// The persistence used when `options.persistence` is not given.
//
// NOT DURABLE: everything lives in this process's memory and is gone when it exits. It exists so
// that a node can be tried out without writing a plugin; give real deployments a real plugin.
// One instance is created per node that lacks a persistence plugin.

const { Readable, Writable } = require('stream');

function clone(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

class MemoryPersistence {
  constructor() {
    this._nodes = new Map();
  }

  _node(nodeId) {
    let n = this._nodes.get(nodeId);
    if (!n) {
      n = { meta: null, commitIndex: 0, entries: [] };
      this._nodes.set(nodeId, n);
    }
    return n;
  }

  loadMeta(nodeId, cb) {
    const n = this._node(nodeId);
    setImmediate(cb, null, n.meta === null ? null : JSON.parse(n.meta));
  }

  saveMeta(nodeId, state, cb) {
    let json;
    try {
      json = JSON.stringify(state);
    } catch (e) {
      setImmediate(cb, e);
      return;
    }
    this._node(nodeId).meta = json;
    setImmediate(cb, null);
  }

  applyCommand(nodeId, commitIndex, command, cb) {
    const n = this._node(nodeId);
    if (commitIndex > n.commitIndex) {
      n.entries.push({ index: commitIndex, command });
      n.commitIndex = commitIndex;
    }
    setImmediate(cb, null);
  }

  lastAppliedCommitIndex(nodeId, cb) {
    setImmediate(cb, null, this._node(nodeId).commitIndex);
  }

  saveCommitIndex(nodeId, commitIndex, cb) {
    this._node(nodeId).commitIndex = commitIndex;
    setImmediate(cb, null);
  }

  createReadStream(nodeId) {
    const entries = this._node(nodeId).entries.slice();
    return Readable.from(entries, { objectMode: true });
  }

  createWriteStream(nodeId) {
    const n = this._node(nodeId);
    return new Writable({
      objectMode: true,
      write(chunk, _enc, done) {
        n.entries.push(chunk);
        setImmediate(done);
      },
    });
  }

  removeAllState(nodeId, cb) {
    const n = this._node(nodeId);
    n.entries = [];
    n.commitIndex = 0;
    setImmediate(cb, null);
  }

  /** Commands applied on `nodeId`, in order (a copy). */
  commands(nodeId) {
    return this._node(nodeId).entries.map((e) => e.command);
  }
}

MemoryPersistence.clone = clone;

module.exports = MemoryPersistence;
