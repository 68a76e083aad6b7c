// Uses the whole public API of skiff-rs, type-checked by __test__/types.test.js with
// `tsc --strict --noEmit`. Never run: it only has to compile.

import Node = require('../../index');
import { EventEmitter } from 'events';
import { Readable, Writable } from 'stream';
import collectMetrics = require('../../lib/metrics');

// ---------------------------------------------------------------- plugins written by users

class MyConnection extends EventEmitter implements Node.Connection {
  send(type: string, args: any, cb: (err?: any, result?: any) => void): void {
    cb(null, { type, args });
  }
  receive(fn: (type: string, args: any, reply: (err?: any, result?: any) => void) => void): void {
    fn('AppendEntries', {}, (err, result) => { void err; void result; });
  }
  close(cb?: (err?: any) => void): void {
    if (cb) cb();
  }
}

const myTransport: Node.Transport = {
  listen(localNodeId, options, onConnection, cb) {
    void localNodeId; void options;
    onConnection('peer', { zone: 'a' }, new MyConnection());
    if (cb) cb();
    return { close(done?: (err?: any) => void) { if (done) done(); } };
  },
  connect(localNodeId, localMetadata, peerId, peerMetadata) {
    void localNodeId; void localMetadata; void peerId; void peerMetadata;
    return new MyConnection();
  },
};

const state: Node.PersistedState = {
  currentTerm: 3,
  votedFor: null,
  log: {
    meta: { lastIncludedIndex: 0, lastIncludedTerm: 0 },
    entries: [{ term: 3, index: 1, command: ['add peer', 'b', {}], topologyChange: true, uuid: 'u' }],
  },
  peers: [{ id: 'b', metadata: {} }],
};

const myPersistence: Node.Persistence = {
  loadMeta(nodeId, cb) { void nodeId; cb(null, state); },
  saveMeta(nodeId, s, cb) { void nodeId; void s.currentTerm; cb(); },
  applyCommand(nodeId, commitIndex, command, cb) { void nodeId; void commitIndex; void command; cb(null); },
  lastAppliedCommitIndex(nodeId, cb) { void nodeId; cb(null, 0); },
  saveCommitIndex(nodeId, index, cb) { void nodeId; void index; cb(null); },
  createReadStream(nodeId) { void nodeId; return Readable.from([]); },
  createWriteStream(nodeId) { void nodeId; return new Writable({ objectMode: true, write(_c, _e, done) { done(); } }); },
  removeAllState(nodeId, cb) { void nodeId; cb(); },
};

// The incremental extension: a plugin may add saveLog and applyCommands.
const incremental: Node.Persistence & Node.IncrementalPersistence = Object.assign({}, myPersistence, {
  saveLog(nodeId: string, delta: Node.LogDelta, cb: (err?: Error | null) => void) {
    void nodeId; void delta.truncateFrom; void delta.meta.lastIncludedIndex; void delta.entries[0]?.index; cb(null);
  },
  applyCommands(nodeId: string, batch: Array<{ index: number; command: any }>, cb: (err: Error | null, results?: any[]) => void) {
    void nodeId; cb(null, batch.map((b) => b.index));
  },
});
void Node({ transport: myTransport, persistence: incremental });
void Node({ transport: myTransport, persistence: new Node.MemoryPersistence({ incremental: true }) });

// the optional point-in-time extension
const withPointInTime: Node.Persistence = {
  ...myPersistence,
  createSnapshotReadStream(nodeId, cb) { void nodeId; cb(null, { index: 0, stream: Readable.from([]) }); },
};
void withPointInTime;

// ---------------------------------------------------------------- creating nodes

const options: Node.Options = {
  id: 'node-a',
  standby: false,
  cluster: 'c1',
  transport: myTransport,
  persistence: myPersistence,
  uuid: () => 'x',
  heartbeatInterval: 50,
  minElectionTimeout: 150,
  maxElectionTimeout: 300,
  commandTimeout: 3000,
  retainedLogEntries: 50,
  metadata: { zone: 'a' },
};
const a: Node.Node = Node(options);
const b = new Node({ transport: myTransport });
const c: Node.Node = Node.Node({ transport: myTransport, persistence: new Node.MemoryPersistence() });
const d = Node.default({ transport: myTransport });
const isEmitter: EventEmitter = a;
void isEmitter; void d;

const id: string = a.id;
const clusterId: string = a.cluster.id;
const stateName: Node.StateName = a.state.name;
const term: number = a.currentTerm();
const leader: string | null = a.currentLeader();
const meta: any = a.peerMeta('b');
const heartbeat: number = a.options.heartbeatInterval;
const nodeMeta: Node.JsonObject = a.metadata;
void id; void clusterId; void stateName; void term; void leader; void meta; void heartbeat; void nodeMeta;

const defaults: number = Node.defaults.commandTimeout;
const states: readonly Node.StateName[] = Node.states;
const events: readonly string[] = Node.events;
const code: Node.ErrorCode = Node.codes.ENOTLEADER;
void defaults; void states; void events; void code;

