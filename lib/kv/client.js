'use strict';

// The key-value client: sends each operation to the store it believes leads, over one pipelined
// connection per store, follows redirects only to its own addresses, and retries what is safe to
// retry until its timeout (see ../kv.js for the design).

const crypto = require('node:crypto');
const { parseAddress, addressKey } = require('../transport/tcp/address');
const { CODES, makeError } = require('../errors');
const { CLIENT_HELLO, REQUEST_TYPE, toCommand } = require('./protocol');
const { buildTransport } = require('./transport');
const { promisifyCb, sleep } = require('./promises');

const SAFE_RETRY = new Set(['ENOTLEADER', 'ENOTCONNECTED', 'ESTOPPED', 'ECLOSED', 'EBUSY']);

const AMBIGUOUS = new Set(['ETIMEDOUT', 'ECONNRESET']);

class KvClient {
  /**
   * @param {string[]} addresses  store addresses (node ids), any of the cluster's members
   * @param {object} [options]
   *   timeout         ms one operation may take, retries included [10000]
   *   requestTimeout  ms one request to one store may take; keep it above the stores'
   *                   commandTimeout [5000]
   *   connectWait     ms to wait for a connection before trying another address [500]
   *   retryDelay      ms between rounds while no leader is known [50]
   *   retryAmbiguous  retry after a timeout or a lost connection [true]
   *   secret, tls, cluster  as the stores' (see the README's Security section)
   *   transport       other TCP transport options (maxFrameSize, maxInflight, ...)
   */
  constructor(addresses, options = {}) {
    if (!Array.isArray(addresses) || addresses.length === 0 ||
        addresses.some((a) => typeof a !== 'string' || a === '')) {
      throw makeError('createKvClient needs a non-empty array of store addresses', CODES.EINVALIDOPTIONS);
    }
    for (const a of addresses) parseAddress(a);
    this.addresses = addresses.slice();
    this.timeout = options.timeout || 10000;
    this.connectWait = options.connectWait || 500;
    this.retryDelay = options.retryDelay || 50;
    this.retryAmbiguous = options.retryAmbiguous !== false;
    this._transport = buildTransport(options.transport, options, { requestTimeout: options.requestTimeout || 5000 });
    // Redirects are followed only to these (the client's own spelling of each).
    this._known = new Map(this.addresses.map((a) => [addressKey(a), a]));
    this._id = `kv-client-${crypto.randomUUID()}`;
    this._conns = new Map();
    this._leader = null; // the address last known to lead
    this._next = 0; // round robin over addresses while no leader is known
    this._closed = false;
  }

  /** The address this client currently sends to first (the last known leader), or null. */
  get leader() { return this._leader; }

  put(key, value) { return this._call('put', key, value).then(() => undefined); }

  get(key) { return this._call('get', key).then((res) => (res && 'value' in res ? res.value : undefined)); }

  del(key) { return this._call('del', key).then((res) => Boolean(res && res.value === true)); }

  _conn(address) {
    let conn = this._conns.get(address);
    if (!conn) {
      conn = this._transport.connect(this._id, { [CLIENT_HELLO]: 1 }, address, null);
      // It reconnects by itself; the last failure (EAUTH, ECLUSTER, a TLS error) says why it can't.
      conn.on('error', (err) => { conn.kvLastError = err; });
      // A store has nothing to ask a client: whatever it sends is refused (and answered).
      conn.receive((type, args, reply) => {
        reply(makeError('a key-value client answers no requests', 'EREFUSED'));
      });
      // One 'connected' listener per connection, however many operations wait for it.
      conn.kvWaiters = new Set();
      conn.on('connected', () => {
        conn.kvLastError = null;
        const waiters = conn.kvWaiters;
        conn.kvWaiters = new Set();
        for (const w of waiters) w(true);
      });
      this._conns.set(address, conn);
    }
    return conn;
  }

  _connected(conn, ms) {
    if (conn.connected) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = (ok) => {
        clearTimeout(timer);
        conn.kvWaiters.delete(waiter);
        resolve(ok);
      };
      const timer = setTimeout(() => waiter(false), ms);
      conn.kvWaiters.add(waiter);
    });
  }

  _pick() {
    if (this._leader) return this._leader;
    const address = this.addresses[this._next % this.addresses.length];
    this._next++;
    return address;
  }

  async _call(op, key, value) {
    if (this._closed) throw makeError('client is closed', 'ECLOSED');
    const command = toCommand(op, key, value);
    if (command instanceof Error) throw command;
    const deadline = Date.now() + this.timeout;
    let lastErr = null;
    for (let attempt = 0; ; attempt++) {
      if (this._closed) throw makeError('client is closed', 'ECLOSED');
      if (Date.now() > deadline) {
        const err = makeError(`${op} ${JSON.stringify(key)} failed for ${this.timeout} ms` +
          (lastErr ? `; last error: ${lastErr.message}` : ''), lastErr && lastErr.code ? lastErr.code : CODES.ETIMEDOUT);
        if (lastErr && lastErr.leader !== undefined) err.leader = lastErr.leader;
        throw err;
      }
      const address = this._pick();
      const conn = this._conn(address);
      if (!(await this._connected(conn, this.connectWait))) {
        const why = conn.kvLastError;
        lastErr = why
          ? makeError(`could not connect to ${address}: ${why.message}`, why.code || CODES.ENOTCONNECTED)
          : makeError(`could not connect to ${address}`, CODES.ENOTCONNECTED);
        if (this._leader === address) this._leader = null;
        continue;
      }
      try {
        const res = await promisifyCb((cb) => conn.send(REQUEST_TYPE, command, cb));
        this._leader = address;
        return res;
      } catch (err) {
        lastErr = err;
        const code = err && err.code;
        if (code === 'ENOTLEADER') {
          const leader = typeof err.leader === 'string' ? this._known.get(addressKey(err.leader)) : undefined;
          const redirect = leader !== undefined && leader !== address ? leader : null;
          this._leader = redirect;
          if (!redirect) await sleep(this.retryDelay); // an election is going on
        } else if (SAFE_RETRY.has(code) || (this.retryAmbiguous && AMBIGUOUS.has(code))) {
          if (this._leader === address) this._leader = null;
          await sleep(this.retryDelay);
        } else {
          throw err;
        }
      }
    }
  }

  /** Closes every connection; pending operations fail with ECLOSED. */
  close() {
    this._closed = true;
    const conns = [...this._conns.values()];
    this._conns.clear();
    return Promise.all(conns.map((c) => new Promise((resolve) => c.close(() => resolve())))).then(() => undefined);
  }
}

function createKvClient(addresses, options) {
  return new KvClient(addresses, options);
}

module.exports = { KvClient, createKvClient };
