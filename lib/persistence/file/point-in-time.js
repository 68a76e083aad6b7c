'use strict';

// The file persistence's point-in-time snapshot read (the optional `createSnapshotReadStream`
// of the plugin contract): a read stream of the state machine as of one applied index, which
// stays that state however far applying goes while a leader streams it to a follower.

const { Readable } = require('node:stream');

/**
 * Opens the read and calls `cb(err, { index, stream })` once.
 * - `run(fn)`: runs `fn` in the node's operation queue (so no apply is half done), a Promise of
 *   its result.
 * - `current()`: inside the queue, `{ sm, applied }`: the loaded state machine and the index it
 *   has applied.
 * - `checkpointStream()`: the checkpoint read (`createReadStream`), for a state machine without
 *   `pointInTime()`; it says its index in `lastIncludedIndex` once it can be read.
 */
function openSnapshotRead(run, current, checkpointStream, cb) {
  let called = false;
  const once = (err, value) => {
    if (called) return;
    called = true;
    process.nextTick(() => cb(err, value));
  };
  run(async () => {
    const { sm, applied } = current();
    if (typeof sm.pointInTime !== 'function') return null;
    // Taken here, between two applies: the chunks are those of `applied`.
    return { index: applied, stream: Readable.from(sm.pointInTime() || [], { objectMode: true }) };
  }).then((read) => {
    if (read) return once(null, read);
    const stream = checkpointStream();
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

module.exports = { openSnapshotRead };
