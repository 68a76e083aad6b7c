// Type definitions for skiff-rs, a drop-in replacement for skiff-algorithm 0.8.2.

/// <reference types="node" />

import { EventEmitter } from 'events';
import { Readable, Writable } from 'stream';

declare namespace Node {
  type Callback = (err: SkiffError | null) => void;
  /** `result` is what `persistence.applyCommand` called back with on this node, if anything. */
  type CommandCallback<R = any> = (err: SkiffError | null, result?: R) => void;
  type NodeStyleCallback<T = void> = (err?: any, result?: T) => void;

  /** A value JSON can carry exactly; Buffers are carried too and arrive as Buffers. */
  type Command =
    | string
    | number
    | boolean
    | null
    | Buffer
    | readonly Command[]
    | { readonly [key: string]: Command | undefined };

  type JsonObject = { [key: string]: unknown };

  type StateName = 'idle' | 'standby' | 'follower' | 'candidate' | 'leader' | 'stopped';

  /** Every code skiff-rs reports itself (lib/errors.js CODES); a plugin's own codes pass through. */
  type ErrorCode =
    | 'EINVALIDOPTIONS'
    | 'ENOTLEADER'
    | 'ETIMEDOUT'
    | 'ESTOPPED'
    | 'ESTARTED'
    | 'EBADCOMMAND'
    | 'EBADMETADATA'
    | 'EBADRESULT'
    | 'EBADSTATE'
    | 'EJOINSELF'
    | 'ELOGFULL'
    | 'ENOTREADY'
    | 'EBADMESSAGE'
    | 'EBADSENDER'
    | 'EPERSISTENCE'
    | 'ETRANSPORT'
    | 'EPLUGIN'
    | 'EINTERNAL'
    | 'ETRANSFERRING'
    | 'ENOVOTER'
    | 'EPLUGINCALLBACK'
    | 'EINVALIDPEER'
    | 'ENOTCONNECTED'
    | 'EBADARGS'
    | 'EBADCONNECTION'
    | 'EUNKNOWNOP'
    | 'EBUSY'
    | 'ENOBINDING'
    | 'ENOPROMCLIENT'
    | (string & {});

  /** Every error skiff-rs reports is an `Error` with a `code`. */
  interface SkiffError extends Error {
    code?: ErrorCode;
    /** With `ENOTLEADER`: the leader's id when known (redirect clients there), else null. */
    leader?: string | null;
    [key: string]: unknown;
  }

  interface Peer {
    id: string;
    metadata: any;
  }

  /** A member as `node.members()` lists it. */
  interface Member extends Peer {
    /** false for a learner: it receives the log but counts toward no quorum and never campaigns. */
    voter: boolean;
  }

  // ------------------------------------------------------------------ plugins

  /** A connection to one peer; an EventEmitter that may emit close/error/connected/disconnected/connecting. */
  interface Connection extends EventEmitter {
    /**
     * `true`: this connection pairs every reply with its own request, so several requests may be
     * in flight on it (as if its transport declared `pipelining`). Read when the connection opens.
     */
    readonly pipelining?: boolean;
    send(type: string, args: any, cb: (err?: any, result?: any) => void): void;
    receive(fn: (type: string, args: any, reply: (err?: any, result?: any) => void) => void): void;
    close(cb?: (err?: any) => void): void;
  }

  /** What `transport.listen` may return: closed by `stop()` when it has `close`. */
  interface Listener {
    close?(cb?: (err?: any) => void): void;
  }

  type OnConnection =
    | ((peerId: string, peerMetadata: any, connection: Connection) => void)
    | ((peerId: string, connection: Connection) => void);

  interface Transport {
    /**
     * `true`: every connection pairs each reply with its own request (request ids), so skiff-rs
     * keeps several requests in flight per connection. Absent or false (as in the transports
     * written for skiff-algorithm): one request at a time per connection, the next one carrying
     * everything that became pending meanwhile; connections are opened when there is a request.
     */
    readonly pipelining?: boolean;
    listen(
      localNodeId: string,
      options: any,
      onConnection: (peerId: string, peerMetadataOrConnection: any, connection?: Connection) => void,
      cb?: (err?: any) => void,
    ): Listener | void;
    connect(localNodeId: string, localMetadata: any, peerId: string, peerMetadata: any): Connection;
  }

