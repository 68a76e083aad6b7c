'use strict';

// The TCP transport's options: their defaults, and the check that turns what the user gave into
// the frozen options every part of the transport reads.

const { optionError } = require('../../errors');

const DEFAULTS = Object.freeze({
  maxFrameSize: 16 * 1024 * 1024, // bytes of payload
  requestTimeout: 2000, // ms from send() to reply, whatever the connection does
  connectTimeout: 2000, // ms one TCP connection attempt may take
  minReconnectDelay: 50, // ms, first back-off
  maxReconnectDelay: 2000, // ms, back-off cap
  maxQueue: 1000, // requests waiting for a connection or an in-flight slot; more fail at once
  handshakeTimeout: 5000, // ms a new socket may take to complete the hello (and TLS, and proofs)
  noDelay: true,
  keepAlive: 10000, // ms initial keep-alive delay, or false
  secret: null, // shared cluster secret (string or Buffer of at least 16 bytes), or null
  tls: null, // { key, cert, ca, [checkServerIdentity] } for mutual TLS, or null
  cluster: null, // cluster id carried in the handshake; a peer with another one is refused
  maxHelloSize: 64 * 1024, // bytes: largest handshake frame (hello with metadata, welcome, auth)
  maxWriteBuffer: null, // bytes queued on one socket before it is closed [64 MiB or 2 x maxFrameSize + 8]
  maxInflight: 256, // requests per connection being answered (incoming) or awaiting a reply (outgoing)
  idleTimeout: 60000, // ms an accepted connection may go without a complete frame (dialers ping)
  frameTimeout: 30000, // ms a frame may take to arrive once its first byte has
  maxConnections: 1024, // sockets one listener holds at once, handshakes included
});

// The options that decide who may connect: what a key-value store or client passes through to
// the transport it builds.
const SECURITY_OPTIONS = Object.freeze(['secret', 'tls', 'cluster']);

const NUMBER_OPTIONS = ['maxFrameSize', 'requestTimeout', 'connectTimeout', 'minReconnectDelay',
  'maxReconnectDelay', 'maxQueue', 'handshakeTimeout', 'maxHelloSize', 'maxWriteBuffer', 'maxInflight',
  'idleTimeout', 'frameTimeout', 'maxConnections'];
const TLS_KEYS = ['key', 'cert', 'ca', 'checkServerIdentity'];

function pemLike(v) {
  const one = (x) => typeof x === 'string' || Buffer.isBuffer(x);
  return one(v) || (Array.isArray(v) && v.length > 0 && v.every(one));
}

function checkTls(v) {
  if (v === null || typeof v !== 'object') throw optionError('tls must be an object { key, cert, ca }');
  for (const key of Object.keys(v)) {
    if (!TLS_KEYS.includes(key)) throw optionError(`unknown tls option ${JSON.stringify(key)}`);
  }
  for (const key of ['key', 'cert', 'ca']) {
    if (!pemLike(v[key])) throw optionError(`tls.${key} must be PEM text or a Buffer (or an array of them)`);
  }
  if (v.checkServerIdentity !== undefined && typeof v.checkServerIdentity !== 'function') {
    throw optionError('tls.checkServerIdentity must be a function (host, cert) => Error | undefined');
  }
  return Object.freeze({ ...v });
}

function checkOptions(options) {
  const opts = { ...DEFAULTS };
  if (options !== undefined && options !== null) {
    if (typeof options !== 'object') throw optionError('tcp transport options must be an object');
    for (const key of Object.keys(options)) {
      if (!(key in DEFAULTS)) throw optionError(`unknown tcp transport option ${JSON.stringify(key)}`);
      const v = options[key];
      if (v === undefined || (v === null && DEFAULTS[key] === null)) continue;
      if (key === 'noDelay') {
        opts[key] = Boolean(v);
      } else if (key === 'keepAlive') {
        if (v === false) opts[key] = false;
        else if (typeof v === 'number' && v >= 0) opts[key] = v;
        else throw optionError('keepAlive must be false or a number of ms');
      } else if (key === 'secret') {
        const buf = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.isBuffer(v) ? Buffer.from(v) : null;
        if (!buf || buf.length < 16) throw optionError('secret must be a string or Buffer of at least 16 bytes');
        opts[key] = buf;
      } else if (key === 'tls') {
        opts[key] = checkTls(v);
      } else if (key === 'cluster') {
        if (typeof v !== 'string' || v === '') throw optionError('cluster must be a non-empty string');
        opts[key] = v;
      } else if (NUMBER_OPTIONS.includes(key)) {
        if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) {
          throw optionError(`tcp transport option ${key} must be a positive number`);
        }
        opts[key] = v;
      }
    }
  }
  if (opts.maxFrameSize > 0xffffffff) throw optionError('maxFrameSize must fit in 32 bits');
  if (opts.maxReconnectDelay < opts.minReconnectDelay) {
    throw optionError('maxReconnectDelay must not be below minReconnectDelay');
  }
  if (opts.maxWriteBuffer === null) {
    opts.maxWriteBuffer = Math.max(64 * 1024 * 1024, 2 * opts.maxFrameSize + 8);
  } else if (opts.maxWriteBuffer < opts.maxFrameSize + 4) {
    throw optionError('maxWriteBuffer must hold at least one frame (maxFrameSize + 4)');
  }
  opts.maxHelloSize = Math.min(opts.maxHelloSize, opts.maxFrameSize);
  if (!Number.isInteger(opts.maxInflight) || !Number.isInteger(opts.maxConnections)) {
    throw optionError('maxInflight and maxConnections must be whole numbers');
  }
  return opts;
}

module.exports = { DEFAULTS, SECURITY_OPTIONS, checkOptions };
