'use strict';

// A key-value state machine over the in-memory persistence, for tests that need a large state
// to snapshot (snapshot-catchup, learners).

const { Readable, Writable } = require('stream');
const { MemoryPersistence: Persistence } = require('../../lib/memory');

// A key-value state machine: applyCommand takes an array of {key, value} puts; the snapshot is one
// {key, value} chunk per key, produced lazily from the Map (push only in _read).
class MapPersistence extends Persistence {
  constructor() {
    super();
    this.maps = new Map();
    this.pushed = 0; // chunks the current read stream produced
    this.written = 0; // chunks the current write stream received
    this.maxAhead = 0;
    this.readStreams = 0;
  }

  map(id) {
    if (!this.maps.has(id)) this.maps.set(id, new Map());
    return this.maps.get(id);
  }

  applyCommand(nodeId, commitIndex, command, cb) {
    this._run('applyCommand', nodeId, cb, () => {
      const current = this.appliedIndex(nodeId) || 0;
      if (commitIndex <= current) {
        this.stats.reapplied += 1;
        return undefined;
      }
      const m = this.map(nodeId);
      for (const { key, value } of command) m.set(key, value);
      this.sm(nodeId).index = commitIndex;
      this.stats.applied += 1;
      return undefined;
    });
  }

  removeAllState(nodeId, cb) {
    this._run('removeAllState', nodeId, cb, () => {
      this.maps.set(nodeId, new Map());
      this.sm(nodeId).index = 0;
      return undefined;
    });
  }

  createReadStream(nodeId) {
    const self = this;
    const it = this.map(nodeId).entries();
    this.readStreams += 1;
    this.pushed = 0;
    this.written = 0;
    return new Readable({
      objectMode: true,
      read() {
        const { value, done } = it.next();
        if (done) {
          this.push(null);
          return;
        }
        self.pushed += 1;
        self.maxAhead = Math.max(self.maxAhead, self.pushed - self.written);
        this.push({ key: value[0], value: value[1] });
      },
    });
  }

  createWriteStream(nodeId) {
    const self = this;
    const m = new Map();
    this.maps.set(nodeId, m);
    this.written = 0;
    return new Writable({
      objectMode: true,
      write(chunk, _enc, done) {
        m.set(chunk.key, chunk.value);
        self.written += 1;
        setImmediate(done);
      },
    });
  }
}

module.exports = { MapPersistence };