  interface LogEntry {
    term: number;
    index: number;
    command: any;
    uuid?: string;
    topologyChange?: boolean;
    [key: string]: unknown;
  }

  /** The engine state given to `saveMeta` and read back by `loadMeta` (the original's field names). */
  interface PersistedState {
    currentTerm: number;
    votedFor: string | null;
    log: {
      meta: { lastIncludedIndex: number; lastIncludedTerm: number; [key: string]: unknown };
      entries: LogEntry[];
    };
    peers: Peer[];
    [key: string]: unknown;
  }

  /**
   * What changed in the engine's state, for `saveLog`: after the call the stored log is the stored
   * entries with `meta.lastIncludedIndex < index < truncateFrom`, then `entries` (the first at
   * index `truncateFrom`). Entries at or below `meta.lastIncludedIndex` may be dropped.
   */
  interface LogDelta {
    currentTerm: number;
    votedFor: string | null;
    peers: Peer[];
    /** The persisted state's `log.meta`. */
    meta: PersistedState['log']['meta'];
    truncateFrom: number;
    entries: LogEntry[];
  }

  /**
   * The incremental extension a persistence plugin may implement (both methods or neither). The
   * engine uses each one the plugin has, `saveMeta` / `applyCommand` otherwise; `loadMeta` keeps
   * returning the whole state.
   */
  interface IncrementalPersistence {
    /** Writes `delta`; durable before `cb`. */
    saveLog(nodeId: string, delta: LogDelta, cb: NodeStyleCallback): void;
    /**
     * Applies committed commands in index order, atomically with the applied index; indexes already
     * applied are no-ops. `results[i]` is the result for `batch[i]`, as applyCommand's, one per
     * command. When a command fails, `cb(err, results)` carries the results of the commands before
     * it that took effect (none: no `results`); any other answer is an `EBADRESULT` error.
     */
    applyCommands(nodeId: string, batch: Array<{ index: number; command: any }>, cb: NodeStyleCallback<any[]>): void;
  }

  interface Persistence extends Partial<IncrementalPersistence> {
    loadMeta(nodeId: string, cb: NodeStyleCallback<PersistedState | null | undefined>): void;
    saveMeta(nodeId: string, state: PersistedState, cb: NodeStyleCallback): void;
    /** Apply one committed command, in index order; re-applying an index already applied is a no-op. */
    applyCommand(nodeId: string, commitIndex: number, command: any, cb: NodeStyleCallback): void;
    lastAppliedCommitIndex(nodeId: string, cb: NodeStyleCallback<number | null | undefined>): void;
    saveCommitIndex(nodeId: string, commitIndex: number, cb: NodeStyleCallback): void;
    createReadStream(nodeId: string): Readable;
    createWriteStream(nodeId: string): Writable;
    removeAllState(nodeId: string, cb: NodeStyleCallback): void;
    /**
     * Optional point-in-time snapshot read: `stream` is the state machine as of applied index
     * `index` at the call, however far applying goes while it is read. With it, a leader sending
     * a snapshot does not hold applying back, and a failed transfer resumes.
     */
    createSnapshotReadStream?(nodeId: string, cb: NodeStyleCallback<SnapshotRead>): void;
  }

  /** What `createSnapshotReadStream` calls back with. */
  interface SnapshotRead {
    /** The last index applied to the state `stream` reads. */
    index: number;
    stream: Readable;
  }

  // ------------------------------------------------------------------ options

