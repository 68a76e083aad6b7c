'use strict';

// Snapshot streams: opens a point-in-time read of the state machine (`snapshotOpen`), reads the
// snapshot out in bounded batches for the engine to send (`snapshotRead`/`snapshotClose`), and
// writes a received one in (`snapshotReset`, `snapshotWrite`, `snapshotAbort`).

const { encode, revive } = require('../codec');
const { makeError, toWire, CODES } = require('../errors');
const { callForIo } = require('./plugin-call');

// How long a snapshot read that already has chunks waits for more before answering with them.
const SNAPSHOT_PARTIAL_WAIT_MS = 20;
// How many aborted write streams are remembered (see `_abortedSids`).
const MAX_ABORTED_SIDS = 256;

// Whether a readable has no more data to give (its source ended and its buffer is empty), even
// if it has not emitted `end` yet.
function atEnd(stream) {
  if (stream.readableEnded) return true;
  const state = stream._readableState;
  return Boolean(state && state.ended && (stream.readableLength === 0 || state.length === 0));
}

class SnapshotIO {
  // `node`: the Node (plugin, warnings); `io`: the Dispatcher (complete, lane holds);
  // `apply`: the ApplyChain, whose state-machine lane writes take turns in.
  constructor(node, io, apply) {
    this._node = node;
    this._io = io;
    this._apply = apply;
    this._readStreams = new Map(); // sid -> snapshot read stream record
    this._opening = new Map(); // sid -> whether it was closed, for point-in-time reads being opened
    this._writeStreams = new Map(); // sid -> snapshot write stream record
    // Snapshot write streams the engine gave up on, newest last. Bounded: a write op for an aborted
    // stream can only be one still queued in the state-machine lane, and the follower runs one
    // install at a time, so only the last few aborts can still matter.
    this._abortedSids = new Set();
  }

  _warn(e) {
    this._node._warn(e);
  }

  // `snapshotReset`: removeAllState, in the state-machine lane, after stopping the apply chain,
  // for the install writing into stream `op.sid`. If that install was aborted meanwhile (a newer
  // transfer began), the engine ignores the completion (it matches it by `io`); it is logged.
  reset(op) {
    const node = this._node;
    // no apply chain may go on after the state machine is cleared
    this._apply.supersede();
    const complete = (io, error, result) => {
      if (this._abortedSids.has(op.sid)) node._debug.staleReset(op.sid, error);
      this._io.complete(io, error, result);
    };
    callForIo((e) => this._warn(e), complete, op.io, 'persistence.removeAllState',
      node.options.persistence, 'removeAllState', [node.id], false, this._apply.lane);
  }

  // Opens the state machine's stream with persistence[`method`]; when the plugin fails or gives
  // something without `needs()` and `on()`, completes IO `io` with the error and returns null.
  _open(io, method, needs, kind) {
    const node = this._node;
    try {
      const stream = node.options.persistence[method](node.id);
      if (!stream || typeof stream[needs] !== 'function' || typeof stream.on !== 'function') {
        throw makeError(`persistence.${method} did not return a ${kind} stream`, CODES.EPLUGIN);
      }
      return stream;
    } catch (e) {
      this._io.complete(io, toWire(e), null);
      return null;
    }
  }

  // Keeps `stream` as read stream `sid`, watching for its end and errors; returns its record.
  _track(sid, stream) {
    const rec = { stream, ended: false, error: null, wake: null };
    const wake = () => {
      const fn = rec.wake;
      rec.wake = null;
      if (fn) fn();
    };
    stream.on('end', () => {
      rec.ended = true;
      wake();
    });
    stream.on('error', (err) => {
      rec.error = err || makeError('snapshot read stream failed', CODES.EPLUGIN);
      if (rec.wake) wake();
      else this._warn(rec.error);
    });
    stream.on('readable', wake);
    this._readStreams.set(sid, rec);
    return rec;
  }

