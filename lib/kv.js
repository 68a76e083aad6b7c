'use strict';

// A replicated key-value store: a skiff-rs Node + the TCP transport + the durable file persistence
// (whose built-in state machine is the key-value store of ./persistence/kv-state-machine.js).
//
//   const { createKvStore, createKvClient } = require('skiff-rs');   // or require('skiff-rs/lib/kv')
//
//   // Start the standby members first, then the one that bootstraps the cluster and joins them.
//   const b = createKvStore({ id: 'tcp://127.0.0.1:9002', dir: '/var/lib/kv' });
//   const c = createKvStore({ id: 'tcp://127.0.0.1:9003', dir: '/var/lib/kv' });
//   const a = createKvStore({ id: 'tcp://127.0.0.1:9001', dir: '/var/lib/kv', bootstrap: true,
//                             peers: ['tcp://127.0.0.1:9002', 'tcp://127.0.0.1:9003'] });
//   await b.start(); await c.start(); await a.start();
//   await a.put('k', { any: 'JSON' });  await a.get('k');  await a.del('k');
//
//   const client = createKvClient(['tcp://127.0.0.1:9001', 'tcp://127.0.0.1:9002']);
//   await client.put('k', 1);  await client.get('k');  await client.close();
//
// Design
//
// * The node id IS the address the node listens on (`tcp://host:port`), so an `ENOTLEADER`
//   error's `err.leader` is directly where to go next.
// * Membership: a brand-new store forms a one-member cluster when `bootstrap: true`, otherwise it
//   starts as a standby that waits for a leader to `join` it. Once a store has state on disk,
//   `bootstrap` does not matter any more: membership is in the replicated log. `peers` are joined
//   by a bootstrapping store once it leads, on its very first start only (call `join` for more);
//   its `start()` resolves when they are members.
//   Joining needs the joined store to be running (the new member counts for the majority).
// * Every write of a store goes through the Raft log of its local node, which must be the leader.
//   `get` is a linearizable read that writes nothing: `node.read()` (ReadIndex: the leader confirms
//   it still leads with a heartbeat round; a follower asks the leader for its commit index), then
//   the local copy once it has applied that far. So a follower's store serves `get` too.
//   A store whose node is not the leader does NOT forward writes: it rejects with `ENOTLEADER` and
//   `err.leader` (the leader's address, or null while unknown). That keeps the store honest about
//   where an operation ran.
// * Redirection is the client's job: `createKvClient(addresses)` talks to stores over the same TCP
//   port as Raft (the transport's hello carries `{ skiffKvClient: 1 }`, which the store serves itself
//   instead of handing the connection to the Raft node). It sends to the leader it last heard of,
//   follows `err.leader` when that is one of ITS OWN addresses (a store that lies about the leader
//   cannot send the client's writes elsewhere), and tries the other addresses while no leader is
//   known or a store is unreachable, until its `timeout`. It answers nothing a store asks of it.
// * Security: stores and clients take the TCP transport's `secret`, `tls` and `cluster` (a client
//   holding the secret or a certificate is trusted like a member); a store refuses a command whose
//   JSON exceeds `maxCommandBytes` before proposing it.
// * Retries and exactly-once: a retry after `ENOTLEADER` or a request that never left
//   (`ENOTCONNECTED`) is safe. After an ambiguous failure (a timeout or a lost connection: the
//   command may or may not have been committed) the client retries too, which is harmless for
//   `put` and `get`; a retried `del` may then report `false` for a key it did delete.
//   Set `retryAmbiguous: false` to get such errors instead.
// * `localGet(key)` reads this store's own copy without the log: fast, NOT linearizable (a
//   follower may lag, a deposed leader may not know yet).
// * Batching: while MAX_BATCHES_IN_FLIGHT proposals of a store wait to be applied, the operations
//   it receives (from any number of clients and connections) gather into ONE command,
//   `{ op: 'batch', ops }`, proposed when one of those is applied; so they share one log entry:
//   one save, one replication round, one journal sync. (Proposed one by one, each entry costs a
//   journal sync of its own, since the state machine applies one entry at a time: that, not the
//   CPU, bounded a busy store at the disk's sync rate.) Its apply returns each operation's
//   result, and each caller is answered with its own as soon as the entry is applied: nothing is
//   answered before it is committed and applied, as for a lone command. An operation that finds
//   fewer proposals waiting goes out at the end of the event-loop turn, alone (as itself) or with
//   what arrived in the same turn. A batch stays within maxCommandBytes and MAX_BATCH_OPS.