  interface Options {
    /** Node id [generated: options.uuid() or a random UUID]. */
    id?: string;
    /** Start in `standby`: wait to be contacted by a leader, never start an election [false]. */
    standby?: boolean;
    /** Cluster id, `node.cluster.id` [generated]. */
    cluster?: string;
    /** Transport plugin (required). */
    transport: Transport;
    /**
     * Persistence plugin. Without it the node keeps its state in memory only: NOT durable,
     * for trying things out.
     */
    persistence?: Persistence;
    /** Returns a fresh unique string [crypto.randomUUID]. */
    uuid?: () => string;
    /** ms between leader heartbeats; must be below minElectionTimeout [50]. */
    heartbeatInterval?: number;
    /** ms [150]. */
    minElectionTimeout?: number;
    /** ms, not below minElectionTimeout [300]. */
    maxElectionTimeout?: number;
    /** ms a command may wait for a majority; per-call override with `{ timeout }` [3000]. */
    commandTimeout?: number;
    /** Applied entries kept in the log before compaction [50]. */
    retainedLogEntries?: number;
    /**
     * Largest command `command()` takes, as bytes of its JSON text; a larger one fails with
     * `EBADCOMMAND` and is not appended. Keep it at least 1 MiB below what the transport carries
     * in one message (the built-in TCP transport's `maxFrameSize`, 16 MiB) [1048576].
     */
    maxCommandBytes?: number;
    /**
     * `stop()` on a leader first hands leadership to the most up-to-date voter, for at most
     * `maxElectionTimeout` [true].
     */
    transferOnStop?: boolean;
    /** This node's metadata, handed to the transport and to peers [{}]. */
    metadata?: JsonObject;
    [key: string]: unknown;
  }

  interface CommandOptions {
    /** ms to wait for a majority [options.commandTimeout]. */
    timeout?: number;
    /** Also wait until this node has applied the command. */
    waitForNode?: string;
  }

  interface ReadOptions {
    /**
     * Leader: answer from the leader lease, without a quorum round (assumes clock rates within
     * 10% of each other; see README, Reads) [false].
     */
    lease?: boolean;
    /** ms before the read fails with ETIMEDOUT [options.commandTimeout]. */
    timeout?: number;
  }

  // ------------------------------------------------------------------ events

  interface Events {
    error: [err: SkiffError];
    warning: [err: SkiffError];
    state: [name: StateName, node: Node];
    idle: [node: Node];
    standby: [node: Node];
    follower: [node: Node];
    candidate: [node: Node];
    leader: [node: Node];
    stopped: [node: Node];
    loaded: [];
    'election timeout': [];
    'applied log': [index: number];
    'done persisting': [lastApplied: number];
    joined: [peer: Peer];
    left: [peer: Peer];
    reconnected: [peer: Peer];
    connected: [peer: Peer];
    disconnected: [peer: Peer];
    connecting: [peer: Peer];
    close: [peer: Peer];
    'vote granted': [candidateId: string];
    heartbeat: [];
    'reset election timeout': [];
    AppendEntries: [args: any];
    RequestVote: [args: any];
    InstallSnapshot: [args: any];
    'outgoing call': [peer: Peer, type: string, args: any];
    response: [peer: Peer, err: SkiffError | null, args: any];
    reply: [args: any];
  }

  type EventName = keyof Events;
  type Listener_<E extends EventName> = (...args: Events[E]) => void;

  interface Node extends EventEmitter {
    readonly id: string;
    readonly metadata: JsonObject;
    readonly cluster: { readonly id: string };
    readonly state: { readonly name: StateName };
    /** The normalized options, defaults filled in. */
    readonly options: Readonly<Required<Pick<Options, 'id' | 'standby' | 'cluster' | 'transport' | 'persistence' |
      'uuid' | 'heartbeatInterval' | 'minElectionTimeout' | 'maxElectionTimeout' | 'commandTimeout' |
      'retainedLogEntries' | 'maxCommandBytes' | 'transferOnStop' | 'metadata'>>> & Options;

    /** Calls `transport.listen(node.id, options, onConnection, cb)`. */
    listen(options: any, cb?: (err: SkiffError | null) => void): void;

    /**
     * Leader only. Resolves once a majority has the entry and this node applied it, with the
     * value `persistence.applyCommand` called back with (undefined when none).
     */
    command<R = any>(command: Command, cb: CommandCallback<R>): void;
    command<R = any>(command: Command, options: CommandOptions | undefined, cb: CommandCallback<R>): void;
    command<R = any>(command: Command, options?: CommandOptions): Promise<R | undefined>;

    /**
     * Resolves once this node's state machine may be read linearizably (ReadIndex on the
     * leader, the leader's read index on a follower); writes nothing to the log. ENOTLEADER
     * only when no leader is known.
     */
    read(cb: Callback): void;
    read(options: ReadOptions | undefined, cb: Callback): void;
    read(options?: ReadOptions): Promise<void>;

