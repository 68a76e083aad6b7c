'use strict';

// The bytes of the wire: every frame is a 4-byte big-endian payload length followed by a msgpack
// payload of plain data only (maps with string keys, arrays, strings, binary, numbers, booleans,
// nil: no extension types), checked byte by byte before msgpackr decodes it. Also the reading and
// writing of frames on a socket, with the size limits.

const { Packr } = require('msgpackr');
const { makeError } = require('../../errors');

const MAX_DEPTH = 128; // nesting of maps and arrays in one frame (JSON parsers stop near there too)

// Plain msgpack both ways: no records, no structured clone, undefined as nil. The byte check
// (`scanMsgpack`) refuses every extension type before msgpackr sees a frame.
const packr = new Packr({
  useRecords: false,
  structuredClone: false,
  moreTypes: false,
  bundleStrings: false,
  mapsAsObjects: true,
  encodeUndefinedAsNil: true,
  int64AsType: 'number',
});

function badFrame(what) {
  return makeError(`malformed frame: ${what}`, 'EBADFRAME');
}

/**
 * Walks one msgpack value in `buf` without building anything and throws EBADFRAME unless it is
 * plain data: maps with string keys, arrays, strings, binary, numbers, booleans, nil; no
 * extension types; nested at most MAX_DEPTH deep; exactly filling `buf`. After this, decoding
 * allocates in proportion to the frame's bytes and nothing in it refers to anything else.
 */
function scanMsgpack(buf) {
  const end = buf.length;
  const left = []; // items still to read in each open container (a map's keys and values both count)
  const isMap = [];
  let depth = 0;
  let pos = 0;
  const need = (k) => {
    if (end - pos < k) throw badFrame('truncated');
  };
  for (;;) {
    let key = false;
    if (depth > 0) {
      key = isMap[depth - 1] && left[depth - 1] % 2 === 0;
      left[depth - 1]--;
    }
    need(1);
    const t = buf[pos++];
    if (key && !((t >= 0xa0 && t <= 0xbf) || t === 0xd9 || t === 0xda || t === 0xdb)) {
      throw badFrame('a map key that is not a string');
    }
    let n = 0; // items of a container
    let map = false;
    let skip = 0;
    if (t <= 0x7f || t >= 0xe0) {
      // fixint
    } else if (t <= 0x8f) {
      n = (t & 0x0f) * 2;
      map = true;
    } else if (t <= 0x9f) {
      n = t & 0x0f;
    } else if (t <= 0xbf) {
      skip = t & 0x1f;
    } else {
      switch (t) {
        case 0xc0: case 0xc2: case 0xc3: break; // nil, false, true
        case 0xc4: case 0xd9: need(1); skip = buf[pos]; pos += 1; break; // bin8, str8
        case 0xc5: case 0xda: need(2); skip = buf.readUInt16BE(pos); pos += 2; break; // bin16, str16
        case 0xc6: case 0xdb: need(4); skip = buf.readUInt32BE(pos); pos += 4; break; // bin32, str32
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xca: case 0xce: case 0xd2: skip = 4; break;
        case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
        case 0xdc: need(2); n = buf.readUInt16BE(pos); pos += 2; break; // array16
        case 0xdd: need(4); n = buf.readUInt32BE(pos); pos += 4; break; // array32
        case 0xde: need(2); n = buf.readUInt16BE(pos) * 2; pos += 2; map = true; break; // map16
        case 0xdf: need(4); n = buf.readUInt32BE(pos) * 2; pos += 4; map = true; break; // map32
        default:
          throw badFrame(`msgpack type 0x${t.toString(16)} (extensions are not accepted)`);
      }
    }
    if (skip) {
      need(skip);
      pos += skip;
    }
    if (n > 0) {
      if (n > end - pos) throw badFrame('truncated'); // every item takes at least one byte
      if (depth >= MAX_DEPTH) throw badFrame(`nested deeper than ${MAX_DEPTH}`);
      left[depth] = n;
      isMap[depth] = map;
      depth++;
      continue;
    }
    while (depth > 0 && left[depth - 1] === 0) depth--;
    if (depth === 0) break;
  }
  if (pos !== end) throw badFrame('trailing bytes');
}