// ---------------------------------------------------------------- methods: callbacks and Promises

a.listen({ port: 9000 }, (err) => { if (err) console.error(err.code); });
a.listen(undefined);

a.command('x', (err, result) => { void err; void result; });
a.command({ op: 'put', key: 'k', value: [1, 'two', { three: null }] }, { timeout: 500 }, (err) => { void err; });
a.command<number>(42, undefined, (err, result?: number) => { void err; void result; });
a.command(Buffer.from('bytes'), { waitForNode: 'b' }, () => {});

async function promises(): Promise<void> {
  const r1: any = await a.command(['a', 1, true, null]);
  const r2: number | undefined = await a.command<number>('count', { timeout: 100 });
  await a.join('b');
  await a.join('c', { zone: 'c' });
  await a.addLearner('r', { role: 'reader' });
  const learners: string[] = a.members().filter((m) => !m.voter).map((m) => m.id);
  void learners;
  await a.leave('c');
  await a.read();
  await a.read({ lease: true, timeout: 200 });
  a.read((err) => { void err; });
  a.read({ timeout: 50 }, (err) => { void err; });
  await a.transferLeadership();
  await a.transferLeadership('b');
  a.transferLeadership(undefined, (err) => { void err; });
  await b.stop();
  await c.close();
  void r1; void r2;
}
void promises;

a.join('b', (err) => { if (err) console.error(err.message); });
a.join('b', { zone: 'b' }, (err) => { void err; });
a.addLearner('r', (err) => { void err; });
a.leave('b', (err) => { void err; });
a.stop((err) => { void err; });
a.close(() => {});

// ---------------------------------------------------------------- errors

a.command('x', (err) => {
  if (err && err.code === 'ENOTLEADER') {
    const where: string | null | undefined = err.leader;
    void where;
  }
  if (err) {
    const e: Error = err;
    const c2: Node.ErrorCode | undefined = err.code;
    void e; void c2;
  }
});

// ---------------------------------------------------------------- typed events

a.on('state', (name, node) => { const n: Node.StateName = name; const same: Node.Node = node; void n; void same; });
a.on('leader', (node) => { void node.id; });
a.once('joined', (peer) => { const pid: string = peer.id; void pid; void peer.metadata; });
a.on('left', (peer: Node.Peer) => { void peer; });
a.on('applied log', (index) => { const i: number = index; void i; });
a.on('done persisting', (lastApplied) => { const i: number = lastApplied; void i; });
a.on('error', (err) => { const c3: Node.ErrorCode | undefined = err.code; void c3; });
a.on('warning', (err) => { void err.message; });
a.on('vote granted', (candidate) => { const s: string = candidate; void s; });
a.on('outgoing call', (peer, type, args) => { void peer.id; const t: string = type; void t; void args; });
a.on('response', (peer, err, args) => { void peer; void (err && err.code); void args; });
a.prependListener('heartbeat', () => {});
a.off('heartbeat', () => {});
a.on('some custom event', (...args: any[]) => { void args; });
a.emit('applied log', 3);

// ---------------------------------------------------------------- built-ins

const tcp: Node.TcpTransport = Node.createTcpTransport({ requestTimeout: 1000, keepAlive: false });
const tcp2 = Node.createTcpTransport.createTcpTransport();
const addr: { host: string; port: number } = Node.createTcpTransport.parseAddress('tcp://127.0.0.1:9000');
const rt: number = Node.createTcpTransport.DEFAULTS.requestTimeout;
const secured: Node.TcpTransport = Node.createTcpTransport({
  secret: 'sixteen bytes at least', cluster: 'blue', maxInflight: 64, idleTimeout: 30000, maxConnections: 100,
  tls: { key: Buffer.alloc(0), cert: 'PEM', ca: ['PEM'], checkServerIdentity: () => undefined },
});
void tcp2; void addr; void rt; void secured;
const server = tcp.listen('tcp://127.0.0.1:9000', { host: '0.0.0.0' }, (peerId, peerMeta, conn) => {
  void peerId; void peerMeta;
  conn.receive((type, args, reply) => reply(null, { type, args }));
}, (err) => { void err; });
server.close();
const conn = tcp.connect('me', {}, 'tcp://127.0.0.1:9000', {});
const connected: boolean = conn.connected;
conn.send('ping', [1], (err, result) => { void err; void result; });
conn.close();
void connected;

const sm: Node.KvStateMachine = Node.createKvStateMachine({ batchSize: 10 });
sm.apply({ op: 'put', key: 'k', value: 1 } as Node.KvCommand, 1);
const v: any = sm.get('k');
const has: boolean = sm.has(1);
const size: number = sm.size;
void v; void has; void size; void sm.toObject();
const sm2 = new Node.createKvStateMachine.KvStateMachine();
void sm2;