  // `snapshotOpen`: persistence.createSnapshotReadStream, the point-in-time extension. Keeps its
  // stream as read stream `sid` and answers with the index it is of. What the plugin gives is
  // checked (a stream that reads, a safe integer index); the engine checks the index against
  // its log. A second callback is reported and its stream destroyed.
  open(op) {
    const node = this._node;
    const { io, sid } = op;
    let called = false;
    this._opening.set(sid, false);
    const discard = (stream) => {
      try {
        if (stream && typeof stream.destroy === 'function') stream.destroy();
      } catch (e) {
        this._warn(e);
      }
    };
    const done = (err, result) => {
      if (called) {
        this._warn(makeError('persistence.createSnapshotReadStream called back twice', CODES.EPLUGIN));
        discard(result && result.stream);
        return;
      }
      called = true;
      const closed = this._opening.get(sid) !== false;
      this._opening.delete(sid);
      const stream = result && result.stream;
      if (err) {
        discard(stream);
        this._io.complete(io, toWire(err), null);
        return;
      }
      const index = result && result.index;
      if (!stream || typeof stream.read !== 'function' || typeof stream.on !== 'function' ||
          !Number.isSafeInteger(index) || index < 0) {
        discard(stream);
        this._io.complete(io, { message: 'persistence.createSnapshotReadStream did not give { index, stream }',
          code: CODES.EBADRESULT }, null);
        return;
      }
      if (node._released || closed) {
        // the engine gave up on it (timed out, or the node stopped): nobody will read it
        discard(stream);
        return;
      }
      this._track(sid, stream);
      this._io.complete(io, null, String(index));
    };
    try {
      node.options.persistence.createSnapshotReadStream(node.id, done);
    } catch (e) {
      if (!called) {
        called = true;
        this._opening.delete(sid);
        this._io.complete(io, toWire(e), null);
      } else {
        this._warn(e);
      }
    }
  }

  // `snapshotRead`: read up to maxChunks objects (about maxBytes of JSON) from the state
  // machine's read stream `sid`: the one `snapshotOpen` opened, or createReadStream's, opened on
  // first use; only `read()` what is asked for.
  read(op) {
    const node = this._node;
    const { io, sid } = op;
    const maxChunks = Number.isFinite(op.maxChunks) && op.maxChunks > 0 ? op.maxChunks : 64;
    const maxBytes = Number.isFinite(op.maxBytes) && op.maxBytes > 0 ? op.maxBytes : 1 << 20;
    let rec = this._readStreams.get(sid);
    if (!rec && typeof node.options.persistence.createSnapshotReadStream === 'function') {
      // a point-in-time read that ended or was closed: never fall back to another index's
      this._io.complete(io, { message: `snapshot read stream ${sid} is not open`, code: CODES.EPLUGIN }, null);
      return;
    }
    if (!rec) {
      const stream = this._open(io, 'createReadStream', 'read', 'readable');
      if (!stream) return;
      rec = this._track(sid, stream);
    }
    const texts = [];
    let bytes = 0;
    const finish = (done) => {
      if (done) this._readStreams.delete(sid);
      this._io.complete(io, null, `{"chunks":[${texts.join(',')}],"done":${done ? 'true' : 'false'}}`);
    };
    let timer = null;
    const pump = () => {
      if (timer) {
        clearTimeout(timer);
        timer = null;
      }
      if (node._released || this._readStreams.get(sid) !== rec) return;
      while (texts.length < maxChunks && bytes < maxBytes) {
        if (rec.error) {
          this.close(sid);
          this._io.complete(io, toWire(rec.error), null);
          return;
        }
        let chunk;
        try {
          chunk = rec.stream.read();
        } catch (e) {
          this.close(sid);
          this._io.complete(io, toWire(e), null);
          return;
        }
        if (chunk === null || chunk === undefined) {
          if (atEnd(rec.stream) || rec.ended) {
            finish(true);
            return;
          }
          // nothing buffered: wait for `readable`/`end`/`error`; with chunks in hand, not long
          rec.wake = pump;
          if (texts.length > 0) {
            timer = setTimeout(() => {
              if (rec.wake !== pump) return;
              rec.wake = null;
              finish(false);
            }, SNAPSHOT_PARTIAL_WAIT_MS);
          }
          return;
        }
        let text;
        try {
          text = encode(chunk, CODES.EBADRESULT);
        } catch (e) {
          this.close(sid);
          this._io.complete(io, { message: `snapshot chunk: ${e.message}`, code: CODES.EBADRESULT }, null);
          return;
        }
        texts.push(text);
        bytes += text.length;
      }
      finish(false);
    };
    rec.wake = null; // a retried read replaces one still waiting
    pump();
  }

  close(sid) {
    if (this._opening.has(sid)) this._opening.set(sid, true);
    const rec = this._readStreams.get(sid);
    if (!rec) return;
    this._readStreams.delete(sid);
    rec.wake = null;
    try {
      if (typeof rec.stream.destroy === 'function') rec.stream.destroy();
    } catch (e) {
      this._warn(e);
    }
  }

