'use strict';

// The engine's durable state for one node id (term, vote, membership, log): a segmented,
// CRC-checked write-ahead log written by saveLog, or meta.json, the whole state written by
// saveMeta, which a node folder of an earlier version holds and the first saveLog turns into a WAL.
//
//   wal-<seq>   segments (seq: 16 decimal digits, ascending), records of JSON:
//               { h: { currentTerm, votedFor, peers, meta } }   the hard state
//               { f, e: [entries] }   the log: entries from index f on replaced by e (e[k].index
//                                     is f + k), the ones below f kept
//               Every segment starts with a hard state record, so dropping older segments never
//               loses it. A segment is dropped once every entry above lastIncludedIndex lies in
//               later ones. One write and one fdatasync per batch of queued calls (a new
//               segment: an fsync of the folder too).
//   meta.json   the saveMeta state, replaced atomically, while there is no WAL; with one, a
//               marker that is not JSON (an older version then refuses the folder).
//
// Loading replays the segments in order. A damaged tail of the last segment (a crash mid-append:
// no valid record after it) is cut off with a `warning` (ETORN); damage anywhere else fails the
// load with ECORRUPT naming the file and the offset, and leaves the files as they are.

const fsp = require('node:fs').promises;
const path = require('node:path');
const { makeError } = require('../../errors');
const {
  FILE_MODE, JSON_CODEC, frameHeader, callBack, fsyncDir, atomicWrite, writeAll, RecordReader, corruptAt,
  cutTornTail,
} = require('./records');

const META_FILE = 'meta.json';
// What meta.json holds once the folder has a WAL: not JSON, so a version of the plugin without
// the WAL fails to load the folder (ECORRUPT) instead of taking it for a new, empty node.
const WAL_MARK = 'skiff-rs: the state of this node is in its wal-* files; this version cannot read them\n';
const SEGMENT_PREFIX = 'wal-';
const SEGMENT_NAME = /^wal-(\d{16})$/;
const TMP_PREFIX = 'wal';

function segmentName(seq) {
  return `${SEGMENT_PREFIX}${String(seq).padStart(16, '0')}`;
}

function frame(payload) {
  return [frameHeader(payload), payload];
}

// The hard state record of JSON text `hard`, framed.
function hardFrame(hard) {
  return frame(Buffer.from(`{"h":${hard}}`, 'utf8'));
}

/** Whether `state` has the engine state's shape (a log with an entry array). */
function isEngineState(state) {
  return state !== null && typeof state === 'object' && state.log !== null && typeof state.log === 'object' &&
    Array.isArray(state.log.entries);
}

/**
 * A saveLog delta made ready to write, encoded now (what is written is the delta as it was when
 * the call was made). Throws EBADARGS for a delta that is not one.
 */
function prepare(delta) {
  if (delta === null || typeof delta !== 'object' || !Number.isSafeInteger(delta.truncateFrom) ||
    delta.truncateFrom < 1 || !Array.isArray(delta.entries)) {
    throw makeError('saveLog needs { currentTerm, votedFor, peers, meta, truncateFrom, entries }', 'EBADARGS');
  }
  const { truncateFrom: from, entries } = delta;
  for (let k = 0; k < entries.length; k++) {
    const e = entries[k];
    if (e === null || typeof e !== 'object' || e.index !== from + k) {
      throw makeError(`saveLog: entries[${k}] must have index ${from + k}`, 'EBADARGS');
    }
  }
  const meta = delta.meta === undefined ? null : delta.meta;
  const hard = JSON.stringify({ currentTerm: delta.currentTerm, votedFor: delta.votedFor === undefined ? null : delta.votedFor,
    peers: delta.peers, meta });
  const text = JSON.stringify({ f: from, e: entries });
  if (typeof hard !== 'string' || typeof text !== 'string') throw makeError('saveLog: the delta must be JSON', 'EBADARGS');
  return {
    hard,
    from,
    count: entries.length,
    end: entries.length > 0 ? from + entries.length - 1 : from - 1,
    floor: ((meta && meta.lastIncludedIndex) || 0) + 1,
    payload: Buffer.from(text, 'utf8'),
  };
}

// A whole engine state as a delta that replaces the log.
function stateAsDelta(state) {
  const meta = state.log.meta || null;
  return {
    currentTerm: state.currentTerm, votedFor: state.votedFor, peers: state.peers, meta,
    truncateFrom: ((meta && meta.lastIncludedIndex) || 0) + 1, entries: state.log.entries,
  };
}

