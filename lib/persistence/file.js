'use strict';

// A durable persistence plugin for skiff-rs (the skiff-algorithm persistence contract).
//
//   const createFilePersistence = require('skiff-rs/lib/persistence/file');
//   const persistence = createFilePersistence({ dir: '/var/lib/myapp/raft' });
//   Node({ id, transport, persistence });
//   persistence.stateMachine(id).get('some key');   // local read of the built-in key-value store
//
// One plugin object serves any number of node ids; each gets its own folder under `dir`
// (the id, %-encoded). In that folder:
//
//   meta.json       the engine's state (saveMeta/loadMeta), replaced atomically
//   checkpoint      the state machine as of some index: records { h: { v, gen, index } },
//                   { c: chunk } ..., { e: count }; replaced atomically (temp file, fsync, rename,
//                   fsync of the folder)
//   journal-<gen>   what happened after that checkpoint, append-only: { t: 1, i, c } (command c
//                   applied at index i) and { t: 2, i } (index i reached without a command).
//                   fdatasync'd before any callback; one write and one sync per batch of queued
//                   calls.
//
// Every record is [u32 length][u32 crc32][msgpack payload]. The applied index is the last valid
// journal record's (or the checkpoint's), so state and index are durable together. On load, a torn
// journal tail (a crash mid-append: a damaged record with no valid record after it) is cut off,
// and the plugin emits a `warning` (code ETORN). A damaged record FOLLOWED by valid ones is not a
// torn write but corruption: loading fails with ECORRUPT naming the file and the offset, and the
// file is left untouched. `gen` ties a journal to its checkpoint, so replacing the checkpoint and
// starting an empty journal is a single atomic step (the rename).
//
// Folders are created 0700 and files 0600: the state is the application's data.
//
// The state machine is the built-in key-value store (./kv-state-machine.js) unless `stateMachine`
// is given: a factory `(nodeId) => instance` or, for a single node id, an instance. See
// kv-state-machine.js for the interface (apply, snapshot, reset, restore).

const fs = require('node:fs');
const fsp = fs.promises;
const path = require('node:path');
const crypto = require('node:crypto');
const { makeError, optionError } = require('../errors');
const zlib = require('node:zlib');
const { Readable, Writable } = require('node:stream');
const { EventEmitter } = require('node:events');
const { Packr } = require('msgpackr');
const createKvStateMachine = require('./kv-state-machine');
const { openSnapshotRead } = require('./file/point-in-time');

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number', copyBuffers: true });

const FORMAT_VERSION = 1;
const HEADER_BYTES = 8;
const MAX_RECORD = 1024 * 1024 * 1024;
const READ_BLOCK = 256 * 1024;
const WRITE_BLOCK = 1024 * 1024;
const META_FILE = 'meta.json';
const CHECKPOINT_FILE = 'checkpoint';
const JOURNAL_PREFIX = 'journal-';
const TMP_MARK = '.tmp-';
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;

// ------------------------------------------------------------------ small helpers

