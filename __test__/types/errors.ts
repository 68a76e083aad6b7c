// Misuses of the API that the types must refuse. Every `// @ts-expect-error` below must be needed:
// if the types got too loose, tsc reports the directive as unused and __test__/types.test.js fails.
// The test also strips the directives and checks that each marked line really is an error.

import Node = require('../../index');

const transport = Node.createTcpTransport();
const node = Node({ transport });

// ---------------------------------------------------------------- construction and options

// @ts-expect-error options are required
Node();
// @ts-expect-error a transport is required
Node({ id: 'a' });
// @ts-expect-error heartbeatInterval is a number
Node({ transport, heartbeatInterval: '50' });
// @ts-expect-error standby is a boolean
Node({ transport, standby: 'yes' });
// @ts-expect-error metadata is an object
Node({ transport, metadata: 'zone a' });
// @ts-expect-error a transport needs connect
Node({ transport: { listen() {} } });

// ---------------------------------------------------------------- status

// @ts-expect-error not a state name
const bad: Node.StateName = 'running';
// @ts-expect-error the term is a number
const term: string = node.currentTerm();
// @ts-expect-error the leader may be null
node.currentLeader().length;
// @ts-expect-error the id is read-only
node.id = 'other';
// @ts-expect-error codes are read-only
Node.codes.ENOTLEADER = 'x';
// @ts-expect-error an error code is a string
const code: Node.ErrorCode = 5;
void bad; void term; void code;

// ---------------------------------------------------------------- commands and membership

// @ts-expect-error a function is not a command
node.command(() => 1);
// @ts-expect-error undefined is not a command
node.command(undefined);
// @ts-expect-error a bigint is not a command
node.command(10n);
// @ts-expect-error timeout is a number
node.command('x', { timeout: '5' });
// @ts-expect-error lease is a boolean
node.read({ lease: 'yes' });
// @ts-expect-error a peer id is a string
node.transferLeadership(7);
// @ts-expect-error unknown command option
node.command('x', { timeot: 5 });
// @ts-expect-error a peer id is a string
node.join(42);
// @ts-expect-error leave takes no metadata
node.leave('b', { zone: 'b' }, () => {});
async function results(): Promise<void> {
  // @ts-expect-error stop resolves with nothing
  const n: number = await node.stop();
  void n;
}
void results;

// ---------------------------------------------------------------- events

// @ts-expect-error a listener's parameters are typed from the event
node.on('applied log', (index) => { const s: string = index; void s; });
// @ts-expect-error a peer has an id, not a name
node.on('joined', (peer) => { void peer.name; });

// ---------------------------------------------------------------- plugins

// @ts-expect-error a persistence plugin needs every method
const persistence: Node.Persistence = { loadMeta() {}, saveMeta() {} };
// @ts-expect-error a connection needs receive
const connection: Node.Connection = Object.assign(new (require('events').EventEmitter)(), { send() {}, close() {} }) as { send(): void; close(): void };
void persistence; void connection;

// ---------------------------------------------------------------- built-ins

// @ts-expect-error unknown transport option
Node.createTcpTransport({ requestTimeot: 5 });
// @ts-expect-error requestTimeout is a number
Node.createTcpTransport({ requestTimeout: '5' });
// @ts-expect-error the file persistence needs a dir
Node.createFilePersistence({});
// @ts-expect-error a state machine needs apply, snapshot, reset, restore
Node.createFilePersistence({ dir: '/tmp', stateMachine: { apply() {} } });
// @ts-expect-error a saveLog delta needs truncateFrom
Node.createFilePersistence({ dir: '/tmp' }).saveLog('n', { currentTerm: 1, votedFor: null, peers: [], meta: { lastIncludedIndex: 0, lastIncludedTerm: 0 }, entries: [] }, () => {});
// @ts-expect-error segmentBytes is a number
Node.createFilePersistence({ dir: '/tmp', segmentBytes: '4M' });
// @ts-expect-error batchSize is a number
Node.createKvStateMachine({ batchSize: 'big' });

// @ts-expect-error a store needs a dir
Node.createKvStore({ id: 'tcp://127.0.0.1:1' });
// @ts-expect-error standby is decided by bootstrap
Node.createKvStore({ id: 'tcp://127.0.0.1:1', dir: '/tmp', standby: true });
// @ts-expect-error a store always uses the file persistence
Node.createKvStore({ id: 'tcp://127.0.0.1:1', dir: '/tmp', persistence: new Node.MemoryPersistence() });
// @ts-expect-error peers are addresses
Node.createKvStore({ id: 'tcp://127.0.0.1:1', dir: '/tmp', peers: [1, 2] });

async function kv(store: Node.KvStore, client: Node.KvClient): Promise<void> {
  // @ts-expect-error a key is a string or a number
  await store.put({ k: 1 }, 1);
  // @ts-expect-error a function is not a value
  await store.put('k', () => 1);
  // @ts-expect-error del resolves with a boolean
  const s: string = await store.del('k');
  // @ts-expect-error status().leader may be null
  store.status().leader.length;
  // @ts-expect-error the client takes an array of addresses
  Node.createKvClient('tcp://127.0.0.1:1');
  // @ts-expect-error the client's leader is read-only
  client.leader = 'tcp://127.0.0.1:2';
  // @ts-expect-error retryAmbiguous is a boolean
  Node.createKvClient(['tcp://127.0.0.1:1'], { retryAmbiguous: 'no' });
  void s;
}
void kv;

async function watching(node: Node.Node): Promise<void> {
  // @ts-expect-error a state is one of the state names
  await node.waitFor({ state: 'sleeping' });
  // @ts-expect-error leader is an id or true
  await node.waitFor({ leader: false });
  // @ts-expect-error applied is an index
  await node.waitFor({ applied: '5' });
  // @ts-expect-error the timeout is a number of ms
  await node.waitFor({ voter: 'n2' }, '1s');
  // @ts-expect-error matchIndex may be null
  node.stats().members[0].matchIndex.toFixed();
  // @ts-expect-error metrics needs a port
  Node.createKvStore({ id: 'tcp://127.0.0.1:1', dir: '/tmp', metrics: { host: '0.0.0.0' } });
}
void watching;