const { EventEmitter } = require('node:events');
const crypto = require('node:crypto');
const createTcpTransport = require('./transport/tcp');
const createFilePersistence = require('./persistence/file');
const { CODES, makeError } = require('./errors');
const { encode } = require('./codec');
const { validKey } = require('./persistence/kv-state-machine');

const CLIENT_HELLO = 'skiffKvClient';
const REQUEST_TYPE = 'SkiffKv';
const OPS = new Set(['put', 'get', 'del']);
const DEFAULT_MAX_COMMAND_BYTES = 1024 * 1024;
// Most operations one batch command carries: bounds the work of one apply and of one answer burst.
const MAX_BATCH_OPS = 1024;
// Proposals of a store that may wait for their apply at once; later operations gather meanwhile.
// Two, so that one batch gathers while the other is saved, replicated and applied.
const MAX_BATCHES_IN_FLIGHT = 2;
// JSON bytes of a batch around its operations: {"op":"batch","ops":[...]} (and a comma each).
const BATCH_OVERHEAD_BYTES = 24;
const SECURITY_OPTIONS = ['secret', 'tls', 'cluster'];

function loadNode() {
  return require('..'); // eslint-disable-line global-require -- the package entry (index.js)
}

function sleep(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (typeof timer.unref === 'function') timer.unref();
  });
}

function checkKey(key) {
  if (!validKey(key)) {
    return makeError(`key must be a string or a finite number, got ${key === null ? 'null' : typeof key}`,
      CODES.EBADARGS);
  }
  return null;
}

// A command for the key-value state machine, or an error.
function toCommand(op, key, value) {
  if (!OPS.has(op)) return makeError(`unknown operation ${JSON.stringify(op)}`, CODES.EBADARGS);
  const bad = checkKey(key);
  if (bad) return bad;
  if (op === 'put') return { op, key, value: value === undefined ? null : value };
  return { op, key };
}

// True when JSON.stringify(value) certainly takes more than `limit` bytes. Counts a lower bound
// and stops as soon as it passes the limit, so a huge value is refused without being stringified.
function surelyLarger(value, limit) {
  let size = 0;
  const stack = [value];
  while (stack.length) {
    if (size > limit) return true;
    const v = stack.pop();
    if (typeof v === 'string') size += v.length + 2; // UTF-16 units never outnumber UTF-8 bytes
    else if (Buffer.isBuffer(v)) size += 2 * v.length + 26; // {"type":"Buffer","data":[b,...]}
    else if (Array.isArray(v)) {
      size += 1 + v.length;
      for (let i = 0; i < v.length; i++) stack.push(v[i]);
    } else if (v !== null && typeof v === 'object') {
      size += 2;
      for (const k of Object.keys(v)) {
        size += k.length + 4;
        stack.push(v[k]);
      }
    } else size += 1;
  }
  return size > limit;
}

// The command's size as JSON in bytes, or an Error: EBADCOMMAND when it takes more than `limit`
// bytes, or the error of encoding it.
function commandBytes(command, limit) {
  const tooLarge = (what) => makeError(`the command takes ${what} bytes as JSON, more than maxCommandBytes ` +
    `(${limit})`, CODES.EBADCOMMAND);
  if (surelyLarger(command, limit)) return tooLarge(`over ${limit}`);
  let json;
  try {
    json = encode(command);
  } catch (e) {
    return e;
  }
  const bytes = Buffer.byteLength(json);
  return bytes > limit ? tooLarge(bytes) : bytes;
}

// The TCP transport for a store or a client: `transport` options with `secret`, `tls`, `cluster`.
function buildTransport(transportOption, security, defaults) {
  const given = SECURITY_OPTIONS.filter((k) => security[k] !== undefined);
  if (transportOption && typeof transportOption.connect === 'function') {
    if (given.length) {
      throw makeError(`options.${given[0]} configures the built-in TCP transport; give it to your own ` +
        'transport instead', CODES.EINVALIDOPTIONS);
    }
    return transportOption;
  }
  const opts = Object.assign({}, defaults, transportOption || {});
  for (const k of given) opts[k] = security[k];
  try {
    return createTcpTransport(opts);
  } catch (e) {
    throw makeError(`transport options: ${e.message}`, CODES.EINVALIDOPTIONS);
  }
}

function checkMaxCommandBytes(v) {
  if (v === undefined) return DEFAULT_MAX_COMMAND_BYTES;
  if (!Number.isSafeInteger(v) || v <= 0) {
    throw makeError('options.maxCommandBytes must be a positive whole number of bytes', CODES.EINVALIDOPTIONS);
  }
  return v;
}

function promisifyCb(fn) {
  return new Promise((resolve, reject) => fn((err, result) => (err ? reject(err) : resolve(result))));
}