let crc32 = typeof zlib.crc32 === 'function' ? (buf) => zlib.crc32(buf) : null;
if (!crc32) {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  crc32 = (buf) => {
    let c = -1;
    for (let i = 0; i < buf.length; i++) c = table[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
    return (c ^ -1) >>> 0;
  };
}

function isThenable(v) {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof v.then === 'function';
}

// Calls a user callback on a fresh stack, exactly once per call site.
function callBack(cb, ...args) {
  if (typeof cb !== 'function') return;
  process.nextTick(() => cb(...args));
}

// Calls back a queued journal operation, once.
function settle(op, err, result) {
  if (op.settled) return;
  op.settled = true;
  if (err) callBack(op.cb, err);
  else callBack(op.cb, null, result);
}

function encodeRecord(value) {
  const payload = packr.pack(value);
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt32BE(payload.length, 0);
  header.writeUInt32BE(crc32(payload), 4);
  return [header, payload];
}

/** A folder name for a node id: [A-Za-z0-9_-] kept, every other UTF-8 byte as %XX. */
function safeName(nodeId) {
  const id = String(nodeId);
  let out = '';
  for (const byte of Buffer.from(id, 'utf8')) {
    const ch = String.fromCharCode(byte);
    out += /[A-Za-z0-9_-]/.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  if (out === '') out = '%';
  if (out.length > 120) {
    out = `${out.slice(0, 64)}~${crypto.createHash('sha256').update(id).digest('hex').slice(0, 40)}`;
  }
  return out;
}

async function fsyncDir(dir) {
  let fh;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch (e) {
    // Some platforms (Windows) cannot open or sync a folder; there is nothing better to do there.
    if (!['EISDIR', 'EPERM', 'EINVAL', 'EBADF', 'EACCES'].includes(e.code)) throw e;
  } finally {
    if (fh) await fh.close().catch(() => {});
  }
}

function tmpName(name) {
  return `${name}${TMP_MARK}${process.pid}-${crypto.randomBytes(6).toString('hex')}`;
}

/** Buffered record writer over a FileHandle. */
class RecordWriter {
  constructor(fh) {
    this.fh = fh;
    this.parts = [];
    this.pending = 0;
    this.written = 0;
  }

  /** Adds a record; returns true when the caller should `await flush()`. */
  add(value) {
    const [header, payload] = encodeRecord(value);
    this.parts.push(header, payload);
    this.pending += header.length + payload.length;
    return this.pending >= WRITE_BLOCK;
  }

  async flush() {
    if (!this.pending) return;
    const buf = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.pending);
    this.parts = [];
    this.pending = 0;
    let off = 0;
    while (off < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, off, buf.length - off);
      off += bytesWritten;
    }
    this.written += buf.length;
  }
}

/** Sequential record reader over a FileHandle with a bounded buffer. */
class RecordReader {
  constructor(fh) {
    this.fh = fh;
    this.buf = Buffer.alloc(0);
    this.filePos = 0;
    this.eof = false;
    this.goodOffset = 0; // end of the last complete, valid record
    this.torn = false; // stopped at a damaged record (at goodOffset)
    this.why = null; // what was wrong with it
  }

  async _fill(n) {
    while (this.buf.length < n && !this.eof) {
      const want = Math.max(READ_BLOCK, n - this.buf.length);
      const block = Buffer.allocUnsafe(want);
      const { bytesRead } = await this.fh.read(block, 0, want, this.filePos);
      if (bytesRead === 0) {
        this.eof = true;
        break;
      }
      this.filePos += bytesRead;
      const got = block.subarray(0, bytesRead);
      this.buf = this.buf.length ? Buffer.concat([this.buf, got]) : got;
    }
  }

  /** The next decoded record, or null at the end (check `torn` for a damaged tail). */
  async next() {
    if (this.torn) return null;
    await this._fill(HEADER_BYTES);
    if (this.buf.length === 0) return null;
    if (this.buf.length < HEADER_BYTES) return this._tear('an incomplete record header');
    const len = this.buf.readUInt32BE(0);
    const crc = this.buf.readUInt32BE(4);
    if (len === 0 || len > MAX_RECORD) return this._tear(`an impossible record length ${len}`);
    await this._fill(HEADER_BYTES + len);
    if (this.buf.length < HEADER_BYTES + len) return this._tear('a record cut short by the end of the file');
    const payload = this.buf.subarray(HEADER_BYTES, HEADER_BYTES + len);
    if (crc32(payload) !== crc) return this._tear('a record whose checksum does not match');
    let value;
    try {
      value = packr.unpack(payload);
    } catch (_) {
      return this._tear('a record that does not decode');
    }
    this.buf = this.buf.subarray(HEADER_BYTES + len);
    if (this.buf.length === 0) this.buf = Buffer.alloc(0); // let the block go
    this.goodOffset += HEADER_BYTES + len;
    return value;
  }

  _tear(why) {
    this.torn = true;
    this.why = why;
    return null;
  }
}