const files: Node.FilePersistence = Node.createFilePersistence({ dir: '/tmp/x', compactBytes: 1 << 20 });
files.on('warning', (err: Error) => console.warn(err.message));
const filesSm: Node.KvStateMachine = files.stateMachine('node-a');
void filesSm;
const durable = Node({ id: 'tcp://127.0.0.1:9001', transport: tcp, persistence: files });
void durable;
files.load('node-a').then((loaded) => loaded.get('k'));
files.close().then(() => {});
const walFiles = Node.createFilePersistence({ dir: '/tmp/z', segmentBytes: 1 << 20 });
walFiles.saveLog('node-a', { currentTerm: 1, votedFor: null, peers: [], meta: { lastIncludedIndex: 0, lastIncludedTerm: 0 },
  truncateFrom: 1, entries: [{ term: 1, index: 1, command: 'x' }] }, (err) => { void err; });
walFiles.applyCommands('node-a', [{ index: 1, command: { op: 'put', key: 'k', value: 1 } }], (err, results) => {
  void err; void results;
});
const segmentBytes: number = walFiles.segmentBytes;
void segmentBytes;

class Counter implements Node.StateMachine {
  n = 0;
  apply(command: any): number { this.n += Number(command) || 0; return this.n; }
  *snapshot(): Iterable<unknown> { yield { n: this.n }; }
  reset(): void { this.n = 0; }
  restore(chunk: { n: number }): void { this.n = chunk.n; }
}
const counters: Node.FilePersistence<Counter> = Node.createFilePersistence({ dir: '/tmp/y', stateMachine: () => new Counter() });
const count: number = counters.stateMachine('n1').n;
void count;
void Node.createFilePersistence.safeName('tcp://x:1');

// ---------------------------------------------------------------- the key-value store and client

async function kv(): Promise<void> {
  const store: Node.KvStore = Node.createKvStore({
    id: 'tcp://127.0.0.1:9001',
    dir: '/tmp/kv',
    bootstrap: true,
    peers: ['tcp://127.0.0.1:9002'],
    listen: { host: '0.0.0.0' },
    transport: { requestTimeout: 2000 },
    heartbeatInterval: 50,
    commandTimeout: 2000,
    metadata: { zone: 'a' },
  });
  store.on('warning', (err) => { void err.code; });
  store.on('state', (name) => { const s: Node.StateName = name; void s; });
  const started: Node.KvStore = await store.start();
  void started;
  await store.put('k', { any: ['json', 1, null] });
  await store.put(7, 'seven');
  const got = await store.get<{ any: unknown[] }>('k');
  if (got !== undefined) void got.any;
  const existed: boolean = await store.del('k');
  const local: unknown = await store.localGet('k');
  await store.join('tcp://127.0.0.1:9003');
  await store.leave('tcp://127.0.0.1:9003');
  const l: string | null = await store.leader(1000);
  const st: Node.KvStoreStatus = store.status();
  const term2: number = st.term;
  if (store.node) void store.node.currentTerm();
  await store.stop();
  void existed; void local; void l; void term2;

  const client: Node.KvClient = Node.createKvClient(['tcp://127.0.0.1:9001'], { timeout: 5000, retryAmbiguous: false, secret: 'sixteen bytes at least' });
  await client.put('a', 1);
  const n = await client.get<number>('a');
  const deleted: boolean = await client.del('a');
  const cl: string | null = client.leader;
  await client.close();
  void n; void deleted; void cl;

  try {
    await store.put('x', 1);
  } catch (e) {
    const err = e as Node.SkiffError;
    if (err.code === 'ENOTLEADER' && typeof err.leader === 'string') await Node.createKvClient([err.leader]).get('x');
  }
}
void kv;

// ---------------------------------------------------------------- watching a node

async function watching(node: Node.Node): Promise<void> {
  const s: Node.NodeStats = node.stats();
  const commit: number = s.commitIndex;
  const first: number = s.firstLogIndex;
  const leaderId: string | null = s.leader;
  for (const m of s.members) {
    const matched: number | null = m.matchIndex;
    const voter: boolean = m.voter;
    const bytes: number = m.snapshot.bytes;
    void matched; void voter; void bytes;
  }
  const elections: number = s.counters.electionsStarted;
  const saveBuckets: number[] = s.latency.save.buckets;
  const applied: Node.NodeStats = await node.waitFor({ applied: commit }, 1000);
  await node.waitFor({ state: 'leader' });
  await node.waitFor({ leader: true }, 500);
  await node.waitFor({ leader: 'n2' });
  await node.waitFor({ voter: 'n3' }, 5000);
  const c: collectMetrics.Collector = collectMetrics(node);
  const text: string = await c.registry.metrics();
  c.remove();
  collectMetrics.collect(node, c.registry).remove();
  const store = Node.createKvStore({ id: 'tcp://127.0.0.1:9001', dir: '/tmp/kv', metrics: { port: 9464, host: '0.0.0.0' } });
  await store.start();
  if (store.metrics) await store.metrics.close();
  void first; void leaderId; void elections; void saveBuckets; void applied; void text;
}
void watching;
