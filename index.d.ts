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

  type ErrorCode =
    | 'EINVALIDOPTIONS'
    | 'ENOTLEADER'
    | 'ETIMEDOUT'
    | 'ESTOPPED'
    | 'EBADCOMMAND'
    | 'EBADRESULT'
    | 'EJOINSELF'
    | 'EINVALIDPEER'
    | 'ENOTCONNECTED'
    | 'EBADARGS'
    | 'EPLUGIN'
    | 'EPLUGINCALLBACK'
    | 'EBADCONNECTION'
    | 'EUNKNOWNOP'
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

  // ------------------------------------------------------------------ plugins

  /** A connection to one peer; an EventEmitter that may emit close/error/connected/disconnected/connecting. */
  interface Connection extends EventEmitter {
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

  interface Persistence {
    loadMeta(nodeId: string, cb: NodeStyleCallback<PersistedState | null | undefined>): void;
    saveMeta(nodeId: string, state: PersistedState, cb: NodeStyleCallback): void;
    /** Apply one committed command, in index order; re-applying an index already applied is a no-op. */
    applyCommand(nodeId: string, commitIndex: number, command: any, cb: NodeStyleCallback): void;
    lastAppliedCommitIndex(nodeId: string, cb: NodeStyleCallback<number | null | undefined>): void;
    saveCommitIndex(nodeId: string, commitIndex: number, cb: NodeStyleCallback): void;
    createReadStream(nodeId: string): Readable;
    createWriteStream(nodeId: string): Writable;
    removeAllState(nodeId: string, cb: NodeStyleCallback): void;
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
      'retainedLogEntries' | 'metadata'>>> & Options;

    /** Calls `transport.listen(node.id, options, onConnection, cb)`. */
    listen(options: any, cb?: (err: SkiffError | null) => void): void;

    /**
     * Leader only. Resolves once a majority has the entry and this node applied it, with the
     * value `persistence.applyCommand` called back with (undefined when none).
     */
    command<R = any>(command: Command, cb: CommandCallback<R>): void;
    command<R = any>(command: Command, options: CommandOptions | undefined, cb: CommandCallback<R>): void;
    command<R = any>(command: Command, options?: CommandOptions): Promise<R | undefined>;

    /** Leader only: adds a member through the log. */
    join(peerId: string, cb: Callback): void;
    join(peerId: string, metadata: any, cb: Callback): void;
    join(peerId: string, metadata?: any): Promise<void>;

    /** Leader only: removes a member through the log (a leader removing itself then stops). */
    leave(peerId: string, cb: Callback): void;
    leave(peerId: string): Promise<void>;

    /** Stops timers, closes connections and the listener; pending commands fail with ESTOPPED. */
    stop(cb: Callback): void;
    stop(): Promise<void>;
    close(cb: Callback): void;
    close(): Promise<void>;

    /** The metadata `peerId` joined with, or undefined. */
    peerMeta(peerId: string): any;
    currentTerm(): number;
    /** The leader's id, or null. */
    currentLeader(): string | null;

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

  /** The built-in, NOT durable, in-memory persistence used when none is given. */
  interface MemoryPersistence extends Persistence {
    /** Commands applied on `nodeId`, in order. */
    commands(nodeId: string): any[];
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
  }>;
  readonly events: readonly string[];
  readonly states: readonly Node.StateName[];
  readonly MemoryPersistence: new () => Node.MemoryPersistence;
}

declare const Node: NodeConstructor;

export = Node;
