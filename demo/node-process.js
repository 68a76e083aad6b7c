'use strict';

// One member of a replicated key-value store (lib/kv.js) in its own process.
//
//   node demo/node-process.js --id tcp://127.0.0.1:9001 --dir /tmp/kv [--bootstrap]
//                             [--peers tcp://127.0.0.1:9002,tcp://127.0.0.1:9003]
//                             [--listen-host 0.0.0.0] [--verbose]
//
// Run by hand, it starts the store and logs its state changes until SIGINT/SIGTERM.
//
// With SKIFF_SECRET in the environment, the store (and the clients of the 'client' command) use it
// as the TCP transport's shared secret: a connection that cannot prove it knows it is refused.
// (From the environment rather than the command line, where other users could read it.)
//
// Run with an IPC channel (child_process.fork, or spawn with 'ipc' in stdio, which also works
// through `ip netns exec`), it is remote-controlled by its parent:
//   parent → child  { req: <n>, cmd: 'start' | 'status' | 'put' | 'get' | 'del' | 'localGet' |
//                     'localCount' | 'join' | 'leave' | 'client' | 'stop', ...arguments }
//   child → parent  { req: <n>, ok: true, result, isUndefined } | { req: <n>, ok: false, error: { message, code, leader } }
//                   { event: 'started', status } once the store is started (with --id given),
//                   { event: 'state', status } on every state change.
// Without --id on the command line, the parent sends 'start' with { id, dir, bootstrap, peers,
// options }. The process exits when the channel closes (its parent is gone) or after 'stop'.

const { createKvStore, createKvClient } = require('../lib/kv');

function parseArgs(argv) {
  const out = { peers: [], bootstrap: false, verbose: false, options: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--id') out.id = next();
    else if (a === '--dir') out.dir = next();
    else if (a === '--bootstrap') out.bootstrap = true;
    else if (a === '--peers') out.peers = next().split(',').filter(Boolean);
    else if (a === '--listen-host') out.listenHost = next();
    else if (a === '--verbose') out.verbose = true;
    else if (a === '--options') out.options = JSON.parse(next());
    else throw new Error(`unknown argument ${a}`);
  }
  return out;
}

const ipc = typeof process.send === 'function';
let store = null;
let verbose = false;

function send(msg) {
  if (ipc && process.connected) process.send(msg);
}

function errorToWire(err) {
  return {
    message: err && err.message ? err.message : String(err),
    code: err && err.code,
    leader: err && err.leader,
  };
}

// Options with the secret from the environment, unless they carry their own.
function withSecret(options) {
  const secret = process.env.SKIFF_SECRET;
  return secret && options.secret === undefined ? Object.assign({}, options, { secret }) : options;
}

async function start(cfg) {
  if (store) throw Object.assign(new Error('already started'), { code: 'EALREADY' });
  verbose = verbose || Boolean(cfg.verbose);
  store = createKvStore(Object.assign(withSecret(cfg.options || {}), {
    id: cfg.id,
    dir: cfg.dir,
    bootstrap: Boolean(cfg.bootstrap),
    peers: cfg.peers || [],
    listen: cfg.listenHost ? { host: cfg.listenHost } : undefined,
  }));
  store.on('warning', (err) => {
    if (verbose) console.error(`[${cfg.id}] warning: ${err.message}`);
  });
  store.on('state', () => {
    const status = store.status();
    send({ event: 'state', status });
    if (!ipc || verbose) console.log(`[${cfg.id}] ${status.state} (term ${status.term}, leader ${status.leader})`);
  });
  await store.start();
  return store.status();
}

function needStore() {
  if (!store) throw Object.assign(new Error('store is not started'), { code: 'ESTOPPED' });
  return store;
}

const commands = {
  start: (m) => start(m),
  status: () => (store ? store.status() : { state: 'idle' }),
  put: (m) => needStore().put(m.key, m.value),
  get: (m) => needStore().get(m.key),
  del: (m) => needStore().del(m.key),
  localGet: (m) => needStore().localGet(m.key),
  // How many of `keys` this store's own copy has with the expected values ({ key: value }).
  localCount: async (m) => {
    let n = 0;
    for (const [key, value] of Object.entries(m.expect)) {
      if (JSON.stringify(await needStore().localGet(key)) === JSON.stringify(value)) n++;
    }
    return n;
  },
  join: (m) => needStore().join(m.peer),
  leave: (m) => needStore().leave(m.peer),
  // Runs operations through a redirecting client (createKvClient) from this process.
  client: async (m) => {
    const client = createKvClient(m.addresses, withSecret(m.clientOptions || {}));
    try {
      const results = [];
      for (const op of m.ops) {
        if (op.op === 'put') results.push(await client.put(op.key, op.value));
        else if (op.op === 'get') results.push(await client.get(op.key));
        else if (op.op === 'del') results.push(await client.del(op.key));
        else throw Object.assign(new Error(`unknown op ${op.op}`), { code: 'EBADARGS' });
      }
      return { results, leader: client.leader };
    } finally {
      await client.close();
    }
  },
  stop: async () => {
    if (store) await store.stop();
    return null;
  },
};

async function handle(msg) {
  if (!msg || typeof msg !== 'object' || msg.req === undefined) return;
  const fn = commands[msg.cmd];
  try {
    if (!fn) throw Object.assign(new Error(`unknown command ${msg.cmd}`), { code: 'EBADARGS' });
    const result = await fn(msg);
    // IPC carries JSON: an undefined result (a missing key) is flagged, not lost.
    send({ req: msg.req, ok: true, result: result === undefined ? null : result, isUndefined: result === undefined });
  } catch (err) {
    send({ req: msg.req, ok: false, error: errorToWire(err) });
  }
  if (msg.cmd === 'stop') setImmediate(() => process.exit(0));
}

async function stopAndExit(code) {
  const timer = setTimeout(() => process.exit(code), 3000);
  timer.unref();
  try {
    if (store) await store.stop();
  } catch (_) { /* exiting anyway */ }
  process.exit(code);
}

function main() {
  let cfg;
  try {
    cfg = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`node-process: ${e.message}`);
    process.exit(2);
  }
  verbose = cfg.verbose;
  if (ipc) {
    process.on('message', (msg) => { handle(msg); });
    process.on('disconnect', () => stopAndExit(0)); // the parent is gone
  } else if (!cfg.id) {
    console.error('usage: node demo/node-process.js --id tcp://host:port --dir DIR [--bootstrap] [--peers a,b]');
    process.exit(2);
  }
  process.on('SIGTERM', () => stopAndExit(0));
  process.on('SIGINT', () => stopAndExit(0));
  if (cfg.id) {
    start(cfg).then((status) => {
      send({ event: 'started', status });
      if (!ipc) console.log(`[${cfg.id}] started: ${status.state} (term ${status.term})`);
    }, (err) => {
      console.error(`[${cfg.id}] failed to start: ${err.message}`);
      send({ event: 'failed', error: errorToWire(err) });
      process.exit(1);
    });
  }
}

main();
