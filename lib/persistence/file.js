'use strict';

// A durable persistence plugin for skiff-rs (the skiff-algorithm persistence contract, and the
// incremental extension: saveLog and applyCommands).
//
//   const createFilePersistence = require('skiff-rs/lib/persistence/file');
//   const persistence = createFilePersistence({ dir: '/var/lib/myapp/raft' });
//   Node({ id, transport, persistence });
//   persistence.stateMachine(id).get('some key');   // local read of the built-in key-value store
//
// One plugin object serves any number of node ids; each gets its own folder under `dir` (the id,
// %-encoded), created 0700 with files 0600: the state is the application's data. In that folder:
//
//   wal-<seq>, meta.json     the engine's state (./file/wal.js): a segmented write-ahead log
//                            written by saveLog; meta.json while only saveMeta has written
//   checkpoint, journal-<gen>   the state machine (./file/journal.js)
//
// Every record is [u32 length][u32 crc32][payload] (./file/records.js). On load, a torn tail (a
// crash mid-append: a damaged record with no valid record after it) is cut off, and the plugin
// emits a `warning` (code ETORN). A damaged record FOLLOWED by valid ones is not a torn write but
// corruption: loading fails with ECORRUPT naming the file and the offset, and the file is left
// untouched.
//
// The state machine is the built-in key-value store (./kv-state-machine.js) unless `stateMachine`
// is given: a factory `(nodeId) => instance` or, for a single node id, an instance. See
// kv-state-machine.js for the interface (apply, snapshot, reset, restore).

const fsp = require('node:fs').promises;
const path = require('node:path');
const crypto = require('node:crypto');
const { EventEmitter } = require('node:events');
const { makeError, optionError } = require('../errors');
const createKvStateMachine = require('./kv-state-machine');
const { TMP_MARK, DIR_MODE, callBack, fsyncDir } = require('./file/records');
const { Journal } = require('./file/journal');
const { Wal } = require('./file/wal');
const { createReadStream, createSnapshotReadStream, createWriteStream } = require('./file/snapshot-streams');

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

function checkIndex(commitIndex, cb) {
  if (Number.isSafeInteger(commitIndex) && commitIndex >= 0) return true;
  callBack(cb, makeError(`commitIndex must be a non-negative integer, got ${commitIndex}`, 'EBADARGS'));
  return false;
}

const DEFAULT_OPTIONS = Object.freeze({
  compactBytes: 8 * 1024 * 1024, // journal size that triggers writing a new checkpoint
  segmentBytes: 4 * 1024 * 1024, // WAL segment size after which a new segment starts
});

function positive(options, name) {
  const v = options[name] === undefined ? DEFAULT_OPTIONS[name] : options[name];
  if (typeof v !== 'number' || !(v > 0)) throw optionError(`createFilePersistence: ${name} must be a positive number`);
  return v;
}

