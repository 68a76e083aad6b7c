'use strict';

// Helpers to run in-process clusters of skiff-rs nodes over the in-memory plugins.
//
//   const c = await startCluster(t, 3);   // registers c.stop() with t.after()
//   const leader = await c.waitForLeader();
//   await c.waitApplied(10);               // every running node applied 10 commands
//
// Every wait is bounded; on timeout it rejects with a message saying what it was waiting for.

const Node = require('../..');
const { MemoryNetwork: Hub, MemoryPersistence: Persistence } = require('../../lib/memory');

const DEFAULT_WAIT = 10000;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Resolves with the first truthy value of `fn()`, polled every `interval` ms, or rejects after
 * `timeout` ms with `what` in the message.
 */
async function waitUntil(fn, what, { timeout = DEFAULT_WAIT, interval = 10 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(interval);
  }
}

/** Resolves with the event's arguments, or rejects after `timeout` ms. */
function waitForEvent(emitter, name, { timeout = DEFAULT_WAIT, filter } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.removeListener(name, on);
      reject(new Error(`timed out after ${timeout} ms waiting for event ${JSON.stringify(name)}`));
    }, timeout);
    function on(...args) {
      if (filter && !filter(...args)) return;
      clearTimeout(timer);
      emitter.removeListener(name, on);
      resolve(args);
    }
    emitter.on(name, on);
  });
}

/** Resolves when `node.state.name === state` (checked at once and on every `state` event). */
function waitForState(node, state, opts = {}) {
  if (node.state.name === state) return Promise.resolve();
  return waitForEvent(node, 'state', Object.assign({}, opts, { filter: (s) => s === state }))
    .then(() => undefined);
}

/** Rejects if `promise` does not settle within `timeout` ms. */
function within(promise, timeout, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${timeout} ms`)), timeout);
    }),
  ]).finally(() => clearTimeout(timer));
}

class Cluster {
  constructor({ hub, persistence, nodeOptions, prefix } = {}) {
    this.hub = hub || new Hub();
    this.persistence = persistence || new Persistence();
    this.nodeOptions = nodeOptions || {};
    this.prefix = prefix || 'n';
    this.nodes = [];
    this.all = []; // every node ever created, for stop()
    this.counter = 0;
    this.warnings = [];
    this.errors = [];
  }

  nextId() {
    this.counter += 1;
    return `${this.prefix}${this.counter}`;
  }

  /** Creates, registers and listens a node. */
  add(options = {}) {
    const opts = Object.assign({
      transport: this.hub,
      persistence: this.persistence,
    }, this.nodeOptions, options);
    if (!opts.id) opts.id = this.nextId();
    const node = Node(opts);
    // collect errors/warnings so that nothing crashes and tests can inspect them
    node.on('warning', (e) => this.warnings.push({ node: node.id, error: e }));
    node.on('error', (e) => this.errors.push({ node: node.id, error: e }));
    node.listen(node.id);
    this.nodes.push(node);
    this.all.push(node);
    return node;
  }

  running() {
    return this.nodes.filter((n) => n.state.name !== 'stopped');
  }

  byId(id) {
    return this.nodes.find((n) => n.id === id && n.state.name !== 'stopped');
  }

  /**
   * Resolves with the leader once exactly one running node (of `nodes`, default all running) is
   * leader in the highest term and every other one of them follows it.
   */
  async waitForLeader(nodes, opts = {}) {
    const pick = () => {
      const set = (nodes || this.running()).filter((n) => n.state.name !== 'stopped');
      if (set.length === 0) return null;
      const leaders = set.filter((n) => n.state.name === 'leader');
      if (leaders.length !== 1) return null;
      const leader = leaders[0];
      const term = leader.currentTerm();
      const agreed = set.every((n) => n === leader ||
        (n.currentLeader() === leader.id && n.currentTerm() === term && n.state.name === 'follower'));
      return agreed ? leader : null;
    };
    return waitUntil(pick, 'one agreed leader', opts);
  }

  /** Resolves when every running node (or `nodes`) has applied at least `count` commands. */
  async waitApplied(count, nodes, opts = {}) {
    const set = () => (nodes || this.running());
    return waitUntil(() => set().every((n) => this.persistence.commands(n.id).length >= count),
      `every node to apply ${count} commands (have ${set().map((n) =>
        `${n.id}:${this.persistence.commands(n.id).length}`).join(' ')})`, opts);
  }

  commands(id) {
    return this.persistence.commands(id);
  }

  /** Stops every node this cluster ever created; bounded. */
  async stop() {
    const nodes = this.all.slice();
    await within(Promise.all(nodes.map((n) => n.stop().catch(() => undefined))), 10000,
      `stopping ${nodes.length} nodes`);
  }
}

/**
 * Starts an `n`-node cluster: the first node bootstraps (becomes leader alone), the others start
 * as `standby` and are joined by the leader. Resolves when every node follows the leader.
 * `t` (a node:test context) gets `t.after(() => cluster.stop())`.
 */
async function startCluster(t, n, options = {}) {
  const cluster = new Cluster(options);
  if (t && typeof t.after === 'function') t.after(() => cluster.stop());
  const first = cluster.add();
  await waitForState(first, 'leader', { timeout: DEFAULT_WAIT });
  const rest = [];
  for (let i = 1; i < n; i++) rest.push(cluster.add({ standby: true }));
  await within(Promise.all(rest.map((node) => first.join(node.id, options.peerMetadata ?
    options.peerMetadata(node.id) : undefined))), DEFAULT_WAIT, 'joining the standby nodes');
  await cluster.waitForLeader();
  return cluster;
}

/**
 * Waits until a leader no longer keeps its log for a follower cut off now: it does while it heard
 * from the follower within two election timeouts (the follower may only have missed a message).
 * `maxElectionTimeout`: the cluster's (300 by default).
 */
function untilLeaderLetsGo(maxElectionTimeout = 300) {
  return sleep(2 * maxElectionTimeout + 100);
}

/** Runs `fn(i)` for i in [0, count) with at most `limit` in flight; resolves with the failures. */
async function pool(count, limit, fn) {
  const failures = [];
  let next = 0;
  async function worker() {
    while (next < count) {
      const i = next++;
      try {
        await fn(i);
      } catch (err) {
        failures.push(`#${i}: ${err.code} ${err.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  return failures;
}

module.exports = {
  Node,
  pool,
  untilLeaderLetsGo,
  Cluster,
  startCluster,
  waitUntil,
  waitForEvent,
  waitForState,
  within,
  sleep,
  DEFAULT_WAIT,
};