  // `snapshotWrite`, in the state-machine lane, which it holds until the engine hears back.
  write(op) {
    this._apply.lane.run((release) => {
      if (this._abortedSids.has(op.sid)) {
        // aborted while it waited for the lane: never reopen a stream for it
        release();
        this._io.complete(op.io, { message: 'snapshot transfer aborted', code: CODES.EPLUGIN }, null);
        return;
      }
      this._io.holdUntilComplete(op.io, release);
      this._write(op);
    });
  }

  // Writes chunks, in order, into write stream `sid` (opened on first use), waiting for `drain`;
  // with `end`, finishes the stream and then saveCommitIndex(index).
  _write(op) {
    const node = this._node;
    let rec = this._writeStreams.get(op.sid);
    if (!rec) {
      const stream = this._open(op.io, 'createWriteStream', 'write', 'writable');
      if (!stream) return;
      rec = { stream, error: null, finished: false, queue: Promise.resolve(), listeners: new Set() };
      stream.on('error', (err) => {
        rec.error = err || makeError('snapshot write stream failed', CODES.EPLUGIN);
        if (rec.listeners.size === 0) this._warn(rec.error);
        for (const fn of [...rec.listeners]) fn();
      });
      stream.on('finish', () => {
        rec.finished = true;
        for (const fn of [...rec.listeners]) fn();
      });
      stream.on('drain', () => {
        for (const fn of [...rec.listeners]) fn();
      });
      this._writeStreams.set(op.sid, rec);
    }
    const sid = op.sid;
    // waits until `test()` holds or the stream fails; resolves with the error, if any
    const waitFor = (test) => new Promise((resolve) => {
      const check = () => {
        if (rec.error) {
          rec.listeners.delete(check);
          resolve(rec.error);
        } else if (test()) {
          rec.listeners.delete(check);
          resolve(null);
        }
      };
      rec.listeners.add(check);
      check();
    });
    const fail = (err) => {
      this.abort(sid);
      this._io.complete(op.io, toWire(err), null);
    };
    rec.queue = rec.queue.then(async () => {
      if (node._released || this._writeStreams.get(sid) !== rec) return;
      const chunks = Array.isArray(op.chunks) ? op.chunks : [];
      for (const chunk of chunks) {
        if (rec.error) return fail(rec.error);
        let ok;
        try {
          ok = rec.stream.write(revive(chunk));
        } catch (e) {
          return fail(e);
        }
        if (ok === false) {
          let drained = false;
          const onDrain = () => { drained = true; };
          rec.stream.once('drain', onDrain);
          const err = await waitFor(() => drained || !rec.stream.writableNeedDrain);
          rec.stream.removeListener('drain', onDrain);
          if (err) return fail(err);
        }
      }
      if (!op.end) {
        if (rec.error) return fail(rec.error);
        this._io.complete(op.io, null, null);
        return undefined;
      }
      try {
        rec.stream.end();
      } catch (e) {
        return fail(e);
      }
      const err = await waitFor(() => rec.finished);
      if (err) return fail(err);
      this._writeStreams.delete(sid);
      callForIo((e) => this._warn(e), this._io.complete, op.io, 'persistence.saveCommitIndex',
        node.options.persistence, 'saveCommitIndex', [node.id, op.index], false);
      return undefined;
    }).catch((e) => fail(e));
  }

  // `snapshotAbort`, and release: destroy write stream `sid` and never reopen it.
  abort(sid) {
    this._abortedSids.add(sid);
    if (this._abortedSids.size > MAX_ABORTED_SIDS) {
      this._abortedSids.delete(this._abortedSids.values().next().value);
    }
    const rec = this._writeStreams.get(sid);
    if (!rec) return;
    this._writeStreams.delete(sid);
    if (!rec.error) rec.error = makeError('snapshot write aborted', CODES.ESTOPPED);
    for (const fn of [...rec.listeners]) fn();
    try {
      if (typeof rec.stream.destroy === 'function') rec.stream.destroy();
    } catch (e) {
      this._warn(e);
    }
  }

  // The node stopped: close every stream.
  releaseAll() {
    for (const sid of [...this._opening.keys()]) this.close(sid);
    for (const sid of [...this._readStreams.keys()]) this.close(sid);
    for (const sid of [...this._writeStreams.keys()]) this.abort(sid);
  }
}

module.exports = { SnapshotIO };