class Wal {
  /**
   * @param {object} o
   * @param {string} o.dir                       the node's folder
   * @param {() => Promise} o.ensureDir          creates the folder (once)
   * @param {(prefix) => Promise} o.removeTemps  removes leftover temp files of `prefix`
   * @param {(err) => void} o.warn               reports a warning
   * @param {number} o.segmentBytes              a segment this big is followed by a new one
   */
  constructor(o) {
    this.dir = o.dir;
    this._ensureDir = o.ensureDir;
    this._removeTemps = o.removeTemps;
    this._warn = o.warn;
    this.segmentBytes = o.segmentBytes;
    // Calls in order, one kind at a time: { kind: 'load' | 'log' | 'meta', value, cb }.
    // Consecutive saveLog calls share one write and one sync; consecutive saveMeta calls collapse
    // into the newest.
    this._queue = [];
    this._busy = false;
    this._idle = []; // called when the queue is empty
    this._cleaned = false; // leftover temp files removed
    this._reset();
  }

  // Forgets what is known of the files: the next call reads them again.
  _reset() {
    const fh = this._fh;
    // What is on disk, valid while `_opened`:
    this._opened = false;
    this._segments = []; // sequence numbers of the segments, ascending (the last is appended to)
    this._fh = null; // the last segment, open for appending (null: there is no WAL yet)
    this._size = 0; // its size
    this._hasHard = false; // it holds a hard state record
    this._hard = null; // the JSON text of the newest hard state record
    this._last = 0; // index of the stored log's last entry
    // Where the entries of the stored log lie: [{ seq, first }], ascending in both, each entry
    // from `first` on (up to the next run's first) written in segment `seq`.
    this._runs = [];
    this._legacy = null; // without a WAL: the meta.json state, which the first saveLog converts
    if (fh) fh.close().catch(() => {});
  }

  /** Calls back with the state in saveMeta's format (null when none was saved). */
  load(cb) {
    this._push({ kind: 'load', cb });
  }

  /** Writes saveLog delta `delta`; durable before `cb`. */
  saveLog(delta, cb) {
    let value;
    try {
      value = prepare(delta);
    } catch (e) {
      callBack(cb, e);
      return;
    }
    this._push({ kind: 'log', value, cb });
  }

  /** Writes a whole state (saveMeta); durable before `cb`. */
  saveMeta(state, cb) {
    let json;
    try {
      json = JSON.stringify(state);
      if (typeof json !== 'string') throw makeError('state must be a JSON value', 'EBADARGS');
    } catch (e) {
      callBack(cb, e);
      return;
    }
    this._push({ kind: 'meta', value: json, cb });
  }

  /** Resolves once the queue is empty, with the files closed (a later call reopens them). */
  close() {
    return new Promise((resolve) => {
      const done = () => {
        this._reset();
        resolve();
      };
      if (this._busy) this._idle.push(done);
      else done();
    });
  }

  _push(call) {
    this._queue.push(call);
    if (!this._busy) this._pump();
  }

  async _pump() {
    this._busy = true;
    while (this._queue.length > 0) {
      const kind = this._queue[0].kind;
      let n = 1;
      if (kind !== 'load') while (n < this._queue.length && this._queue[n].kind === kind) n++;
      const calls = this._queue.splice(0, n);
      let err = null;
      let result;
      try {
        if (kind === 'load') result = await this._open();
        else if (kind === 'log') await this._append(calls.map((c) => c.value));
        else await this._saveState(JSON.parse(calls[n - 1].value), calls[n - 1].value);
      } catch (e) {
        err = e;
        this._reset(); // memory may be ahead of the disk: read it again
      }
      for (const c of calls) {
        if (err) callBack(c.cb, err);
        else callBack(c.cb, null, result);
      }
    }
    this._busy = false;
    const idle = this._idle;
    this._idle = [];
    for (const fn of idle) fn();
  }

  // -------------------------------------------------------------- reading