// ------------------------------------------------------------------ the store

class KvStore extends EventEmitter {
  /**
   * @param {object} options
   *   id          the node id and listen address, `tcp://host:port` (required)
   *   dir         folder for the file persistence; this node uses a sub-folder of it (required)
   *   bootstrap   a brand-new store forms a one-member cluster (else it waits, standby) [false]
   *   peers       addresses a bootstrapping store joins once it leads, on its first start [[]]
   *   listen      options for transport.listen, e.g. { host: '0.0.0.0', port } [bind to the id]
   *   transport   TCP transport options (requestTimeout, ...) or a transport plugin object
   *   secret, tls the built-in TCP transport's shared secret / mutual TLS (see the README)
   *   maxCommandBytes  largest command (JSON bytes) a put may propose [1 MiB]; also given to the node
   *   startTimeout  ms start() waits for leadership and the peers' joins [10000]
   *   ...         any other Node option (heartbeatInterval, commandTimeout, metadata, ...)
   */
  constructor(options) {
    super();
    if (options === null || typeof options !== 'object') {
      throw makeError('createKvStore needs an options object', CODES.EINVALIDOPTIONS);
    }
    const {
      id, dir, bootstrap = false, peers = [], listen, transport, startTimeout = 10000, standby,
      persistence, secret, tls, maxCommandBytes, ...nodeOptions
    } = options;
    if (typeof id !== 'string' || id === '') {
      throw makeError('options.id must be the node address, like tcp://127.0.0.1:9001', CODES.EINVALIDOPTIONS);
    }
    createTcpTransport.parseAddress(id); // throws EINVALIDADDRESS for what TCP cannot dial
    if (typeof dir !== 'string' || dir === '') {
      throw makeError('options.dir must be a folder for the durable state', CODES.EINVALIDOPTIONS);
    }
    if (typeof bootstrap !== 'boolean') {
      throw makeError('options.bootstrap must be a boolean', CODES.EINVALIDOPTIONS);
    }
    if (standby !== undefined) {
      throw makeError('options.standby is decided by options.bootstrap (standby = !bootstrap)',
        CODES.EINVALIDOPTIONS);
    }
    if (persistence !== undefined) {
      throw makeError('a key-value store always uses the file persistence in options.dir',
        CODES.EINVALIDOPTIONS);
    }
    if (!Array.isArray(peers) || peers.some((p) => typeof p !== 'string' || p === '' || p === id)) {
      throw makeError('options.peers must be an array of addresses other than options.id', CODES.EINVALIDOPTIONS);
    }
    if (typeof startTimeout !== 'number' || !(startTimeout > 0)) {
      throw makeError('options.startTimeout must be a positive number of ms', CODES.EINVALIDOPTIONS);
    }
    this.id = id;
    this.dir = dir;
    this.bootstrap = bootstrap;
    this.peers = peers.slice();
    this.node = null;
    this.persistence = null;
    this.maxCommandBytes = checkMaxCommandBytes(maxCommandBytes);
    this._listenOptions = listen;
    // Built now, so bad transport options fail here; the node's cluster id is the transport's too.
    this._transport = buildTransport(transport, {
      secret, tls, cluster: typeof nodeOptions.cluster === 'string' ? nodeOptions.cluster : undefined,
    });
    this._startTimeout = startTimeout;
    this._nodeOptions = Object.assign({}, nodeOptions, { maxCommandBytes: this.maxCommandBytes });
    this._clients = new Set(); // client connections served by this store
    // Operations waiting for the end of this event-loop turn to be proposed together:
    // { entries: [{ command, resolve, reject }], bytes } or null. Invariant: entries.length <=
    // MAX_BATCH_OPS and bytes (the batch's JSON size) <= maxCommandBytes.
    this._batch = null;
    this._batchesInFlight = 0; // proposals not yet answered; invariant: <= MAX_BATCHES_IN_FLIGHT
    this._starting = null;
    this._stopping = null;
  }

  /**
   * Listens. A brand-new bootstrapping store also waits until it leads (its one-member cluster)
   * and joins `peers`, one at a time, so it resolves with a ready cluster.
   */
  start() {
    if (!this._starting) {
      // A failed start (port in use, no leadership in time, ...) leaves nothing running.
      this._starting = this._start().catch(async (err) => {
        if (this.node) await this.node.stop().catch(() => {});
        if (this.persistence) await this.persistence.close().catch(() => {});
        throw err;
      });
    }
    return this._starting;
  }

