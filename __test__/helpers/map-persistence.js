'use strict';

// A key-value state machine over the in-memory persistence, for tests that need a large state
// to snapshot (snapshot-catchup, learners).

const { Readable, Writable } = require('stream');
const { MemoryPersistence: Persistence } = require('../../lib/memory');

// A key-value state machine: applyCommand takes an array of {key, value} puts; the snapshot is one
// {key, value} chunk per key, produced lazily from the Map (push only in _read). With
// `{ extensions: true }` it has the incremental extension (saveLog, applyCommands: a save costs
// what it changes, as with the built-in file persistence) and the point-in-time one:
// createSnapshotReadStream copies the Map's entries (not the values' contents: every value is
// replaced, never changed in place) and streams the copy, so applying goes on while a snapshot
// is read.
class MapPersistence extends Persistence {
  constructor({ extensions = false } = {}) {
    super({ incremental: extensions, pointInTime: extensions });
    this.extensions = extensions;
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

  // One command, unless it is already applied.
  _applyOne(nodeId, commitIndex, command) {
    if (commitIndex <= (this.appliedIndex(nodeId) || 0)) {
      this.stats.reapplied += 1;
      return;
    }
    const m = this.map(nodeId);
    for (const { key, value } of command) m.set(key, value);
    this.sm(nodeId).index = commitIndex;
    this.stats.applied += 1;
  }

  applyCommand(nodeId, commitIndex, command, cb) {
    this._run('applyCommand', nodeId, cb, () => this._applyOne(nodeId, commitIndex, command));
  }

  _applyCommands(nodeId, batch, cb) {
    this._run('applyCommands', nodeId, cb, () => batch.map(({ index, command }) => this._applyOne(nodeId, index, command)));
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

  _createSnapshotReadStream(nodeId, cb) {
    this._run('createSnapshotReadStream', nodeId, cb, () => {
      this.readStreams += 1;
      const entries = [...this.map(nodeId)];
      const index = this.sm(nodeId).index;
      return { index, stream: Readable.from(entries.map(([key, value]) => ({ key, value })), { objectMode: true }) };
    });
  }

  createWriteStream(nodeId) {
    const self = this;
    const m = new Map();
    this.maps.set(nodeId, m);
    this.written = 0;
    return new Writable({
      objectMode: true,
      // With the extensions, like a disk that takes what is buffered in one write: a chunk of
      // records costs a few turns of the event loop, not one per record.
      highWaterMark: this.extensions ? 1024 : 16,
      write(chunk, _enc, done) {
        m.set(chunk.key, chunk.value);
        self.written += 1;
        setImmediate(done);
      },
      writev: this.extensions ? (chunks, done) => {
        for (const { chunk } of chunks) m.set(chunk.key, chunk.value);
        self.written += chunks.length;
        setImmediate(done);
      } : undefined,
    });
  }
}

module.exports = { MapPersistence };
