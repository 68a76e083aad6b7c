'use strict';

// The file persistence's state machine, one per node id: the checkpoint (the state machine as of
// some index) and the journal of what was applied after it, fed in batches (one write and one
// fdatasync per batch of queued calls), loaded back on first use, and compacted into a new
// checkpoint when the journal grows past `compactBytes`.
//
//   checkpoint      records { h: { v, gen, index } }, { c: chunk } ..., { e: count }; replaced
//                   atomically (temp file, fsync, rename, fsync of the folder)
//   journal-<gen>   append-only: { t: 1, i, c } (command c applied at index i), { t: 2, i } (index
//                   i reached without a command), { t: 3, i, b: [[index, command], ...] } (a batch
//                   of commands, i its last index)
//
// The applied index is the last valid journal record's (or the checkpoint's), so state and index
// are durable together. `gen` ties a journal to its checkpoint, so replacing the checkpoint and
// starting an empty journal is a single atomic step (the rename).

const fsp = require('node:fs').promises;
const path = require('node:path');
const { makeError } = require('../../errors');
const {
  FILE_MODE, isThenable, callBack, fsyncDir, tmpName, RecordWriter, RecordReader, corruptAt, cutTornTail,
} = require('./records');

const FORMAT_VERSION = 1;
const CHECKPOINT_FILE = 'checkpoint';
const JOURNAL_PREFIX = 'journal-';

// Calls `op` back once: with `err` and, for a batch that failed partway, `result` the results of
// the commands before the failed one (they took effect, and the record holds them).
function settle(op, err, result) {
  if (op.settled) return;
  op.settled = true;
  if (err && result === undefined) callBack(op.cb, err);
  else callBack(op.cb, err || null, result);
}

// The index a journal operation names (a batch: its first).
function opIndex(op) {
  return op.type === 'batch' ? op.items[0].index : op.index;
}

class Journal {
  /**
   * @param {object} o
   * @param {string} o.dir                   the node's folder
   * @param {() => Promise} o.ensureDir      creates the folder (once)
   * @param {(prefix) => Promise} o.removeTemps  removes leftover temp files of `prefix`
   * @param {() => object} o.stateMachine    the node's state machine instance
   * @param {(err) => void} o.warn           reports a warning
   * @param {number} o.compactBytes          journal size that triggers a new checkpoint
   */
  constructor(o) {
    this.dir = o.dir;
    this._ensureDir = o.ensureDir;
    this._removeTemps = o.removeTemps;
    this._stateMachineOf = o.stateMachine;
    this._warn = o.warn;
    this.compactBytes = o.compactBytes;
    this.sm = null; // set by the first load
    // The operation queue: every task runs alone, in order. `openFlush` is the last queued
    // journal task while nothing was queued behind it: journal operations join it.
    this.tasks = [];
    this.running = false;
    this.openFlush = null;
    this.compactQueued = false;
    // What is on disk, valid while `loaded`: the checkpoint's generation and index, the applied
    // index, and the open journal (appending) with its size and record count.
    this.loaded = false;
    this.gen = 0;
    this.hasCheckpoint = false;
    this.ckptIndex = 0;
    this.applied = 0;
    this.journal = null;
    this.journalBytes = 0;
    this.journalRecords = 0;
  }

  /** Queues journal operation `op` ({ type: 'apply' | 'index' | 'batch', index | items, cb }). */
  add(op) {
    this._journalOp(op);
  }

  /** Queues `fn` to run alone once what is queued before it is done; resolves with its result. */
  run(fn) {
    return this._enqueue(fn);
  }

  /** removeAllState (run in the queue): an empty state machine and a new, empty checkpoint. */
  async clear() {
    await this._ensureLoaded();
    try {
      const r = this.sm.reset();
      if (isThenable(r)) await r;
      const builder = await this._beginCheckpoint(0);
      await builder.commit();
    } catch (e) {
      this._invalidate();
      throw e;
    }
  }

  /** Waits for queued work and closes the journal; a later operation reopens it. */
  close() {
    return this._enqueue(async () => {
      const journal = this.journal;
      this.journal = null;
      this.loaded = false;
      if (journal) await journal.close();
    });
  }

  _enqueue(fn) {
    this.openFlush = null; // later applies must not jump ahead of this task
    return new Promise((resolve, reject) => {
      this.tasks.push({ fn, resolve, reject });
      if (!this.running) this._pump();
    });
  }

  async _pump() {
    this.running = true;
    while (this.tasks.length) {
      const task = this.tasks.shift();
      if (this.openFlush === task) this.openFlush = null;
      try {
        task.resolve(await task.fn());
      } catch (e) {
        task.reject(e);
      }
    }
    this.running = false;
  }

