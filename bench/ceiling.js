'use strict';

// `node bench/ceiling.js`: how fast could any engine go on the benchmark's plugins?
//
// This drives the benchmark's own in-memory transport and persistence (./plugins.js) the way an
// ideal engine would, and does nothing else: no Raft, no napi, no bookkeeping.
//   - Commands are batched: every `--batch` new entries (fewer only when the leader's state machine
//     would otherwise run out of work) cost each node one `saveMeta`
//     (of the whole state, `--log` entries, as the plugin contract has it) and each follower one
//     AppendEntries and its reply, all through the plugins (so JSON-cloned, setImmediate).
//   - Nothing waits for replication: entries are applied as soon as their batch is handed over.
//   - `applyCommand` runs one at a time per node, as the contract requires; the leader's
//     callback answers the client, which sends its next command at once.
// The figure it prints is an upper bound for an engine on this machine, with these plugins.
//
//   node bench/ceiling.js [--nodes=3] [--clients=256] [--batch=64] [--log=300] [--seconds=5]

const { Hub, Persistence } = require('./plugins');

function arg(name, fallback) {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  const v = a ? Number(a.slice(name.length + 3)) : fallback;
  if (!Number.isFinite(v) || v <= 0) {
    console.error(`--${name} must be a positive number`);
    process.exit(2);
  }
  return v;
}

const NODES = arg('nodes', 3);
const CLIENTS = arg('clients', 256);
const BATCH = arg('batch', 64);
const LOG = arg('log', 300);
const SECONDS = arg('seconds', 5);

const hub = new Hub();
const persistence = new Persistence();
const ids = Array.from({ length: NODES }, (_, i) => `ceil-n${i + 1}`);
const uuid = () => 'xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx'.replace(/[xy]/g, () => ((Math.random() * 16) | 0).toString(16));

// Each follower listens and answers AppendEntries at once.
for (const id of ids.slice(1)) {
  hub.listen(id, {}, (peer, meta, conn) => {
    conn.receive((type, args, reply) => reply(null, { term: 1, success: true, lastApplied: args.prevLogIndex }));
  });
}
const conns = ids.slice(1).map((id) => hub.connect(ids[0], {}, id, {}));

const log = []; // the leader's log: {term, index, command, uuid}
const nodes = ids.map((id) => ({ id, queue: [], applying: false }));
const waiting = new Map(); // index -> client callback
let unbatched = 0;
let flushScheduled = false;

function state() {
  return {
    currentTerm: 1,
    votedFor: ids[0],
    log: { meta: { lastIncludedIndex: Math.max(0, lastIndex - LOG), lastIncludedTerm: 1 }, entries: log.slice(-LOG) },
    peers: ids.slice(1).map((id) => ({ id, metadata: {} })),
  };
}

function flush() {
  flushScheduled = false;
  if (unbatched === 0) return;
  if (unbatched < BATCH && nodes[0].queue.length > 0) {
    flushScheduled = true;
    setImmediate(flush);
    return;
  }
  const entries = log.slice(-unbatched);
  unbatched = 0;
  for (const n of nodes) persistence.saveMeta(n.id, state(), () => {});
  for (const conn of conns) {
    conn.send('AppendEntries', {
      term: 1, leaderId: ids[0], prevLogIndex: entries[0].index - 1, prevLogTerm: 1, entries, leaderCommit: lastIndex,
    }, () => {});
  }
  for (const n of nodes) {
    for (const e of entries) n.queue.push(e);
    run(n);
  }
}

function run(n) {
  if (n.applying) return;
  const e = n.queue.shift();
  if (!e) return;
  n.applying = true;
  persistence.applyCommand(n.id, e.index, e.command, () => {
    n.applying = false;
    if (n === nodes[0]) {
      const cb = waiting.get(e.index);
      waiting.delete(e.index);
      if (cb) cb();
    }
    run(n);
  });
}

let lastIndex = 0;

function command(cmd, cb) {
  lastIndex += 1;
  const index = lastIndex;
  log.push({ term: 1, index, command: JSON.parse(JSON.stringify(cmd)), uuid: uuid() });
  // keep the array bounded, but never below what the next save and batch need
  const keep = 2 * Math.max(LOG, BATCH);
  if (log.length > 2 * keep) log.splice(0, log.length - keep);
  waiting.set(index, cb);
  unbatched += 1;
  // a partial batch goes out only when the leader's state machine would otherwise run dry
  if (unbatched >= BATCH || nodes[0].queue.length === 0) flush();
  else if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

setImmediate(() => {
  let done = 0;
  let seq = 0;
  const t0 = process.hrtime.bigint();
  const until = Date.now() + SECONDS * 1000;
  let active = CLIENTS;
  const finish = () => {
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(`ceiling: ${NODES} nodes, C=${CLIENTS}, batch ${BATCH}, saveMeta of ${LOG} entries: ` +
      `${Math.round(done / s).toLocaleString('en-US')} cmd/s (${done.toLocaleString('en-US')} commands in ${s.toFixed(2)} s)`);
    for (const c of conns) c.close();
  };
  const client = () => {
    if (Date.now() > until) {
      active -= 1;
      if (active === 0) finish();
      return;
    }
    const i = seq++;
    command({ op: 'put', key: `k${i % 1000}`, value: i }, () => {
      done += 1;
      client();
    });
  };
  for (let c = 0; c < CLIENTS; c++) client();
  // a client whose command was never answered means the figure is wrong: fail loudly
  process.on('exit', () => {
    if (active > 0) {
      console.error(`ceiling: ${active} clients never got an answer`);
      process.exitCode = 1;
    }
  });
});