/** Whether a whole, valid record starts anywhere in `buf` after its first byte. */
function hasValidRecord(buf) {
  for (let p = 1; p + HEADER_BYTES < buf.length; p++) {
    const len = buf.readUInt32BE(p);
    if (len === 0 || len > buf.length - p - HEADER_BYTES) continue;
    const payload = buf.subarray(p + HEADER_BYTES, p + HEADER_BYTES + len);
    if (crc32(payload) !== buf.readUInt32BE(p + 4)) continue;
    try {
      packr.unpack(payload);
      return true;
    } catch (_) { /* a checksum match by chance */ }
  }
  return false;
}

function corruptAt(file, offset, why) {
  return makeError(`${file} is corrupt at offset ${offset}: ${why}. The file was left as it is; ` +
    'restore this node from a backup or from its peers', 'ECORRUPT', { file, offset });
}

// ------------------------------------------------------------------ the plugin

const DEFAULT_OPTIONS = Object.freeze({
  compactBytes: 8 * 1024 * 1024, // journal size that triggers writing a new checkpoint
});

class FilePersistence extends EventEmitter {
  constructor(options) {
    super();
    if (!options || typeof options !== 'object') throw optionError('createFilePersistence needs { dir }');
    if (typeof options.dir !== 'string' || !options.dir) throw optionError('createFilePersistence: dir must be a folder path');
    this.dir = path.resolve(options.dir);
    this.compactBytes = options.compactBytes === undefined ? DEFAULT_OPTIONS.compactBytes : options.compactBytes;
    if (typeof this.compactBytes !== 'number' || !(this.compactBytes > 0)) {
      throw optionError('createFilePersistence: compactBytes must be a positive number');
    }
    const sm = options.stateMachine;
    if (sm === undefined || sm === null) {
      this._makeStateMachine = () => createKvStateMachine();
    } else if (typeof sm === 'function') {
      this._makeStateMachine = sm;
    } else if (typeof sm === 'object') {
      let owner = null;
      this._makeStateMachine = (nodeId) => {
        if (owner !== null && owner !== nodeId) {
          throw makeError('a stateMachine instance serves one node id; pass a factory (nodeId) => instance',
            'EPLUGIN');
        }
        owner = nodeId;
        return sm;
      };
    } else {
      throw optionError('createFilePersistence: stateMachine must be a factory function or an object');
    }
    this._nodes = new Map();
  }

  // -------------------------------------------------------------- node records

  _node(nodeId) {
    const key = String(nodeId);
    let node = this._nodes.get(key);
    if (!node) {
      node = {
        id: key,
        dir: path.join(this.dir, safeName(key)),
        dirReady: null,
        sm: null,
        // meta
        metaNext: null,
        metaCbs: [],
        metaBusy: false,
        metaIdle: [],
        metaCleaned: false,
        // state machine queue
        tasks: [],
        running: false,
        openFlush: null,
        compactQueued: false,
        loaded: false,
        gen: 0,
        hasCheckpoint: false,
        ckptIndex: 0,
        applied: 0,
        journal: null,
        journalBytes: 0,
        journalRecords: 0,
      };
      this._nodes.set(key, node);
    }
    return node;
  }

  // A `warning` event, or a process warning when nobody listens: either way, someone sees it.
  _warn(err) {
    if (this.listenerCount('warning') > 0) this.emit('warning', err);
    else process.emitWarning(err);
  }

  _stateMachineOf(node) {
    if (!node.sm) {
      const sm = this._makeStateMachine(node.id);
      for (const fn of ['apply', 'snapshot', 'reset', 'restore']) {
        if (!sm || typeof sm[fn] !== 'function') {
          throw makeError(`the state machine for ${node.id} has no ${fn}() method`, 'EPLUGIN');
        }
      }
      node.sm = sm;
    }
    return node.sm;
  }

