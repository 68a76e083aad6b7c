'use strict';

// The file persistence's snapshot streams: the state machine read out of a checkpoint or at a
// point in time (what a leader sends) and written into a new one (what a follower receives), each
// in its node's Journal queue, so the cut is where the call stands among the node's operations.

const fsp = require('node:fs').promises;
const path = require('node:path');
const { Readable, Writable } = require('node:stream');
const { makeError } = require('../../errors');
const { isThenable, RecordReader } = require('./records');
const { CHECKPOINT_FILE } = require('./journal');

/**
 * Object-mode Readable of the state machine's chunks as of one index (`stream.lastIncludedIndex`,
 * set before the first chunk). Reads a checkpoint file, so memory stays bounded and applies go on
 * while it is consumed.
 */
function createReadStream(journal) {
  let fh = null;
  let reader = null;
  let reading = false;
  // Queued now, so the cut is where this call stands among the node's operations.
  const opened = journal.run(async () => {
    await journal._ensureLoaded();
    if (!journal.hasCheckpoint || journal.journalRecords > 0 || journal.ckptIndex !== journal.applied) {
      try {
        await journal._compact();
      } catch (e) {
        journal._invalidate();
        throw e;
      }
    }
    fh = await fsp.open(path.join(journal.dir, CHECKPOINT_FILE), 'r');
  });
  opened.catch(() => {}); // reported through construct
  const stream = new Readable({
    objectMode: true,
    highWaterMark: 16,
    construct(callback) {
      opened.then(async () => {
        reader = new RecordReader(fh);
        const head = await reader.next();
        if (!head || !head.h) throw makeError('the checkpoint has no header', 'ECORRUPT');
        stream.lastIncludedIndex = head.h.index;
      }).then(() => callback(), (err) => callback(err));
    },
    read() {
      if (reading) return;
      reading = true;
      (async () => {
        for (;;) {
          const rec = await reader.next();
          if (!rec) throw makeError('the checkpoint is damaged or incomplete', 'ECORRUPT');
          if (rec.e !== undefined) {
            this.push(null);
            return;
          }
          if (!this.push(rec.c)) return;
        }
      })().then(() => { reading = false; }, (err) => this.destroy(err));
    },
    destroy(err, callback) {
      const f = fh;
      fh = null;
      if (f) f.close().then(() => callback(err), () => callback(err));
      else callback(err);
    },
  });
  stream.lastIncludedIndex = undefined;
  return stream;
}

/**
 * Object-mode Writable that replaces the state machine with the chunks written to it, in order.
 * Durable when it emits 'finish'. The applied index is then 0: record the snapshot's index with
 * saveCommitIndex. Other operations on this node wait until the stream finishes or is destroyed.
 */
function createWriteStream(journal) {
  let builder = null;
  let release = null;
  let finished = false;
  let destroyed = false;
  let ready = null; // construct's callback, once the stream asks
  let outcome; // undefined while the queue has not reached this stream; null or an error after
  const settled = (err) => {
    outcome = err || null;
    if (ready) ready(err || undefined);
  };
  // Queued now, so operations issued after this call wait for the stream.
  journal.run(async () => {
    await journal._ensureLoaded();
    const r = journal.sm.reset();
    if (isThenable(r)) await r;
    const held = new Promise((resolve) => { release = resolve; });
    try {
      builder = await journal._beginCheckpoint(0);
    } catch (e) {
      journal._invalidate();
      throw e;
    }
    settled(null);
    if (!destroyed) await held; // the node is ours until the stream finishes or is destroyed
  }).catch((err) => {
    if (outcome === undefined) settled(err);
  });
  return new Writable({
    objectMode: true,
    highWaterMark: 16,
    construct(callback) {
      if (outcome !== undefined) callback(outcome || undefined);
      else ready = callback;
    },
    write(chunk, _enc, callback) {
      (async () => {
        const r = journal.sm.restore(chunk);
        if (isThenable(r)) await r;
        await builder.add(chunk);
      })().then(() => callback(), (err) => callback(err));
    },
    final(callback) {
      builder.commit().then(() => {
        finished = true;
        callback();
      }, (err) => {
        journal._invalidate();
        callback(err);
      });
    },
    destroy(err, callback) {
      destroyed = true;
      const done = () => {
        if (release) release();
        release = null;
        callback(err);
      };
      if (finished || !builder) {
        done();
        return;
      }
      // Destroyed half way: the disk still holds the state from before; so will memory.
      journal._invalidate();
      builder.abort().then(done, done);
    },
  });
}

/**
 * The point-in-time extension (`createSnapshotReadStream`): calls `cb(err, { index, stream })`
 * once, with a read of the state machine as of applied index `index` that stays that state
 * however far applying goes while it is read. From the state machine's `pointInTime()` (the
 * key-value store copies its map: no file is written and no apply waits), else from a checkpoint
 * (`createReadStream`, which says its index once it can be read).
 */
function createSnapshotReadStream(journal, cb) {
  let called = false;
  const once = (err, value) => {
    if (called) return;
    called = true;
    process.nextTick(() => cb(err, value));
  };
  journal.run(async () => {
    await journal._ensureLoaded();
    const sm = journal.sm;
    if (typeof sm.pointInTime !== 'function') return null;
    // Taken here, between two applies: the chunks are those of `journal.applied`.
    return { index: journal.applied, stream: Readable.from(sm.pointInTime() || [], { objectMode: true }) };
  }).then((read) => {
    if (read) return once(null, read);
    const stream = createReadStream(journal);
    const onError = (err) => {
      stream.removeListener('readable', onReadable);
      once(err);
    };
    const onReadable = () => {
      stream.removeListener('error', onError);
      once(null, { index: stream.lastIncludedIndex, stream });
    };
    stream.once('error', onError);
    stream.once('readable', onReadable);
    stream.read(0); // opens it: the checkpoint's header says the index
    return undefined;
  }, (err) => once(err));
}

module.exports = { createReadStream, createSnapshotReadStream, createWriteStream };
