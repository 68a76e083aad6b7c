'use strict';

// The key-value store: a skiff-rs Node with the TCP transport and the file persistence, serving
// its own operations and those of key-value clients (see ../kv.js for the design).

const { EventEmitter } = require('node:events');
const createFilePersistence = require('../persistence/file');
const { parseAddress } = require('../transport/tcp/address');
const { CODES, makeError } = require('../errors');
const { CLIENT_HELLO, REQUEST_TYPE, checkKey, toCommand, commandBytes, checkMaxCommandBytes } = require('./protocol');
const { buildTransport } = require('./transport');
const { Batcher } = require('./batcher');
const { promisifyCb, sleep } = require('./promises');
const { serveMetrics, checkMetricsOptions } = require('../metrics-server');

function loadNode() {
  return require('../..'); // eslint-disable-line global-require -- the package entry (index.js)
}

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
      persistence, secret, tls, maxCommandBytes, metrics, ...nodeOptions
    } = options;
    this._metricsOptions = checkMetricsOptions(metrics); // lib/metrics-server.js
    this.metrics = null; // once started with options.metrics: { registry, host, port, path, close }
    if (typeof id !== 'string' || id === '') {
      throw makeError('options.id must be the node address, like tcp://127.0.0.1:9001', CODES.EINVALIDOPTIONS);
    }
    parseAddress(id); // throws EINVALIDADDRESS for what TCP cannot dial
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
    // Operations gather into batch proposals to the node (made in start()).
    this._batcher = new Batcher((command) => this.node.command(command), this.maxCommandBytes);
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
    if (this._metricsOptions) this.metrics = await serveMetrics(this.node, this._metricsOptions);
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
    return this._batcher.add(command, bytes);
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
    if (!this._stopping) {
      this._batcher.close();
      this._stopping = this._stop();
    }
    return this._stopping;
  }

  async _stop() {
    if (this._starting) await this._starting.catch(() => {});
    for (const conn of this._clients) conn.close();
    this._clients.clear();
    if (this.metrics) await this.metrics.close();
    if (this.node) await this.node.stop();
    if (this.persistence) await this.persistence.close();
  }
}

function createKvStore(options) {
  return new KvStore(options);
}

module.exports = { KvStore, createKvStore };