  async _start() {
    if (this._stopping) throw makeError('store is stopped', CODES.ESTOPPED);
    const Node = loadNode();
    this.persistence = createFilePersistence({ dir: this.dir });
    // A torn journal tail cut off on load is worth knowing about.
    this.persistence.on('warning', (err) => {
      if (this.listenerCount('warning') > 0) this.emit('warning', err);
      else process.emitWarning(err);
    });
    const saved = await promisifyCb((cb) => this.persistence.loadMeta(this.id, cb));
    const fresh = saved === null || saved === undefined;
    const inner = this._transport;
    this.node = Node(Object.assign({}, this._nodeOptions, {
      id: this.id,
      standby: !this.bootstrap,
      transport: this._wrapTransport(inner),
      persistence: this.persistence,
    }));
    // Nothing the engine reports may crash the process: it reaches listeners of the store.
    const forward = (name) => (err) => {
      if (this.listenerCount('warning') > 0) this.emit('warning', err);
      else if (name === 'error') process.emitWarning(err);
    };
    this.node.on('error', forward('error'));
    this.node.on('warning', forward('warning'));
    this.node.on('state', (name) => this.emit('state', name));
    await promisifyCb((cb) => this.node.listen(this._listenOptions, cb));
    if (fresh && this.bootstrap) {
      await this._waitFor(() => this.node.state.name === 'leader', this._startTimeout,
        'this bootstrapping store to lead');
      for (const peer of this.peers) {
        if (this.node.peerMeta(peer) === undefined) await this.node.join(peer);
      }
    }
    return this;
  }

  // The TCP transport, except that connections saying hello as key-value clients are served here.
  _wrapTransport(inner) {
    const store = this;
    return {
      listen(localId, options, onConnection, cb) {
        return inner.listen(localId, options, (peerId, metadata, conn) => {
          if (metadata && typeof metadata === 'object' && metadata[CLIENT_HELLO] && conn) {
            store._serveClient(conn);
          } else {
            onConnection(peerId, metadata, conn);
          }
        }, cb);
      },
      connect(...args) {
        return inner.connect(...args);
      },
    };
  }

  _serveClient(conn) {
    if (this._stopping) {
      conn.close();
      return;
    }
    this._clients.add(conn);
    conn.on('close', () => this._clients.delete(conn));
    conn.on('error', (err) => this._warn(err)); // a client broke the protocol or a limit
    conn.receive((type, args, reply) => {
      if (type !== REQUEST_TYPE || args === null || typeof args !== 'object') {
        reply(makeError(`unknown request ${JSON.stringify(type)}`, CODES.EBADARGS));
        return;
      }
      this._op(args.op, args.key, args.value).then(
        (result) => reply(null, result === undefined ? {} : { value: result }),
        (err) => reply(err),
      );
    });
  }

  _op(op, key, value) {
    if (!this.node || this._stopping) {
      return Promise.reject(makeError(this._stopping ? 'store is stopped' : 'store is not started',
        CODES.ESTOPPED));
    }
    const command = toCommand(op, key, value);
    if (command instanceof Error) return Promise.reject(command);
    if (op === 'get') {
      // Linearizable without a log entry: read() resolves once the local copy may be read.
      return this.node.read().then(() => this.persistence.load(this.id)).then((sm) => sm.get(key));
    }
    const bytes = commandBytes(command, this.maxCommandBytes);
    if (bytes instanceof Error) return Promise.reject(bytes);
    return this._propose(command, bytes);
  }

  // Adds `command` to the batch proposed at the end of this event-loop turn; resolves with its
  // own result once the batch is committed and applied.
  _propose(command, bytes) {
    return new Promise((resolve, reject) => {
      let batch = this._batch;
      if (batch && (batch.entries.length >= MAX_BATCH_OPS ||
          batch.bytes + bytes + 1 > this.maxCommandBytes)) {
        this._proposeBatch(); // full: goes now, however many wait; the rest gathers anew
        batch = null;
      }
      if (!batch) {
        batch = { entries: [], bytes: BATCH_OVERHEAD_BYTES };
        this._batch = batch;
        if (this._batchesInFlight < MAX_BATCHES_IN_FLIGHT) {
          setImmediate(() => { if (this._batch === batch) this._proposeBatch(); });
        } // else the next answered proposal proposes it
      }
      batch.entries.push({ command, resolve, reject });
      batch.bytes += bytes + 1;
    });
  }