  // Journal operations queued back to back share one task: one write, one fdatasync.
  _journalOp(op) {
    if (this.openFlush) {
      this.openFlush.ops.push(op);
      return;
    }
    const ops = [op];
    const fn = () => this._flush(ops).catch((err) => {
      // Unexpected: reload before the next operation, and still call every caller back once.
      this._invalidate();
      for (const o of ops) settle(o, err);
    });
    const task = { ops, fn, resolve() {}, reject() {} };
    this.tasks.push(task);
    this.openFlush = task;
    if (!this.running) this._pump();
  }

  _invalidate() {
    this.loaded = false;
    const journal = this.journal;
    this.journal = null;
    if (journal) journal.close().catch(() => {});
  }

  async _ensureLoaded() {
    if (this.loaded) return;
    try {
      await this._load();
    } catch (e) {
      this._invalidate();
      throw e;
    }
  }

  async _load() {
    const sm = this._stateMachineOf();
    this.sm = sm;
    await this._ensureDir();
    if (this.journal) {
      await this.journal.close().catch(() => {});
      this.journal = null;
    }
    await this._removeTemps(CHECKPOINT_FILE);
    let r = sm.reset();
    if (isThenable(r)) await r;

    // The checkpoint.
    let gen = 0;
    let index = 0;
    let hasCheckpoint = false;
    let fh = null;
    try {
      fh = await fsp.open(path.join(this.dir, CHECKPOINT_FILE), 'r');
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
    if (fh) {
      try {
        const reader = new RecordReader(fh);
        const head = await reader.next();
        if (!head || !head.h || head.h.v !== FORMAT_VERSION) {
          throw makeError(`${this.dir}/${CHECKPOINT_FILE}: not a checkpoint of format ${FORMAT_VERSION}`, 'ECORRUPT');
        }
        gen = head.h.gen;
        index = head.h.index;
        let count = 0;
        for (;;) {
          const rec = await reader.next();
          if (!rec) {
            throw corruptAt(path.join(this.dir, CHECKPOINT_FILE), reader.goodOffset,
              reader.why || 'it ends before its last record');
          }
          if (rec.e !== undefined) {
            if (rec.e !== count) throw makeError(`${this.dir}/${CHECKPOINT_FILE}: wrong chunk count`, 'ECORRUPT');
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
    const journalPath = path.join(this.dir, journalName);
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
          if (rec.t === 3 && !Array.isArray(rec.b)) throw corruptAt(journalPath, before, 'a batch record without its batch');
          records++;
          if (rec.i <= applied) continue;
          if (rec.t === 1) {
            r = sm.apply(rec.c, rec.i);
            if (isThenable(r)) await r;
          } else if (rec.t === 3) {
            for (const item of rec.b) {
              if (!Array.isArray(item) || !Number.isSafeInteger(item[0])) {
                throw corruptAt(journalPath, before, 'a batch record with an item that is not [index, command]');
              }
              if (item[0] <= applied) continue;
              r = sm.apply(item[1], item[0]);
              if (isThenable(r)) await r;
              applied = item[0];
            }
          }
          applied = rec.i;
        }
        size = reader.goodOffset;
        // A crash in the middle of an append: the tail was never acknowledged; cut it off.
        const torn = await cutTornTail(jfh, journalPath, reader);
        if (torn) this._warn(torn);
      } finally {
        await jfh.close().catch(() => {});
      }
    }

    // Journals of other generations are leftovers of a crash during a checkpoint switch.
    for (const name of await fsp.readdir(this.dir)) {
      if (name.startsWith(JOURNAL_PREFIX) && name !== journalName) {
        await fsp.unlink(path.join(this.dir, name)).catch(() => {});
      }
    }

    this.journal = await fsp.open(journalPath, 'a', FILE_MODE);
    if (!jfh) await fsyncDir(this.dir); // the new journal's folder entry is durable before use
    this.gen = gen;
    this.hasCheckpoint = hasCheckpoint;
    this.ckptIndex = index;
    this.applied = applied;
    this.journalBytes = size;
    this.journalRecords = records;
    this.loaded = true;
  }

  async _flush(ops) {
    try {
      await this._ensureLoaded();
    } catch (e) {
      for (const op of ops) settle(op, e);
      return;
    }
    const sm = this.sm;
    const writer = new RecordWriter(this.journal);
    let applied = this.applied;
    let failure = null;
    let failedAt = ops.length;
    let partial; // the results of the commands a failed batch applied before its failure
    let records = 0;
    const results = new Array(ops.length);
    for (let k = 0; k < ops.length; k++) {
      const op = ops[k];
      const mark = writer.parts.length;
      try {
        if (op.type === 'batch') {
          let start = 0;
          while (start < op.items.length && op.items[start].index <= applied) start++;
          const items = op.items.slice(start); // the ones before are already applied: no-ops
          results[k] = new Array(op.items.length).fill(undefined);
          if (items.length === 0) continue;
          // encode first: refuse before applying
          writer.add({ t: 3, i: items[items.length - 1].index, b: items.map((item) => [item.index, item.command]) });
          let done = 0;
          try {
            for (const item of items) {
              let result = sm.apply(item.command, item.index);
              if (isThenable(result)) result = await result;
              results[k][start + done] = result;
              done++;
            }
          } finally {
            if (done < items.length) {
              // the record holds what took effect, and what failed is left out
              partial = results[k].slice(0, start + done);
              writer.dropFrom(mark);
              if (done > 0) {
                const took = items.slice(0, done);
                writer.add({ t: 3, i: took[done - 1].index, b: took.map((item) => [item.index, item.command]) });
                records++;
                applied = took[done - 1].index;
              }
            }
          }
          applied = items[items.length - 1].index;
        } else {
          if (op.index <= applied) continue; // already applied: a no-op
          if (op.type === 'apply') {
            writer.add({ t: 1, i: op.index, c: op.command }); // encode first: refuse before applying
            let result = sm.apply(op.command, op.index);
            if (isThenable(result)) result = await result;
            results[k] = result;
          } else {
            writer.add({ t: 2, i: op.index });
          }
          applied = op.index;
        }
      } catch (e) {
        failure = e;
        failedAt = k;
        // Drop the failed command's record if it was added: it never took effect.
        if (op.type !== 'batch') writer.dropFrom(mark);
        break;
      }
      records++;
    }
    let writeError = null;
    try {
      await writer.flush();
      if (writer.written) await this.journal.datasync();
    } catch (e) {
      writeError = e;
    }
    if (writeError || failure) this._invalidate(); // memory may be ahead of the disk: reload
    if (!writeError) {
      this.applied = applied;
      this.journalBytes += writer.written;
      this.journalRecords += records;
    }
    for (let k = 0; k < ops.length; k++) {
      const op = ops[k];
      if (writeError) settle(op, writeError);
      else if (k < failedAt) settle(op, null, results[k]);
      else if (k === failedAt) settle(op, failure, partial);
      else {
        settle(op, makeError(`not applied: the command at index ${opIndex(ops[failedAt])} failed`, 'EAPPLY',
          { cause: failure }));
      }
    }
    if (this.loaded && this.journalBytes >= this.compactBytes && !this.compactQueued) {
      this.compactQueued = true;
      this._enqueue(async () => {
        this.compactQueued = false;
        await this._ensureLoaded();
        await this._compact();
      }).catch(() => { /* the next operation reloads from disk */ });
    }
  }

  // Writes a new checkpoint (from `chunks`, at `index`) and switches to a fresh journal.
  async _beginCheckpoint(index) {
    const gen = this.gen + 1;
    const tmp = path.join(this.dir, tmpName(CHECKPOINT_FILE));
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
          await fsp.rename(tmp, path.join(self.dir, CHECKPOINT_FILE));
        } catch (e) {
          await fsp.unlink(tmp).catch(() => {});
          throw e;
        }
        // From here on the new checkpoint is the truth: its journal starts empty.
        const oldJournal = self.journal;
        const oldName = `${JOURNAL_PREFIX}${self.gen}`;
        self.journal = null;
        self.gen = gen;
        self.hasCheckpoint = true;
        self.ckptIndex = index;
        self.applied = index;
        self.journalBytes = 0;
        self.journalRecords = 0;
        if (oldJournal) await oldJournal.close().catch(() => {});
        try {
          await fsyncDir(self.dir);
          self.journal = await fsp.open(path.join(self.dir, `${JOURNAL_PREFIX}${gen}`), 'a', FILE_MODE);
          await fsyncDir(self.dir);
        } catch (e) {
          self._invalidate();
          throw e;
        }
        await fsp.unlink(path.join(self.dir, oldName)).catch(() => {});
      },
      async abort() {
        if (done) return;
        done = true;
        await fh.close().catch(() => {});
        await fsp.unlink(tmp).catch(() => {});
      },
    };
  }

  async _compact() {
    const builder = await this._beginCheckpoint(this.applied);
    try {
      const chunks = this.sm.snapshot();
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

}

module.exports = { Journal, CHECKPOINT_FILE };