    /**
     * Leader only: hands leadership to `peerId`, or to the most up-to-date voter. Resolves once
     * the target leads; ETIMEDOUT when it has not within maxElectionTimeout.
     */
    transferLeadership(cb: Callback): void;
    transferLeadership(peerId: string | undefined, cb: Callback): void;
    transferLeadership(peerId?: string): Promise<void>;

    /**
     * Leader only: adds a member through the log, first as a learner (it counts toward no quorum
     * while it catches up), then promoted to voter by whichever node leads once it is within 100
     * entries of the leader. Calls back when the promotion is committed: the peer votes.
     */
    join(peerId: string, cb: Callback): void;
    join(peerId: string, metadata: any, cb: Callback): void;
    join(peerId: string, metadata?: any): Promise<void>;

    /** Leader only: adds a permanent learner (a read replica, never promoted) through the log. */
    addLearner(peerId: string, cb: Callback): void;
    addLearner(peerId: string, metadata: any, cb: Callback): void;
    addLearner(peerId: string, metadata?: any): Promise<void>;

    /** The members as this node sees them (itself included when it is one). */
    members(): Member[];

    /** Leader only: removes a member through the log (a leader removing itself then stops). */
    leave(peerId: string, cb: Callback): void;
    leave(peerId: string): Promise<void>;

    /**
     * Stops timers, closes connections and the listener; pending commands fail with ESTOPPED.
     * A leader hands off first (at most maxElectionTimeout) unless `transferOnStop` is false.
     */
    stop(cb: Callback): void;
    stop(): Promise<void>;
    close(cb: Callback): void;
    close(): Promise<void>;

    /** The metadata `peerId` joined with, or undefined. */
    peerMeta(peerId: string): any;
    currentTerm(): number;
    /** The leader's id, or null. */
    currentLeader(): string | null;

    /** What this node knows and has counted, as of the engine's last round. */
    stats(): NodeStats;
    /**
     * Resolves with `stats()` once `condition` holds (at once if it does). Rejects with
     * `ETIMEDOUT` after `timeout` ms (none: no limit), `ESTOPPED` when the node stops first, and
     * `EINVALIDOPTIONS` for a condition it cannot read.
     */
    waitFor(condition: WaitCondition, timeout?: number): Promise<NodeStats>;

    on<E extends EventName>(event: E, listener: Listener_<E>): this;
    on(event: string | symbol, listener: (...args: any[]) => void): this;
    once<E extends EventName>(event: E, listener: Listener_<E>): this;
    once(event: string | symbol, listener: (...args: any[]) => void): this;
    addListener<E extends EventName>(event: E, listener: Listener_<E>): this;
    addListener(event: string | symbol, listener: (...args: any[]) => void): this;
    prependListener<E extends EventName>(event: E, listener: Listener_<E>): this;
    prependListener(event: string | symbol, listener: (...args: any[]) => void): this;
    prependOnceListener<E extends EventName>(event: E, listener: Listener_<E>): this;
    prependOnceListener(event: string | symbol, listener: (...args: any[]) => void): this;
    off<E extends EventName>(event: E, listener: Listener_<E>): this;
    off(event: string | symbol, listener: (...args: any[]) => void): this;
    removeListener<E extends EventName>(event: E, listener: Listener_<E>): this;
    removeListener(event: string | symbol, listener: (...args: any[]) => void): this;
    emit<E extends EventName>(event: E, ...args: Events[E]): boolean;
    emit(event: string | symbol, ...args: any[]): boolean;
  }

  /** What `node.waitFor()` waits for: exactly one of these. */
  type WaitCondition =
    | { state: StateName }
    /** A given node leads, or (`true`) any node is known to lead. */
    | { leader: string | true }
    /** This node's state machine applied the log up to `applied`. */
    | { applied: number }
    /** `voter` is a voting member in this node's view. */
    | { voter: string };

  /** A fixed-bucket latency histogram, in ms. */
  interface LatencyHistogram {
    /** Upper bounds of the buckets, in ms. */
    buckets: number[];
    /** Samples per bucket (not cumulative); one more entry than `buckets`: those above all. */
    counts: number[];
    count: number;
    /** Sum of the samples, in ms. */
    sum: number;
  }