  _proposeBatch() {
    const { entries } = this._batch;
    this._batch = null;
    if (this._stopping) {
      for (const e of entries) e.reject(makeError('store is stopped', CODES.ESTOPPED));
      return;
    }
    const single = entries.length === 1;
    this._batchesInFlight++;
    const answered = () => {
      this._batchesInFlight--;
      if (this._batch && this._batchesInFlight < MAX_BATCHES_IN_FLIGHT) this._proposeBatch();
    };
    let proposed;
    try {
      proposed = this.node.command(single ? entries[0].command : { op: 'batch', ops: entries.map((e) => e.command) });
    } catch (err) {
      proposed = Promise.reject(err); // every caller is answered, whatever the node does
    }
    proposed
      .then((results) => {
        answered();
        if (single) {
          entries[0].resolve(results);
        } else if (!Array.isArray(results) || results.length !== entries.length) {
          // The built-in state machine always does; anything else is a bug worth an error.
          const err = makeError('the state machine did not answer the batch with one result per operation', 'EAPPLY');
          for (const e of entries) e.reject(err);
        } else {
          for (let i = 0; i < entries.length; i++) entries[i].resolve(results[i]);
        }
      }, (err) => {
        answered();
        for (const e of entries) e.reject(err);
      });
  }

  _warn(err) {
    if (this.listenerCount('warning') > 0) this.emit('warning', err);
  }

  /** Sets `key` (string or finite number) to a JSON `value`, through the log. */
  put(key, value) { return this._op('put', key, value).then(() => undefined); }

  /** The value of `key` or undefined: a linearizable read (`node.read()`), with no log write. */
  get(key) { return this._op('get', key); }

  /** Removes `key`; resolves true if it existed. */
  del(key) { return this._op('del', key).then((existed) => existed === true); }

  /** This store's own copy of `key`, without the log: NOT linearizable. */
  localGet(key) {
    const bad = checkKey(key);
    if (bad) return Promise.reject(bad);
    if (!this.persistence) return Promise.reject(makeError('store is not started', CODES.ESTOPPED));
    return this.persistence.load(this.id).then((sm) => sm.get(key));
  }

  /** Leader only: adds the store at `peerAddress` (running, started without bootstrap) as a member. */
  join(peerAddress, metadata) {
    if (!this.node) return Promise.reject(makeError('store is not started', CODES.ESTOPPED));
    return this.node.join(peerAddress, metadata);
  }

  /** Leader only: removes `peerAddress` from the members (the leader itself: it steps down and stops). */
  leave(peerAddress) {
    if (!this.node) return Promise.reject(makeError('store is not started', CODES.ESTOPPED));
    return this.node.leave(peerAddress);
  }

  /**
   * The leader's address as this store knows it (null when unknown). With `timeout` (ms), waits
   * up to that long for a leader to be known, then rejects with ETIMEDOUT.
   */
  async leader(timeout = 0) {
    const known = () => (this.node ? this.node.currentLeader() : null);
    if (!(timeout > 0) || known()) return known();
    return this._waitFor(known, timeout, 'a known leader');
  }

  /** { id, state, term, leader } right now. */
  status() {
    const node = this.node;
    return {
      id: this.id,
      state: node ? node.state.name : 'idle',
      term: node ? node.currentTerm() : 0,
      leader: node ? node.currentLeader() : null,
    };
  }

  async _waitFor(fn, timeout, what) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const v = fn();
      if (v) return v;
      if (this._stopping) throw makeError('store is stopped', CODES.ESTOPPED);
      if (Date.now() > deadline) throw makeError(`timed out after ${timeout} ms waiting for ${what}`, CODES.ETIMEDOUT);
      await sleep(10);
    }
  }

  /** Stops the node (pending operations fail with ESTOPPED), closes client connections and files. */
  stop() {
    if (!this._stopping) this._stopping = this._stop();
    return this._stopping;
  }

  async _stop() {
    if (this._starting) await this._starting.catch(() => {});
    for (const conn of this._clients) conn.close();
    this._clients.clear();
    if (this.node) await this.node.stop();
    if (this.persistence) await this.persistence.close();
  }
}

function createKvStore(options) {
  return new KvStore(options);
}

// ------------------------------------------------------------------ the client

const SAFE_RETRY = new Set(['ENOTLEADER', 'ENOTCONNECTED', 'ESTOPPED', 'ECLOSED', 'EBUSY']);

// `host:port` of an address, so that `tcp://127.0.0.1:1` and `tcp+msgpack://127.0.0.1:1` match.
function addressKey(address) {
  try {
    const { host, port } = createTcpTransport.parseAddress(address);
    return `${host.toLowerCase()}:${port}`;
  } catch (_) {
    return null;
  }
}
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
    for (const a of addresses) createTcpTransport.parseAddress(a);
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

module.exports = {
  createKvStore,
  createKvClient,
  KvStore,
  KvClient,
  REQUEST_TYPE,
  CLIENT_HELLO,
};