  _ensureDir(node) {
    if (!node.dirReady) {
      node.dirReady = (async () => {
        await fsp.mkdir(this.dir, { recursive: true, mode: DIR_MODE });
        let created = false;
        try {
          await fsp.mkdir(node.dir, { mode: DIR_MODE });
          created = true;
        } catch (e) {
          if (e.code !== 'EEXIST') throw e;
        }
        if (created) await fsyncDir(this.dir);
      })();
      node.dirReady.catch(() => { node.dirReady = null; });
    }
    return node.dirReady;
  }

  async _removeTemps(node, prefix) {
    let names;
    try {
      names = await fsp.readdir(node.dir);
    } catch (e) {
      if (e.code === 'ENOENT') return;
      throw e;
    }
    for (const name of names) {
      if (name.startsWith(prefix + TMP_MARK)) await fsp.unlink(path.join(node.dir, name)).catch(() => {});
    }
  }

  async _atomicWrite(node, name, data) {
    const tmp = path.join(node.dir, tmpName(name));
    let fh = await fsp.open(tmp, 'w', FILE_MODE);
    try {
      await fh.writeFile(data);
      await fh.sync();
      await fh.close();
      fh = null;
      await fsp.rename(tmp, path.join(node.dir, name));
    } catch (e) {
      if (fh) await fh.close().catch(() => {});
      await fsp.unlink(tmp).catch(() => {});
      throw e;
    }
    await fsyncDir(node.dir);
  }

  // -------------------------------------------------------------- meta

  loadMeta(nodeId, cb) {
    const node = this._node(nodeId);
    const read = () => {
      this._readMeta(node).then((state) => callBack(cb, null, state), (err) => callBack(cb, err));
    };
    if (node.metaBusy) node.metaIdle.push(read);
    else read();
  }

  async _readMeta(node) {
    let text;
    try {
      text = await fsp.readFile(path.join(node.dir, META_FILE), 'utf8');
    } catch (e) {
      if (e.code === 'ENOENT') return null;
      throw e;
    }
    try {
      return JSON.parse(text);
    } catch (e) {
      throw makeError(`${path.join(node.dir, META_FILE)} is not valid JSON: ${e.message}`, 'ECORRUPT');
    }
  }

  saveMeta(nodeId, state, cb) {
    let json;
    try {
      json = JSON.stringify(state);
      if (typeof json !== 'string') throw makeError('state must be a JSON value', 'EBADARGS');
    } catch (e) {
      callBack(cb, e);
      return;
    }
    const node = this._node(nodeId);
    // Saves queued while one is being written collapse into the latest: a later save is never
    // overwritten by an earlier one, and every caller is called back once its state (or a newer
    // one) is durable.
    node.metaNext = json;
    node.metaCbs.push(cb);
    if (!node.metaBusy) this._pumpMeta(node);
  }

  async _pumpMeta(node) {
    node.metaBusy = true;
    while (node.metaNext !== null) {
      const json = node.metaNext;
      const cbs = node.metaCbs;
      node.metaNext = null;
      node.metaCbs = [];
      let err = null;
      try {
        await this._ensureDir(node);
        if (!node.metaCleaned) {
          await this._removeTemps(node, META_FILE);
          node.metaCleaned = true;
        }
        await this._atomicWrite(node, META_FILE, json);
      } catch (e) {
        err = e;
      }
      for (const cb of cbs) callBack(cb, err);
    }
    node.metaBusy = false;
    const idle = node.metaIdle;
    node.metaIdle = [];
    for (const fn of idle) fn();
  }

  // -------------------------------------------------------------- the state machine queue

  _enqueue(node, fn) {
    node.openFlush = null; // later applies must not jump ahead of this task
    return new Promise((resolve, reject) => {
      node.tasks.push({ fn, resolve, reject });
      if (!node.running) this._pump(node);
    });
  }

  async _pump(node) {
    node.running = true;
    while (node.tasks.length) {
      const task = node.tasks.shift();
      if (node.openFlush === task) node.openFlush = null;
      try {
        task.resolve(await task.fn());
      } catch (e) {
        task.reject(e);
      }
    }
    node.running = false;
  }