  // Reads the node's state from its files and gets ready to append; returns the state.
  async _open() {
    this._reset();
    await this._ensureDir();
    if (!this._cleaned) {
      await this._removeTemps(TMP_PREFIX);
      await this._removeTemps(META_FILE);
      this._cleaned = true;
    }
    const segments = (await fsp.readdir(this.dir)).map((name) => SEGMENT_NAME.exec(name))
      .filter(Boolean).map((m) => Number(m[1])).sort((a, b) => a - b);
    const bad = segments.find((seq) => !Number.isSafeInteger(seq));
    if (bad !== undefined) {
      throw makeError(`${this.dir}: a WAL segment is numbered beyond what this plugin writes (${bad})`, 'ECORRUPT',
        { file: this.dir });
    }
    if (segments.length === 0) {
      const state = await this._readMetaFile();
      this._legacy = state;
      this._opened = true;
      return state;
    }
    const log = []; // the stored entries, ascending
    let hard = null;
    let size = 0;
    for (let i = 0; i < segments.length; i++) {
      const seq = segments[i];
      const file = path.join(this.dir, segmentName(seq));
      const isLast = i === segments.length - 1;
      const fh = await fsp.open(file, isLast ? 'r+' : 'r');
      this._hasHard = false;
      try {
        const reader = new RecordReader(fh, JSON_CODEC);
        for (;;) {
          const before = reader.goodOffset;
          const rec = await reader.next();
          if (!rec) break;
          if (rec !== null && typeof rec === 'object' && rec.h !== null && typeof rec.h === 'object') {
            hard = rec.h;
            this._hasHard = true;
          } else if (rec !== null && typeof rec === 'object' && Number.isSafeInteger(rec.f) && Array.isArray(rec.e)) {
            if (!rec.e.every((e, k) => e !== null && typeof e === 'object' && e.index === rec.f + k)) {
              throw corruptAt(file, before, 'a log record whose entries do not follow its index');
            }
            while (log.length > 0 && log[log.length - 1].index >= rec.f) log.pop();
            for (const e of rec.e) log.push(e);
            this._splice(seq, rec.f, rec.e.length);
          } else {
            // intact (its checksum matches) yet not a WAL record: not a torn write
            throw corruptAt(file, before, 'a record that is not a WAL record');
          }
        }
        if (isLast) {
          // a crash in the middle of an append: never acknowledged; cut off
          const torn = await cutTornTail(fh, file, reader, JSON_CODEC);
          if (torn) this._warn(torn);
          size = reader.goodOffset;
        } else {
          const { size: fileSize } = await fh.stat();
          if (reader.torn || fileSize > reader.goodOffset) {
            throw corruptAt(file, reader.goodOffset, `${reader.why || 'bytes that are not a record'}, in a segment ` +
              'that is not the last');
          }
        }
      } finally {
        await fh.close().catch(() => {});
      }
    }
    const state = this._stateOf(hard, log);
    await this._markMeta(); // a crash may have come between the first segment and the marker
    this._segments = segments;
    this._fh = await fsp.open(path.join(this.dir, segmentName(segments[segments.length - 1])), 'a', FILE_MODE);
    this._size = size;
    this._hard = hard === null ? null : JSON.stringify(hard);
    this._last = log.length > 0 ? log[log.length - 1].index : 0;
    this._opened = true;
    return state;
  }

  // The state in saveMeta's format from the newest hard state and the stored log.
  _stateOf(hard, log) {
    if (hard === null) {
      if (log.length > 0) throw makeError(`${this.dir}: the WAL has entries but no hard state`, 'ECORRUPT');
      return null; // the first write never completed
    }
    const meta = hard.meta === undefined ? null : hard.meta;
    const floor = ((meta && meta.lastIncludedIndex) || 0) + 1;
    let k = 0;
    while (k < log.length && log[k].index < floor) k++;
    const entries = k === 0 ? log : log.slice(k);
    for (let i = 0; i < entries.length; i++) {
      if (entries[i].index !== floor + i) {
        throw makeError(`${this.dir}: the log has no entry ${floor + i} (a WAL segment is missing or damaged); ` +
          'restore this node from a backup or from its peers', 'ECORRUPT', { file: this.dir });
      }
    }
    return {
      currentTerm: hard.currentTerm,
      votedFor: hard.votedFor,
      log: meta === null ? { entries } : { meta, entries },
      peers: hard.peers,
    };
  }