  /** One member in `stats().members`. The progress fields are the leader's view of a follower: null on other nodes and for the leader itself. */
  interface MemberStats {
    id: string;
    metadata: any;
    voter: boolean;
    matchIndex: number | null;
    nextIndex: number | null;
    /** AppendEntries sent and not yet answered. */
    inflight: number | null;
    /** ms since the follower last answered. */
    lastContactMs: number | null;
    snapshot: { sending: boolean; bytes: number };
  }

  interface NodeStats {
    id: string;
    state: StateName;
    term: number;
    leader: string | null;
    commitIndex: number;
    lastApplied: number;
    lastLogIndex: number;
    firstLogIndex: number;
    members: MemberStats[];
    counters: {
      electionsStarted: number;
      leaderChanges: number;
      commandsCommitted: number;
      commandsFailed: number;
      snapshotsSent: number;
      snapshotBytesSent: number;
      snapshotsInstalled: number;
      /** Persistence calls that failed and that the engine retried. */
      pluginRetries: number;
    };
    /** saveMeta and apply-batch latencies. */
    latency: { save: LatencyHistogram; apply: LatencyHistogram };
  }

  /** `options.metrics` of createKvStore: serve `GET /metrics` for Prometheus. */
  interface KvMetricsOptions {
    /** TCP port (0: any free one). */
    port: number;
    /** ['127.0.0.1'] */
    host?: string;
    /** ['/metrics'] */
    path?: string;
    /** A prom-client Registry to add the node's metrics to [a new one]. */
    registry?: any;
  }

  /** The metrics endpoint of a started KvStore. */
  interface KvMetricsServer {
    readonly registry: any;
    readonly host: string;
    readonly port: number;
    readonly path: string;
    close(): Promise<void>;
  }

  /** The built-in, NOT durable, in-memory persistence used when none is given. */
  interface MemoryPersistence extends Persistence {
    /** Commands applied on `nodeId`, in order. */
    commands(nodeId: string): any[];
  }

  // ------------------------------------------------------------------ built-in: TCP transport

  /** `createTcpTransport(options)`; node ids are addresses like `tcp://host:port`. */
  interface TcpTransportOptions {
    /** bytes of payload in one frame [16 MiB]. */
    maxFrameSize?: number;
    /** ms from send() to reply [2000]. */
    requestTimeout?: number;
    /** ms one TCP connection attempt may take [2000]. */
    connectTimeout?: number;
    /** ms, first reconnect back-off [50]. */
    minReconnectDelay?: number;
    /** ms, back-off cap [2000]. */
    maxReconnectDelay?: number;
    /** requests waiting for a connection or an in-flight slot; more fail at once [1000]. */
    maxQueue?: number;
    /** ms a new socket may take to complete TLS, the hello and the proofs [5000]. */
    handshakeTimeout?: number;
    noDelay?: boolean;
    /** ms initial keep-alive delay, or false [10000]. */
    keepAlive?: number | false;
    /** Shared cluster secret (at least 16 bytes): HMAC challenge-response per connection [null]. */
    secret?: string | Buffer | null;
    /** Mutual TLS: each side verifies the other's certificate against `ca` [null]. */
    tls?: TcpTlsOptions | null;
    /** Cluster id carried in the handshake; a peer with another one is refused (ECLUSTER) [null]. */
    cluster?: string | null;
    /** bytes of the largest handshake frame [64 KiB]. */
    maxHelloSize?: number;
    /** bytes queued to a peer that does not read before its socket is closed [64 MiB or 2 x maxFrameSize + 8]. */
    maxWriteBuffer?: number | null;
    /** requests per connection being answered (more: EBUSY) or awaiting replies (more: queued) [256]. */
    maxInflight?: number;
    /** ms an accepted connection may go without a complete frame; diallers ping [60000]. */
    idleTimeout?: number;
    /** ms a frame may take to arrive once its first byte has [30000]. */
    frameTimeout?: number;
    /** sockets one listener holds at once, handshakes included [1024]. */
    maxConnections?: number;
  }