  // Journal operations queued back to back share one task: one write, one fdatasync.
  _journalOp(node, op) {
    if (node.openFlush) {
      node.openFlush.ops.push(op);
      return;
    }
    const ops = [op];
    const fn = () => this._flush(node, ops).catch((err) => {
      // Unexpected: reload before the next operation, and still call every caller back once.
      this._invalidate(node);
      for (const o of ops) settle(o, err);
    });
    const task = { ops, fn, resolve() {}, reject() {} };
    node.tasks.push(task);
    node.openFlush = task;
    if (!node.running) this._pump(node);
  }

  _invalidate(node) {
    node.loaded = false;
    const journal = node.journal;
    node.journal = null;
    if (journal) journal.close().catch(() => {});
  }

  async _ensureLoaded(node) {
    if (node.loaded) return;
    try {
      await this._load(node);
    } catch (e) {
      this._invalidate(node);
      throw e;
    }
  }

  async _load(node) {
    const sm = this._stateMachineOf(node);
    await this._ensureDir(node);
    if (node.journal) {
      await node.journal.close().catch(() => {});
      node.journal = null;
    }
    await this._removeTemps(node, CHECKPOINT_FILE);
    let r = sm.reset();
    if (isThenable(r)) await r;

    // The checkpoint.
    let gen = 0;
    let index = 0;
    let hasCheckpoint = false;
    let fh = null;
    try {
      fh = await fsp.open(path.join(node.dir, CHECKPOINT_FILE), 'r');
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
    if (fh) {
      try {
        const reader = new RecordReader(fh);
        const head = await reader.next();
        if (!head || !head.h || head.h.v !== FORMAT_VERSION) {
          throw makeError(`${node.dir}/${CHECKPOINT_FILE}: not a checkpoint of format ${FORMAT_VERSION}`, 'ECORRUPT');
        }
        gen = head.h.gen;
        index = head.h.index;
        let count = 0;
        for (;;) {
          const rec = await reader.next();
          if (!rec) {
            throw corruptAt(path.join(node.dir, CHECKPOINT_FILE), reader.goodOffset,
              reader.why || 'it ends before its last record');
          }
          if (rec.e !== undefined) {
            if (rec.e !== count) throw makeError(`${node.dir}/${CHECKPOINT_FILE}: wrong chunk count`, 'ECORRUPT');
            break;
          }
          count++;
          r = sm.restore(rec.c);
          if (isThenable(r)) await r;
        }
      } finally {
        await fh.close().catch(() => {});
      }
      hasCheckpoint = true;
    }

    // The journal that belongs to it.
    const journalName = `${JOURNAL_PREFIX}${gen}`;
    const journalPath = path.join(node.dir, journalName);
    let applied = index;
    let records = 0;
    let size = 0;
    let jfh = null;
    try {
      jfh = await fsp.open(journalPath, 'r+');
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
    if (jfh) {
      try {
        const reader = new RecordReader(jfh);
        // Damage before the last record fails the load with the file as it is (what was applied
        // to the state machine meanwhile is reset by the next load).
        for (;;) {
          const before = reader.goodOffset;
          const rec = await reader.next();
          if (!rec) break;
          if (typeof rec !== 'object' || !Number.isSafeInteger(rec.i)) {
            // Intact (its checksum matches) yet not a journal record: not a torn write.
            throw corruptAt(journalPath, before, 'a record that is not a journal entry');
          }
          records++;
          if (rec.i <= applied) continue;
          if (rec.t === 1) {
            r = sm.apply(rec.c, rec.i);
            if (isThenable(r)) await r;
          }
          applied = rec.i;
        }
        size = reader.goodOffset;
        const { size: fileSize } = await jfh.stat();
        if (reader.torn || fileSize > size) {
          const tail = Buffer.alloc(fileSize - size);
          if (tail.length) await jfh.read(tail, 0, tail.length, size);
          if (hasValidRecord(tail)) {
            throw corruptAt(journalPath, size, `${reader.why || 'bytes that are not a record'}, with valid records after it`);
          }
          // A crash in the middle of an append: the tail was never acknowledged; cut it off.
          await jfh.truncate(size);
          await jfh.sync();
          this._warn(makeError(`${journalPath}: cut off a torn last write at offset ${size} ` +
            `(${fileSize - size} bytes: ${reader.why || 'an incomplete record'}); it was never acknowledged`,
          'ETORN', { file: journalPath, offset: size }));
        }
      } finally {
        await jfh.close().catch(() => {});
      }
    }

    // Journals of other generations are leftovers of a crash during a checkpoint switch.
    for (const name of await fsp.readdir(node.dir)) {
      if (name.startsWith(JOURNAL_PREFIX) && name !== journalName) {
        await fsp.unlink(path.join(node.dir, name)).catch(() => {});
      }
    }

    node.journal = await fsp.open(journalPath, 'a', FILE_MODE);
    if (!jfh) await fsyncDir(node.dir); // the new journal's folder entry is durable before use
    node.gen = gen;
    node.hasCheckpoint = hasCheckpoint;
    node.ckptIndex = index;
    node.applied = applied;
    node.journalBytes = size;
    node.journalRecords = records;
    node.loaded = true;
  }

  async _flush(node, ops) {
    try {
      await this._ensureLoaded(node);
    } catch (e) {
      for (const op of ops) settle(op, e);
      return;
    }
    const sm = node.sm;
    const writer = new RecordWriter(node.journal);
    let applied = node.applied;
    let failure = null;
    let failedAt = ops.length;
    let records = 0;
    const results = new Array(ops.length);
    for (let k = 0; k < ops.length; k++) {
      const op = ops[k];
      if (op.index <= applied) continue; // already applied: a no-op
      const mark = writer.parts.length;
      try {
        if (op.type === 'apply') {
          writer.add({ t: 1, i: op.index, c: op.command }); // encode first: refuse before applying
          let result = sm.apply(op.command, op.index);
          if (isThenable(result)) result = await result;
          results[k] = result;
        } else {
          writer.add({ t: 2, i: op.index });
        }
      } catch (e) {
        failure = e;
        failedAt = k;
        // Drop the failed command's record if it was added: it never took effect.
        writer.parts.length = mark;
        writer.pending = writer.parts.reduce((n, b) => n + b.length, 0);
        break;
      }
      records++;
      applied = op.index;
    }
    let writeError = null;
    try {
      await writer.flush();
      if (writer.written) await node.journal.datasync();
    } catch (e) {
      writeError = e;
    }
    if (writeError || failure) this._invalidate(node); // memory may be ahead of the disk: reload
    if (!writeError) {
      node.applied = applied;
      node.journalBytes += writer.written;
      node.journalRecords += records;
    }
    for (let k = 0; k < ops.length; k++) {
      const op = ops[k];
      if (writeError) settle(op, writeError);
      else if (k < failedAt) settle(op, null, results[k]);
      else if (k === failedAt) settle(op, failure);
      else {
        settle(op, makeError(`not applied: the command at index ${ops[failedAt].index} failed`, 'EAPPLY',
          { cause: failure }));
      }
    }
    if (node.loaded && node.journalBytes >= this.compactBytes && !node.compactQueued) {
      node.compactQueued = true;
      this._enqueue(node, async () => {
        node.compactQueued = false;
        await this._ensureLoaded(node);
        await this._compact(node);
      }).catch(() => { /* the next operation reloads from disk */ });
    }
  }

  // Writes a new checkpoint (from `chunks`, at `index`) and switches to a fresh journal.
  async _beginCheckpoint(node, index) {
    const gen = node.gen + 1;
    const tmp = path.join(node.dir, tmpName(CHECKPOINT_FILE));
    const fh = await fsp.open(tmp, 'w', FILE_MODE);
    const writer = new RecordWriter(fh);
    writer.add({ h: { v: FORMAT_VERSION, gen, index } });
    let count = 0;
    let done = false;
    const self = this;
    return {
      async add(chunk) {
        if (chunk === null || chunk === undefined) return;
        count++;
        if (writer.add({ c: chunk })) await writer.flush();
      },
      async commit() {
        done = true;
        try {
          writer.add({ e: count });
          await writer.flush();
          await fh.sync();
          await fh.close();
        } catch (e) {
          await fh.close().catch(() => {});
          await fsp.unlink(tmp).catch(() => {});
          throw e;
        }
        try {
          await fsp.rename(tmp, path.join(node.dir, CHECKPOINT_FILE));
        } catch (e) {
          await fsp.unlink(tmp).catch(() => {});
          throw e;
        }
        // From here on the new checkpoint is the truth: its journal starts empty.
        const oldJournal = node.journal;
        const oldName = `${JOURNAL_PREFIX}${node.gen}`;
        node.journal = null;
        node.gen = gen;
        node.hasCheckpoint = true;
        node.ckptIndex = index;
        node.applied = index;
        node.journalBytes = 0;
        node.journalRecords = 0;
        if (oldJournal) await oldJournal.close().catch(() => {});
        try {
          await fsyncDir(node.dir);
          node.journal = await fsp.open(path.join(node.dir, `${JOURNAL_PREFIX}${gen}`), 'a', FILE_MODE);
          await fsyncDir(node.dir);
        } catch (e) {
          self._invalidate(node);
          throw e;
        }
        await fsp.unlink(path.join(node.dir, oldName)).catch(() => {});
      },
      async abort() {
        if (done) return;
        done = true;
        await fh.close().catch(() => {});
        await fsp.unlink(tmp).catch(() => {});
      },
    };
  }

  async _compact(node) {
    const builder = await this._beginCheckpoint(node, node.applied);
    try {
      const chunks = node.sm.snapshot();
      if (chunks && typeof chunks[Symbol.asyncIterator] === 'function') {
        for await (const chunk of chunks) await builder.add(chunk);
      } else {
        for (const chunk of chunks || []) await builder.add(chunk);
      }
    } catch (e) {
      await builder.abort();
      throw e;
    }
    await builder.commit();
  }

  // -------------------------------------------------------------- the contract

  applyCommand(nodeId, commitIndex, command, cb) {
    if (!Number.isSafeInteger(commitIndex) || commitIndex < 0) {
      callBack(cb, makeError(`commitIndex must be a non-negative integer, got ${commitIndex}`, 'EBADARGS'));
      return;
    }
    this._journalOp(this._node(nodeId), { type: 'apply', index: commitIndex, command, cb });
  }

  saveCommitIndex(nodeId, commitIndex, cb) {
    if (!Number.isSafeInteger(commitIndex) || commitIndex < 0) {
      callBack(cb, makeError(`commitIndex must be a non-negative integer, got ${commitIndex}`, 'EBADARGS'));
      return;
    }
    this._journalOp(this._node(nodeId), { type: 'index', index: commitIndex, cb });
  }

  lastAppliedCommitIndex(nodeId, cb) {
    const node = this._node(nodeId);
    this._enqueue(node, async () => {
      await this._ensureLoaded(node);
      return node.applied;
    }).then((index) => callBack(cb, null, index), (err) => callBack(cb, err));
  }

  removeAllState(nodeId, cb) {
    const node = this._node(nodeId);
    this._enqueue(node, async () => {
      await this._ensureLoaded(node);
      try {
        const r = node.sm.reset();
        if (isThenable(r)) await r;
        const builder = await this._beginCheckpoint(node, 0);
        await builder.commit();
      } catch (e) {
        this._invalidate(node);
        throw e;
      }
    }).then(() => callBack(cb, null), (err) => callBack(cb, err));
  }

  /**
   * Object-mode Readable of the state machine's chunks as of one index (`stream.lastIncludedIndex`,
   * set before the first chunk). Reads a checkpoint file, so memory stays bounded and applies go on
   * while it is consumed.
   */
  createReadStream(nodeId) {
    const node = this._node(nodeId);
    const self = this;
    let fh = null;
    let reader = null;
    let reading = false;
    // Queued now, so the cut is where this call stands among the node's operations.
    const opened = self._enqueue(node, async () => {
      await self._ensureLoaded(node);
      if (!node.hasCheckpoint || node.journalRecords > 0 || node.ckptIndex !== node.applied) {
        try {
          await self._compact(node);
        } catch (e) {
          self._invalidate(node);
          throw e;
        }
      }
      fh = await fsp.open(path.join(node.dir, CHECKPOINT_FILE), 'r');
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
   * The point-in-time extension: `cb(err, { index, stream })`, a read stream of the state machine
   * as of applied index `index`, however far applying goes while it is read. Taken from the state
   * machine's `pointInTime()` (the key-value store copies its map), else from a checkpoint.
   */
  createSnapshotReadStream(nodeId, cb) {
    let node;
    try {
      node = this._node(nodeId);
    } catch (e) {
      callBack(cb, e);
      return;
    }
    openSnapshotRead(
      (fn) => this._enqueue(node, async () => {
        await this._ensureLoaded(node);
        return fn();
      }),
      () => ({ sm: node.sm, applied: node.applied }),
      () => this.createReadStream(nodeId),
      cb);
  }

  /**
   * Object-mode Writable that replaces the state machine with the chunks written to it, in order.
   * Durable when it emits 'finish'. The applied index is then 0: record the snapshot's index with
   * saveCommitIndex. Other operations on this node wait until the stream finishes or is destroyed.
   */
  createWriteStream(nodeId) {
    const node = this._node(nodeId);
    const self = this;
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
    self._enqueue(node, async () => {
      await self._ensureLoaded(node);
      const r = node.sm.reset();
      if (isThenable(r)) await r;
      const held = new Promise((resolve) => { release = resolve; });
      try {
        builder = await self._beginCheckpoint(node, 0);
      } catch (e) {
        self._invalidate(node);
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
          const r = node.sm.restore(chunk);
          if (isThenable(r)) await r;
          await builder.add(chunk);
        })().then(() => callback(), (err) => callback(err));
      },
      final(callback) {
        builder.commit().then(() => {
          finished = true;
          callback();
        }, (err) => {
          self._invalidate(node);
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
        self._invalidate(node);
        builder.abort().then(done, done);
      },
    });
  }

  // -------------------------------------------------------------- extras

  /** The state machine instance of `nodeId` (the built-in key-value store unless configured). */
  stateMachine(nodeId) {
    return this._stateMachineOf(this._node(nodeId));
  }

  /** Loads `nodeId` from disk if needed; resolves (and calls back) with its state machine. */
  load(nodeId, cb) {
    const node = this._node(nodeId);
    const p = this._enqueue(node, async () => {
      await this._ensureLoaded(node);
      return node.sm;
    });
    if (typeof cb === 'function') p.then((sm) => callBack(cb, null, sm), (err) => callBack(cb, err));
    return p;
  }

  /** Waits for queued work and closes open files. Later calls reopen them. */
  close(cb) {
    const all = [];
    for (const node of this._nodes.values()) {
      all.push(this._enqueue(node, async () => {
        const journal = node.journal;
        node.journal = null;
        node.loaded = false;
        if (journal) await journal.close();
      }).catch(() => {}));
      if (node.metaBusy) all.push(new Promise((resolve) => node.metaIdle.push(resolve)));
    }
    const p = Promise.all(all).then(() => undefined);
    if (typeof cb === 'function') p.then(() => callBack(cb, null));
    return p;
  }
}

function createFilePersistence(options) {
  return new FilePersistence(options);
}

createFilePersistence.createFilePersistence = createFilePersistence;
createFilePersistence.FilePersistence = FilePersistence;
createFilePersistence.safeName = safeName;
module.exports = createFilePersistence;
