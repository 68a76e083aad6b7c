'use strict';

// Starting and stopping an N-node cluster of either engine in this process, over fresh in-memory
// plugins (./plugins.js). Both follow skiff-algorithm's conventions: the first node bootstraps and
// becomes leader of a one-node cluster, the others start `standby: true` and the leader `join`s
// them one at a time. A cluster object has `leader`, `command(cmd, cb)`, `redirect(err)` (after
// ENOTLEADER: aim at the new leader, as a client would), `stop()` (a Promise), and `errors` (errors
// the nodes emitted, counted, never thrown).

const { Hub, Persistence } = require('./plugins');

let runCounter = 0;

function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function cb2p(fn) {
  return new Promise((resolve, reject) => fn((err) => (err ? reject(err) : resolve())));
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitUntil(test, ms, what) {
  const deadline = Date.now() + ms;
  while (!test()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}

function onceState(node, name, ms, what) {
  if (node.state && node.state.name === name) return Promise.resolve();
  return within(new Promise((resolve) => node.once(name, () => resolve())), ms, what);
}

// ------------------------------------------------------------------------------------------------

const ENGINES = {
  'skiff-algorithm': {
    label: `skiff-algorithm ${require('skiff-algorithm/package.json').version}`,
    load: () => require('skiff-algorithm'),
    legacy: true,
  },
  'skiff-rs': {
    label: `skiff-rs ${require('../package.json').version}`,
    load: () => require('..'),
    legacy: false,
  },
};

/**
 * Starts an `n`-node cluster of `engine` ('skiff-algorithm' or 'skiff-rs').
 * `options` are node options given to every node (same for both engines). With `pipelining:
 * false` the transport declares nothing, as the transports written for skiff-algorithm: skiff-rs
 * then keeps one request in flight per connection (skiff-algorithm always does). With
 * `incremental: true` the persistence has the incremental extension (saveLog, applyCommands).
 */
async function startCluster(engine, n, options = {}, { pipelining = true, incremental = false } = {}) {
  const spec = ENGINES[engine];
  const Node = spec.load();
  const hub = new Hub();
  if (!pipelining) delete hub.pipelining;
  const persistence = new Persistence({ incremental });
  const run = ++runCounter;
  const nodes = [];
  const errors = { count: 0, first: null };
  const note = (err) => {
    errors.count += 1;
    if (!errors.first) errors.first = err;
  };

  // skiff-algorithm's Peer objects emit `error` (a failed send or snapshot stream towards a
  // stopped peer) where nobody listens, which would crash the process: listen on every peer.
  const guardPeer = (peer) => {
    if (peer && typeof peer.on === 'function' && !peer.__benchGuarded) {
      peer.__benchGuarded = true;
      peer.on('error', note);
    }
  };
  const guardAll = () => {
    for (const node of nodes) {
      const peers = node.commonState && node.commonState.persisted && node.commonState.persisted.peers;
      if (Array.isArray(peers)) peers.forEach(guardPeer);
    }
  };

  const add = (i, extra) => {
    const id = `${spec.legacy ? 'alg' : 'rs'}${run}-n${i}`;
    const node = Node(Object.assign({ id, transport: hub, persistence }, options, extra));
    node.on('error', note);
    node.on('warning', () => {});
    if (spec.legacy) {
      node.on('joined', guardPeer);
      node.on('reconnected', guardPeer);
    }
    node.listen(id);
    nodes.push(node);
    return node;
  };

  const leader = add(1, {});
  await onceState(leader, 'leader', 5000, `${engine}: the first node becoming leader`);
  for (let i = 2; i <= n; i++) {
    const node = add(i, { standby: true });
    await within(cb2p((cb) => leader.join(node.id, cb)), 10000, `${engine}: joining ${node.id}`);
  }
  // every follower has heard from the leader
  await waitUntil(() => nodes.every((node) => node === leader ||
    (node.state.name === 'follower' && (!node.currentLeader || spec.legacy ||
      node.currentLeader() === leader.id))), 10000, `${engine}: followers of ${leader.id}`);
  guardAll();

  let stopped = null;
  let target = leader;
  const cluster = {
    engine,
    label: incremental ? `${spec.label} (saveLog + applyCommands)` : spec.label,
    nodes,
    errors,
    persistence,
    leaderChanges: 0,
    get leader() {
      return target;
    },
    command(cmd, cb) {
      target.command(cmd, cb);
    },
    /**
     * After ENOTLEADER: aim at the leader `err` names, or at a node that says it leads. Returns
     * false when no leader is known yet (the caller waits a little and tries again).
     */
    redirect(err) {
      if (target.state.name === 'leader') return true;
      const named = err && typeof err.leader === 'string' ? nodes.find((x) => x.id === err.leader) : null;
      const next = named && named.state.name === 'leader' ? named :
        nodes.find((x) => x.state.name === 'leader');
      if (!next) return false;
      if (next !== target) {
        target = next;
        cluster.leaderChanges += 1;
        guardAll();
      }
      return true;
    },
    stop() {
      if (!stopped) {
        guardAll();
        stopped = within(Promise.all(nodes.map((node) => cb2p((cb) => node.stop(cb)).catch(note))),
          10000, `${engine}: stopping the cluster`);
      }
      return stopped;
    },
  };
  return cluster;
}

module.exports = { ENGINES, startCluster, sleep };