  /** PEM text or Buffers, as node:tls takes them. */
  interface TcpTlsOptions {
    key: string | Buffer | ReadonlyArray<string | Buffer>;
    cert: string | Buffer | ReadonlyArray<string | Buffer>;
    ca: string | Buffer | ReadonlyArray<string | Buffer>;
    /** How a dialler checks the server's certificate names the host it dials [tls.checkServerIdentity]. */
    checkServerIdentity?: (host: string, cert: import('tls').PeerCertificate) => Error | undefined;
  }

  /** What `listen` takes: where to bind, overriding the host and port of the node id. */
  interface TcpListenOptions {
    host?: string;
    port?: number;
  }

  interface TcpConnection extends Connection {
    readonly connected: boolean;
    readonly closed: boolean;
  }

  interface TcpServer extends EventEmitter, Listener {
    readonly localId: string;
    address(): import('net').AddressInfo | string | null;
    close(cb?: (err?: any) => void): void;
  }

  interface TcpTransport extends Transport {
    readonly name: 'tcp';
    /** Requests carry ids: several in flight per connection. */
    readonly pipelining: true;
    readonly options: Readonly<Required<TcpTransportOptions>>;
    listen(
      localNodeId: string,
      options: TcpListenOptions | null | undefined,
      onConnection: (peerId: string, peerMetadata: any, connection: TcpConnection) => void,
      cb?: (err: Error | null) => void,
    ): TcpServer;
    connect(localNodeId: string, localMetadata: any, peerId: string, peerMetadata?: any): TcpConnection;
  }

  interface CreateTcpTransport {
    (options?: TcpTransportOptions): TcpTransport;
    readonly createTcpTransport: CreateTcpTransport;
    /** `tcp://host:port` → { host, port }; throws an error with code EINVALIDADDRESS. */
    parseAddress(id: string): { host: string; port: number };
    readonly DEFAULTS: Readonly<Required<TcpTransportOptions>>;
  }

  // ------------------------------------------------------------------ built-in: state machines

  /** What the file persistence drives (see lib/persistence/kv-state-machine.js). */
  interface StateMachine {
    /** Deterministic; the result is what `command()` resolves with on the leader. */
    apply(command: any, index: number): unknown;
    /** Chunks describing the whole state (non-null values msgpack can carry). */
    snapshot(): Iterable<unknown> | AsyncIterable<unknown>;
    /**
     * Optional: chunks of the state as it is at the call, however many `apply` calls run while
     * they are consumed (the file persistence's point-in-time snapshot read uses it).
     */
    pointInTime?(): Iterable<unknown> | AsyncIterable<unknown>;
    reset(): void | Promise<void>;
    restore(chunk: any): void | Promise<void>;
  }

  type KvKey = string | number;

  /** Commands of the built-in key-value state machine. */
  type KvCommand =
    | { op: 'put'; key: KvKey; value?: Command }
    | { op: 'del'; key: KvKey }
    | { op: 'get'; key: KvKey };

  interface KvStateMachineOptions {
    /** entries per snapshot chunk [256]. */
    batchSize?: number;
    /** rough bytes per snapshot chunk [256 KiB]. */
    batchBytes?: number;
  }

  interface KvStateMachine extends StateMachine {
    readonly batchSize: number;
    readonly batchBytes: number;
    pointInTime(): Iterable<unknown>;
    /** Local reads: NOT linearizable. */
    get(key: KvKey): any;
    has(key: KvKey): boolean;
    readonly size: number;
    keys(): IterableIterator<KvKey>;
    entries(): IterableIterator<[KvKey, any]>;
    toObject(): { [key: string]: any };
  }

  interface CreateKvStateMachine {
    (options?: KvStateMachineOptions): KvStateMachine;
    readonly createKvStateMachine: CreateKvStateMachine;
    readonly KvStateMachine: new (options?: KvStateMachineOptions) => KvStateMachine;
  }

  // ------------------------------------------------------------------ built-in: file persistence

  interface FilePersistenceOptions<S extends StateMachine = KvStateMachine> {
    /** Folder; each node id gets a sub-folder. */
    dir: string;
    /** Journal bytes that trigger a new checkpoint [8 MiB]. */
    compactBytes?: number;
    /** Bytes of a write-ahead log segment after which a new one starts [4 MiB]. */
    segmentBytes?: number;
    /** A factory `(nodeId) => instance`, or an instance for a single node id [the key-value store]. */
    stateMachine?: S | ((nodeId: string) => S);
  }

