'use strict';

// The file persistence's on-disk framing: records of [u32 length][u32 crc32][payload], written
// in buffered blocks and read back with a bounded buffer, the test that tells a torn tail from
// corruption, and the small fs helpers every file of the plugin needs.

const fs = require('node:fs');
const fsp = fs.promises;
const path = require('node:path');
const crypto = require('node:crypto');
const zlib = require('node:zlib');
const { Packr } = require('msgpackr');
const { makeError } = require('../../errors');

const HEADER_BYTES = 8;
const MAX_RECORD = 1024 * 1024 * 1024;
const READ_BLOCK = 256 * 1024;
const WRITE_BLOCK = 1024 * 1024;
const TMP_MARK = '.tmp-';
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;

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

const packr = new Packr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number', copyBuffers: true });

/**
 * How a record's payload is encoded. msgpack for the state machine's files (commands may hold
 * Buffers); JSON for the engine's log, whose values came from JSON and must come back exactly
 * (msgpack would rename a `__proto__` key).
 */
const MSGPACK = Object.freeze({ encode: (value) => packr.pack(value), decode: (buf) => packr.unpack(buf) });
const JSON_CODEC = Object.freeze({
  encode: (value) => Buffer.from(JSON.stringify(value), 'utf8'),
  decode: (buf) => JSON.parse(buf.toString('utf8')),
});

function isThenable(v) {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof v.then === 'function';
}

// Calls a user callback on a fresh stack.
function callBack(cb, ...args) {
  if (typeof cb !== 'function') return;
  process.nextTick(() => cb(...args));
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

/**
 * Replaces (or creates) `dir/name` with `data` atomically: a temp file (named after `tmpPrefix`)
 * written and fsync'd, renamed over `name`, then the folder fsync'd.
 */
async function atomicWrite(dir, name, data, tmpPrefix = name) {
  const tmp = path.join(dir, tmpName(tmpPrefix));
  let fh = await fsp.open(tmp, 'w', FILE_MODE);
  try {
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = null;
    await fsp.rename(tmp, path.join(dir, name));
  } catch (e) {
    if (fh) await fh.close().catch(() => {});
    await fsp.unlink(tmp).catch(() => {});
    throw e;
  }
  await fsyncDir(dir);
}

// Writes all of `buf` at the file's current position (appending for a file opened 'a').
async function writeAll(fh, buf) {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
}

/** The header that frames `payload` as a record: its length and its crc32. */
function frameHeader(payload) {
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt32BE(payload.length, 0);
  header.writeUInt32BE(crc32(payload), 4);
  return header;
}

/** Buffered record writer over a FileHandle. */
class RecordWriter {
  constructor(fh, codec = MSGPACK) {
    this.fh = fh;
    this.codec = codec;
    this.parts = [];
    this.pending = 0;
    this.written = 0;
  }

  /** Adds a record; returns true when the caller should `await flush()`. */
  add(value) {
    const payload = this.codec.encode(value);
    const header = frameHeader(payload);
    this.parts.push(header, payload);
    this.pending += header.length + payload.length;
    return this.pending >= WRITE_BLOCK;
  }

  /** Forgets the records added since `mark` (this.parts.length then) and not yet flushed. */
  dropFrom(mark) {
    this.parts.length = mark;
    this.pending = this.parts.reduce((n, b) => n + b.length, 0);
  }

  async flush() {
    if (!this.pending) return;
    const buf = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.pending);
    this.parts = [];
    this.pending = 0;
    await writeAll(this.fh, buf);
    this.written += buf.length;
  }
}

/** Sequential record reader over a FileHandle with a bounded buffer. */
class RecordReader {
  constructor(fh, codec = MSGPACK) {
    this.fh = fh;
    this.codec = codec;
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
      value = this.codec.decode(payload);
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
function hasValidRecord(buf, codec = MSGPACK) {
  for (let p = 1; p + HEADER_BYTES < buf.length; p++) {
    const len = buf.readUInt32BE(p);
    if (len === 0 || len > buf.length - p - HEADER_BYTES) continue;
    const payload = buf.subarray(p + HEADER_BYTES, p + HEADER_BYTES + len);
    if (crc32(payload) !== buf.readUInt32BE(p + 4)) continue;
    try {
      codec.decode(payload);
      return true;
    } catch (_) { /* a checksum match by chance */ }
  }
  return false;
}

function corruptAt(file, offset, why) {
  return makeError(`${file} is corrupt at offset ${offset}: ${why}. The file was left as it is; ` +
    'restore this node from a backup or from its peers', 'ECORRUPT', { file, offset });
}

/**
 * After reading `file` (open as `fh`) with `reader` to its end: a damaged tail with no valid
 * record after it is a write a crash cut short, never acknowledged: it is cut off (and the
 * returned ETORN error is for the caller to warn with). Damage followed by valid records is
 * corruption: ECORRUPT is thrown and the file left untouched. Returns null when the file is whole.
 */
async function cutTornTail(fh, file, reader, codec = MSGPACK) {
  const size = reader.goodOffset;
  const { size: fileSize } = await fh.stat();
  if (!reader.torn && fileSize <= size) return null;
  const tail = Buffer.alloc(fileSize - size);
  if (tail.length) await fh.read(tail, 0, tail.length, size);
  if (hasValidRecord(tail, codec)) {
    throw corruptAt(file, size, `${reader.why || 'bytes that are not a record'}, with valid records after it`);
  }
  await fh.truncate(size);
  await fh.sync();
  return makeError(`${file}: cut off a torn last write at offset ${size} ` +
    `(${fileSize - size} bytes: ${reader.why || 'an incomplete record'}); it was never acknowledged`,
  'ETORN', { file, offset: size });
}

module.exports = {
  HEADER_BYTES, TMP_MARK, DIR_MODE, FILE_MODE, MSGPACK, JSON_CODEC,
  crc32, frameHeader, isThenable, callBack, fsyncDir, tmpName, atomicWrite, writeAll, RecordWriter, RecordReader, hasValidRecord,
  corruptAt, cutTornTail,
};