  // Makes meta.json the WAL marker, unless it is already.
  async _markMeta() {
    let text = null;
    try {
      text = await fsp.readFile(path.join(this.dir, META_FILE), 'utf8');
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
    if (text !== WAL_MARK) await atomicWrite(this.dir, META_FILE, WAL_MARK);
  }

  async _readMetaFile() {
    const file = path.join(this.dir, META_FILE);
    let text;
    try {
      text = await fsp.readFile(file, 'utf8');
    } catch (e) {
      if (e.code === 'ENOENT') return null;
      throw e;
    }
    try {
      return JSON.parse(text);
    } catch (e) {
      throw makeError(`${file} is not valid JSON: ${e.message}`, 'ECORRUPT', { file });
    }
  }

  // -------------------------------------------------------------- writing

  // Records that entries from index `from` on (`count` of them) were written to segment `seq`.
  _splice(seq, from, count) {
    const runs = this._runs;
    while (runs.length > 0 && runs[runs.length - 1].first >= from) runs.pop();
    if (count > 0 && (runs.length === 0 || runs[runs.length - 1].seq !== seq)) runs.push({ seq, first: from });
  }

  // Appends the prepared deltas `items`: one write, one sync.
  async _append(items) {
    if (!this._opened) await this._open();
    if (this._fh === null) await this._startWal();
    let fresh = false;
    if (this._size >= this.segmentBytes) {
      await this._roll();
      fresh = true;
    }
    const seq = this._segments[this._segments.length - 1];
    const parts = [];
    let hard = this._hasHard ? this._hard : null;
    let last = this._last;
    for (const it of items) {
      if (it.hard !== hard) {
        parts.push(...hardFrame(it.hard));
        hard = it.hard;
      }
      // a delta with no entries changes the log only when it cuts it
      if (it.count > 0 || it.from <= last) parts.push(...frame(it.payload));
      last = it.count > 0 || it.from <= last ? it.end : last;
    }
    const buf = Buffer.concat(parts);
    await writeAll(this._fh, buf);
    await this._fh.datasync();
    if (fresh) await fsyncDir(this.dir); // the new segment's folder entry
    this._size += buf.length;
    this._hasHard = true;
    this._hard = hard;
    this._last = last;
    for (const it of items) this._splice(seq, it.from, it.count);
    await this._compact(items[items.length - 1].floor);
  }

  // Drops the segments below the one holding entry `floor` (the first one above
  // lastIncludedIndex): nothing there is needed any more. The current segment always stays.
  async _compact(floor) {
    const runs = this._runs;
    while (runs.length > 1 && runs[1].first <= floor) runs.shift();
    const current = this._segments[this._segments.length - 1];
    const keep = runs.length > 0 ? Math.min(runs[0].seq, current) : current;
    while (this._segments.length > 1 && this._segments[0] < keep) {
      const seq = this._segments.shift();
      // A segment that comes back after a crash is replayed before newer ones, which supersede
      // it, so the unlink needs no sync.
      await fsp.unlink(path.join(this.dir, segmentName(seq))).catch((e) => {
        if (e.code !== 'ENOENT') throw e;
      });
    }
  }

  // Starts a new segment after the current one; its first record will be the hard state.
  async _roll() {
    const seq = this._segments[this._segments.length - 1] + 1;
    const fh = await fsp.open(path.join(this.dir, segmentName(seq)), 'a', FILE_MODE);
    const old = this._fh;
    this._fh = fh;
    this._segments.push(seq);
    this._size = 0;
    this._hasHard = false;
    await old.close().catch(() => {});
  }

  // The first WAL segment of a folder: empty, or holding meta.json's state (an earlier version's
  // folder), written whole under a temp name and renamed, so it is there entirely or not at all.
  async _startWal() {
    const legacy = this._legacy;
    if (legacy !== null && !isEngineState(legacy)) {
      throw makeError(`${path.join(this.dir, META_FILE)} does not hold an engine state; saveLog cannot extend it`,
        'ECORRUPT', { file: path.join(this.dir, META_FILE) });
    }
    const name = segmentName(1);
    let buf = Buffer.alloc(0);
    let it = null;
    if (legacy !== null) {
      it = prepare(stateAsDelta(legacy));
      buf = Buffer.concat([...hardFrame(it.hard), ...frame(it.payload)]);
    }
    await atomicWrite(this.dir, name, buf, TMP_PREFIX);
    if (it !== null) {
      this._hard = it.hard;
      this._hasHard = true;
      this._last = it.end;
      this._splice(1, it.from, it.count);
    }
    await atomicWrite(this.dir, META_FILE, WAL_MARK);
    this._legacy = null;
    this._segments = [1];
    this._fh = await fsp.open(path.join(this.dir, name), 'a', FILE_MODE);
    this._size = buf.length;
  }

  // saveMeta: with a WAL, the state goes into it as a delta that replaces the log; without, it
  // replaces meta.json (temp file, fsync, rename, fsync of the folder).
  async _saveState(state, json) {
    if (!this._opened) await this._open();
    if (this._fh !== null) {
      if (!isEngineState(state)) {
        throw makeError('saveMeta: this node keeps a WAL, which holds engine states ({ currentTerm, votedFor, log, ' +
          'peers }) only', 'EBADARGS');
      }
      await this._append([prepare(stateAsDelta(state))]);
      return;
    }
    await atomicWrite(this.dir, META_FILE, json);
    this._legacy = state;
  }
}

module.exports = { Wal, META_FILE, SEGMENT_PREFIX, segmentName };