  /**
   * Durable persistence: files under `dir` (folders 0700, files 0600), fsync'd before any callback;
   * with the incremental extension (a segmented write-ahead log, batched journal records).
   * Emits `warning` (code ETORN) when it cuts off a torn last write; corruption fails with ECORRUPT.
   */
  interface FilePersistence<S extends StateMachine = KvStateMachine> extends Persistence, EventEmitter {
    saveLog: IncrementalPersistence['saveLog'];
    applyCommands: IncrementalPersistence['applyCommands'];
    readonly dir: string;
    readonly compactBytes: number;
    readonly segmentBytes: number;
    createReadStream(nodeId: string): Readable & { lastIncludedIndex?: number };
    createSnapshotReadStream(nodeId: string, cb: NodeStyleCallback<SnapshotRead>): void;
    /** The state machine instance of `nodeId` (local reads: NOT linearizable). */
    stateMachine(nodeId: string): S;
    /** Loads `nodeId` from disk if needed. */
    load(nodeId: string, cb?: (err: Error | null, stateMachine?: S) => void): Promise<S>;
    /** Waits for queued work and closes open files. */
    close(cb?: (err: Error | null) => void): Promise<void>;
  }

  interface CreateFilePersistence {
    <S extends StateMachine = KvStateMachine>(options: FilePersistenceOptions<S>): FilePersistence<S>;
    readonly createFilePersistence: CreateFilePersistence;
    readonly FilePersistence: new <S extends StateMachine = KvStateMachine>(options: FilePersistenceOptions<S>) => FilePersistence<S>;
    /** The folder name used for a node id. */
    safeName(nodeId: string): string;
  }

  // ------------------------------------------------------------------ built-in: key-value store

  /** `createKvStore(options)`: a Node + TCP transport + file persistence (lib/kv.js). */
  interface KvStoreOptions {
    /** The node id AND the listen address, `tcp://host:port`. */
    id: string;
    /** Folder for the durable state (this node uses a sub-folder). */
    dir: string;
    /** A brand-new store forms a one-member cluster; else it waits to be joined [false]. */
    bootstrap?: boolean;
    /** Joined by a bootstrapping store on its very first start, once it leads [[]]. */
    peers?: readonly string[];
    /** Where to bind, e.g. { host: '0.0.0.0' } [the id's host and port]. */
    listen?: TcpListenOptions;
    /** TCP transport options, or a transport plugin. */
    transport?: TcpTransportOptions | Transport;
    /** The built-in transport's shared secret (see TcpTransportOptions.secret). */
    secret?: string | Buffer;
    /** The built-in transport's mutual TLS. */
    tls?: TcpTlsOptions;
    /** Largest command (JSON bytes) a put may propose; more: EBADCOMMAND [1 MiB]. */
    maxCommandBytes?: number;
    /** ms start() waits to lead and for the peers' joins [10000]. */
    startTimeout?: number;
    /** Serve Prometheus metrics over HTTP (needs prom-client) [none]. */
    metrics?: KvMetricsOptions;
    /** Decided by `bootstrap`. */
    standby?: never;
    /** Always the file persistence in `dir`. */
    persistence?: never;
    // Node options passed through:
    cluster?: string;
    uuid?: () => string;
    heartbeatInterval?: number;
    minElectionTimeout?: number;
    maxElectionTimeout?: number;
    commandTimeout?: number;
    retainedLogEntries?: number;
    metadata?: JsonObject;
  }

  interface KvStoreStatus {
    id: string;
    state: StateName;
    term: number;
    /** The leader's address, or null. */
    leader: string | null;
  }

  interface KvStoreEvents {
    /** Errors and warnings of the node (nothing crashes the process). */
    warning: [err: SkiffError];
    state: [name: StateName];
  }