class FilePersistence extends EventEmitter {
  constructor(options) {
    super();
    if (!options || typeof options !== 'object') throw optionError('createFilePersistence needs { dir }');
    if (typeof options.dir !== 'string' || !options.dir) throw optionError('createFilePersistence: dir must be a folder path');
    this.dir = path.resolve(options.dir);
    this.compactBytes = positive(options, 'compactBytes');
    this.segmentBytes = positive(options, 'segmentBytes');
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

  // The record of node `nodeId`: its folder, state machine, WAL (engine state) and Journal.
  _node(nodeId) {
    const key = String(nodeId);
    let node = this._nodes.get(key);
    if (!node) {
      node = { id: key, dir: path.join(this.dir, safeName(key)), dirReady: null, sm: null, wal: null, journal: null };
      const shared = {
        dir: node.dir,
        ensureDir: () => this._ensureDir(node),
        removeTemps: (prefix) => this._removeTemps(node, prefix),
        warn: (err) => this._warn(err),
      };
      node.wal = new Wal(Object.assign({ segmentBytes: this.segmentBytes }, shared));
      node.journal = new Journal(Object.assign({
        compactBytes: this.compactBytes,
        stateMachine: () => this._stateMachineOf(node),
      }, shared));
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

  // -------------------------------------------------------------- the engine's state

  loadMeta(nodeId, cb) {
    this._node(nodeId).wal.load(cb);
  }

  /**
   * Saves queued while one is being written collapse into the latest: a later save is never
   * overwritten by an earlier one, and every caller is called back once its state (or a newer
   * one) is durable.
   */
  saveMeta(nodeId, state, cb) {
    this._node(nodeId).wal.saveMeta(state, cb);
  }

  /**
   * The incremental extension: appends `delta` ({ currentTerm, votedFor, peers, meta,
   * truncateFrom, entries }) to the node's WAL. Calls queued together share one write and one
   * fdatasync.
   */
  saveLog(nodeId, delta, cb) {
    this._node(nodeId).wal.saveLog(delta, cb);
  }

  // -------------------------------------------------------------- the state machine

  applyCommand(nodeId, commitIndex, command, cb) {
    if (!checkIndex(commitIndex, cb)) return;
    this._node(nodeId).journal.add({ type: 'apply', index: commitIndex, command, cb });
  }

  /**
   * The incremental extension: applies `[{ index, command }]` in order, one journal record for
   * the batch; calls back with the commands' results.
   */
  applyCommands(nodeId, batch, cb) {
    if (!Array.isArray(batch) || batch.length === 0 ||
      !batch.every((b, k) => b !== null && typeof b === 'object' && Number.isSafeInteger(b.index) && b.index >= 0 &&
        (k === 0 || b.index > batch[k - 1].index))) {
      callBack(cb, makeError('applyCommands needs a non-empty array of { index, command }, in index order', 'EBADARGS'));
      return;
    }
    const items = batch.map((b) => ({ index: b.index, command: b.command }));
    this._node(nodeId).journal.add({ type: 'batch', items, cb });
  }

  saveCommitIndex(nodeId, commitIndex, cb) {
    if (!checkIndex(commitIndex, cb)) return;
    this._node(nodeId).journal.add({ type: 'index', index: commitIndex, cb });
  }

  lastAppliedCommitIndex(nodeId, cb) {
    const journal = this._node(nodeId).journal;
    journal.run(async () => {
      await journal._ensureLoaded();
      return journal.applied;
    }).then((index) => callBack(cb, null, index), (err) => callBack(cb, err));
  }

  removeAllState(nodeId, cb) {
    const journal = this._node(nodeId).journal;
    journal.run(() => journal.clear()).then(() => callBack(cb, null), (err) => callBack(cb, err));
  }

  /**
   * Object-mode Readable of the state machine's chunks as of one index (`stream.lastIncludedIndex`,
   * set before the first chunk). Reads a checkpoint file, so memory stays bounded and applies go on
   * while it is consumed.
   */
  createReadStream(nodeId) {
    return createReadStream(this._node(nodeId).journal);
  }

  /**
   * The point-in-time extension: `cb(err, { index, stream })`, a read stream of the state machine
   * as of applied index `index`, however far applying goes while it is read.
   */
  createSnapshotReadStream(nodeId, cb) {
    let journal;
    try {
      journal = this._node(nodeId).journal;
    } catch (e) {
      callBack(cb, e);
      return;
    }
    createSnapshotReadStream(journal, cb);
  }

  /**
   * Object-mode Writable that replaces the state machine with the chunks written to it, in order.
   * Durable when it emits 'finish'. The applied index is then 0: record the snapshot's index with
   * saveCommitIndex. Other operations on this node wait until the stream finishes or is destroyed.
   */
  createWriteStream(nodeId) {
    return createWriteStream(this._node(nodeId).journal);
  }

  // -------------------------------------------------------------- extras

  /** The state machine instance of `nodeId` (the built-in key-value store unless configured). */
  stateMachine(nodeId) {
    return this._stateMachineOf(this._node(nodeId));
  }

  /** Loads `nodeId` from disk if needed; resolves (and calls back) with its state machine. */
  load(nodeId, cb) {
    const journal = this._node(nodeId).journal;
    const p = journal.run(async () => {
      await journal._ensureLoaded();
      return journal.sm;
    });
    if (typeof cb === 'function') p.then((sm) => callBack(cb, null, sm), (err) => callBack(cb, err));
    return p;
  }

  /** Waits for queued work and closes open files. Later calls reopen them. */
  close(cb) {
    const all = [];
    for (const node of this._nodes.values()) {
      all.push(node.journal.close().catch(() => {}));
      all.push(node.wal.close());
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