function encodeFrame(message, maxFrameSize) {
  let payload;
  try {
    payload = packr.pack(message);
    // The receiver refuses anything but plain data; refuse it here, where the caller hears why.
    scanMsgpack(payload);
  } catch (e) {
    throw makeError(`message cannot be sent: ${e && e.message}`, 'EBADARGS');
  }
  if (payload.length > maxFrameSize) {
    throw makeError(`message of ${payload.length} bytes exceeds the maximum frame size (${maxFrameSize})`, 'EFRAMETOOLARGE');
  }
  const header = Buffer.allocUnsafe(4);
  header.writeUInt32BE(payload.length, 0);
  return [header, payload];
}

// Splits a byte stream into frames; never holds more than one frame plus one socket chunk.
class FrameDecoder {
  constructor(maxFrameSize) {
    this.max = maxFrameSize; // raised from maxHelloSize to maxFrameSize once the handshake is over
    this.chunks = [];
    this.length = 0;
    this.need = -1; // payload length of the frame being assembled, -1 while reading the header
    this.startedAt = 0; // when the first byte of the incomplete frame arrived (while length > 0)
    this.lastFrameAt = Date.now(); // when the last frame was completed (or the decoder was made)
    this.error = null; // why the stream stopped making sense; set once
  }

  // Returns the messages completed by `chunk`. An oversized or undecodable frame sets `error`
  // (the messages before it are still returned); nothing is decoded after that.
  push(chunk) {
    const out = [];
    if (this.error) return out;
    const wasEmpty = this.length === 0;
    this.chunks.push(chunk);
    this.length += chunk.length;
    try {
      for (;;) {
        if (this.need < 0) {
          if (this.length < 4) break;
          const head = this._take(4);
          const n = head.readUInt32BE(0);
          if (n > this.max) {
            throw makeError(`frame of ${n} bytes exceeds the maximum frame size (${this.max})`, 'EFRAMETOOLARGE');
          }
          if (n === 0) throw makeError('empty frame', 'EBADFRAME');
          this.need = n;
        }
        if (this.length < this.need) break;
        const payload = this._take(this.need);
        this.need = -1;
        scanMsgpack(payload);
        try {
          out.push(packr.unpack(payload));
        } catch (e) {
          throw makeError(`undecodable frame: ${e && e.message}`, 'EBADFRAME');
        }
      }
    } catch (e) {
      this.error = e;
      this.chunks = [];
      this.length = 0;
      return out;
    }
    if (out.length > 0 || (wasEmpty && this.length > 0)) {
      const now = Date.now();
      if (out.length > 0) this.lastFrameAt = now;
      if (this.length > 0) this.startedAt = now;
    }
    return out;
  }

  _take(n) {
    const first = this.chunks[0];
    let result;
    if (first.length >= n) {
      result = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      result = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const c = this.chunks[0];
        const k = Math.min(c.length, n - filled);
        c.copy(result, filled, 0, k);
        filled += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.length -= n;
    return result;
  }
}

// Feeds a socket's bytes through `decoder` to `handle(msg)` (which may change as the handshake
// goes on); a decoding error or a throwing `handle` goes to `fail(err)`.
function readFrames(socket, decoder, handle, fail) {
  socket.on('data', (chunk) => {
    if (socket.destroyed) return;
    for (const msg of decoder.push(chunk)) {
      if (socket.destroyed) return;
      try {
        handle(msg);
      } catch (e) {
        fail(e);
        return;
      }
    }
    if (decoder.error && !socket.destroyed) fail(decoder.error);
  });
}

// Writes one frame (header and payload) to `socket` in one go.
function writeFrame(socket, frame) {
  socket.cork();
  socket.write(frame[0]);
  socket.write(frame[1]);
  socket.uncork();
}

module.exports = { scanMsgpack, badFrame, encodeFrame, FrameDecoder, readFrames, writeFrame };