  /**
   * Every operation goes through the local node's log and needs it to be the leader: others
   * reject with `ENOTLEADER` and `err.leader`. Use a `KvClient` to be redirected.
   */
  interface KvStore extends EventEmitter {
    readonly id: string;
    readonly dir: string;
    readonly bootstrap: boolean;
    readonly peers: readonly string[];
    /** The Raft node, once started. */
    readonly node: Node | null;
    /** The file persistence, once started. */
    readonly persistence: FilePersistence | null;
    /** The metrics endpoint, once started with `options.metrics`. */
    readonly metrics: KvMetricsServer | null;
    start(): Promise<KvStore>;
    put(key: KvKey, value: Command): Promise<void>;
    /** Linearizable: read through the log. */
    get<V = any>(key: KvKey): Promise<V | undefined>;
    /** Resolves true if the key existed. */
    del(key: KvKey): Promise<boolean>;
    /** This store's own copy, without the log: NOT linearizable. */
    localGet<V = any>(key: KvKey): Promise<V | undefined>;
    join(peerAddress: string, metadata?: any): Promise<void>;
    leave(peerAddress: string): Promise<void>;
    /** The leader's address as known here (null when unknown); waits up to `timeout` ms for one. */
    leader(timeout?: number): Promise<string | null>;
    status(): KvStoreStatus;
    stop(): Promise<void>;

    on<E extends keyof KvStoreEvents>(event: E, listener: (...args: KvStoreEvents[E]) => void): this;
    on(event: string | symbol, listener: (...args: any[]) => void): this;
    once<E extends keyof KvStoreEvents>(event: E, listener: (...args: KvStoreEvents[E]) => void): this;
    once(event: string | symbol, listener: (...args: any[]) => void): this;
  }

  interface KvClientOptions {
    /** ms one operation may take, retries included [10000]. */
    timeout?: number;
    /** ms one request may take; keep it above the stores' commandTimeout [5000]. */
    requestTimeout?: number;
    /** ms to wait for a connection before trying another address [500]. */
    connectWait?: number;
    /** ms between rounds while no leader is known [50]. */
    retryDelay?: number;
    /** Retry after a timeout or a lost connection (may apply a command twice) [true]. */
    retryAmbiguous?: boolean;
    /** As the stores' (see TcpTransportOptions). */
    secret?: string | Buffer;
    tls?: TcpTlsOptions;
    cluster?: string;
    /** Other TCP transport options. */
    transport?: TcpTransportOptions;
  }

  /** Talks to stores over TCP; follows `ENOTLEADER` redirects and tries other addresses. */
  interface KvClient {
    readonly addresses: readonly string[];
    /** The address it sends to first (the last known leader), or null. */
    readonly leader: string | null;
    put(key: KvKey, value: Command): Promise<void>;
    get<V = any>(key: KvKey): Promise<V | undefined>;
    del(key: KvKey): Promise<boolean>;
    close(): Promise<void>;
  }
}

interface NodeConstructor {
  (options: Node.Options): Node.Node;
  new (options: Node.Options): Node.Node;
  readonly prototype: Node.Node;
  readonly Node: NodeConstructor;
  readonly default: NodeConstructor;
  readonly codes: { readonly [code: string]: Node.ErrorCode };
  readonly defaults: Readonly<{
    standby: boolean;
    heartbeatInterval: number;
    minElectionTimeout: number;
    maxElectionTimeout: number;
    commandTimeout: number;
    retainedLogEntries: number;
    maxCommandBytes: number;
  }>;
  readonly events: readonly string[];
  readonly states: readonly Node.StateName[];
  /** `incremental: true`: with saveLog and applyCommands too; `pointInTime: true`: with createSnapshotReadStream. */
  readonly MemoryPersistence: new (options?: { incremental?: boolean; pointInTime?: boolean }) => Node.MemoryPersistence;
  readonly createTcpTransport: Node.CreateTcpTransport;
  readonly createFilePersistence: Node.CreateFilePersistence;
  readonly createKvStateMachine: Node.CreateKvStateMachine;
  readonly createKvStore: (options: Node.KvStoreOptions) => Node.KvStore;
  readonly createKvClient: (addresses: readonly string[], options?: Node.KvClientOptions) => Node.KvClient;
  /** The classes behind `createKvStore` and `createKvClient` (`new KvStore(options)` is the same). */
  readonly KvStore: new (options: Node.KvStoreOptions) => Node.KvStore;
  readonly KvClient: new (addresses: readonly string[], options?: Node.KvClientOptions) => Node.KvClient;
}

declare const Node: NodeConstructor;

export = Node;
