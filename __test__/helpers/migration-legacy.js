'use strict';

// Helpers for the migration tests: running a real skiff-algorithm 0.8.2 cluster over the
// in-memory plugins of ./memory.js (they work with it unchanged), and checking what each engine
// left in the persistence store.
//
// skiff-algorithm's quirks that shape this code:
//   - the first node becomes leader of a one-node cluster, the others start `standby` and the
//     leader joins them one by one (`join(id, cb)`, without metadata: it would be lost anyway);
//   - its callbacks are Node style and it has no promises;
//   - a Peer emits `error` where nobody listens when a snapshot stream to it fails (a stopped
//     peer), which would crash the process: `guardPeers` adds listeners.
//   - its peer calls arm a `commandTimeout` timer that is never cleared: keep that option small so
//     that nothing keeps the process alive for long after the cluster stops.

const assert = require('node:assert/strict');
const Legacy = require('skiff-algorithm');
const { waitUntil, within } = require('./cluster');

function cb2p(fn) {
  return new Promise((resolve, reject) => fn((err) => (err ? reject(err) : resolve())));
}

/** `n` commands of every JSON kind the original's tests use (numbers, strings, arrays, objects). */
function mixedCommands(n, tag) {
  const out = [];
  for (let i = 0; i < n; i++) {
    switch (i % 8) {
      case 0: out.push(i); break;
      case 1: out.push(`${tag}-${i}`); break;
      case 2: out.push([i, `${tag}`, { nested: [i, null, true] }]); break;
      case 3: out.push({ tag, i, ok: i % 2 === 0, list: [1, 2, 3], deep: { s: 'héllo ✓' } }); break;
      case 4: out.push(-i - 0.5); break;
      case 5: out.push(''); break;
      case 6: out.push([]); break;
      default: out.push({}); break;
    }
  }
  return out;
}

class LegacyCluster {
  constructor({ hub, persistence, options = {} }) {
    this.hub = hub;
    this.persistence = persistence;
    this.options = Object.assign({ commandTimeout: 1000 }, options);
    this.nodes = [];
    this.errors = [];
    this.stopped = new Set();
  }

  add(id, extra = {}) {
    const node = Legacy(Object.assign({
      id, transport: this.hub, persistence: this.persistence,
    }, this.options, extra));
    node.on('error', (err) => this.errors.push({ node: id, error: err }));
    node.on('warning', () => {}); // replication errors towards a stopped peer
    node.listen(id);
    this.nodes.push(node);
    return node;
  }

  byId(id) {
    return this.nodes.find((n) => n.id === id);
  }

  /** First id bootstraps and leads; the others are standby nodes it joins. */
  async start(ids) {
    const leader = this.add(ids[0]);
    await within(new Promise((resolve) => leader.once('leader', resolve)), 5000,
      'the first skiff-algorithm node becoming leader');
    for (const id of ids.slice(1)) {
      this.add(id, { standby: true });
      await within(cb2p((cb) => leader.join(id, cb)), 5000, `skiff-algorithm joining ${id}`);
    }
    this.leader = leader;
    return leader;
  }

  command(cmd) {
    return within(cb2p((cb) => this.leader.command(cmd, cb)), 5000, 'a skiff-algorithm command');
  }

  /** Listens for `error` on every peer object of the running nodes (see above). */
  guardPeers() {
    for (const node of this.nodes) {
      for (const peer of node.commonState.persisted.peers) {
        if (!peer.__guarded) {
          peer.__guarded = true;
          peer.on('error', (err) => this.errors.push({ node: node.id, peer: peer.id, error: err }));
        }
      }
    }
  }

  /** Resolves once every node in `ids` applied the leader's whole log and saved its state. */
  async settle(ids) {
    const last = this.leader.commonState.persisted.log.length();
    await waitUntil(() => ids.every((id) => {
      const meta = this.persistence.meta(id);
      return this.persistence.appliedIndex(id) === last && meta &&
        meta.log.meta.lastIncludedIndex + meta.log.entries.length === last;
    }), `every skiff-algorithm node to apply and save index ${last}`, { timeout: 5000 });
    return last;
  }

  async stopNode(id) {
    if (this.stopped.has(id)) return;
    this.stopped.add(id);
    await within(cb2p((cb) => this.byId(id).stop(cb)), 5000, `stopping skiff-algorithm ${id}`);
  }

  async stop() {
    await Promise.all(this.nodes.map((n) => this.stopNode(n.id)));
  }
}

/**
 * Wraps `persistence.applyCommand` to record every call ({node, index, command}), including calls
 * the store would ignore as already applied. Install before the nodes are created.
 */
function recordApplies(persistence) {
  const calls = [];
  const original = persistence.applyCommand;
  persistence.applyCommand = (nodeId, index, command, cb) => {
    calls.push({ node: nodeId, index, command });
    return original(nodeId, index, command, cb);
  };
  return calls;
}

/** Records leaders per term on skiff-rs nodes; `check()` asserts one leader at most per term. */
function watchLeaders(nodes) {
  const byTerm = new Map();
  for (const node of nodes) {
    node.on('state', (name) => {
      if (name !== 'leader') return;
      const term = node.currentTerm();
      if (!byTerm.has(term)) byTerm.set(term, new Set());
      byTerm.get(term).add(node.id);
    });
  }
  return {
    byTerm,
    check() {
      for (const [term, ids] of byTerm) {
        assert.equal(ids.size, 1, `one leader in term ${term}, saw ${[...ids].join(', ')}`);
      }
    },
  };
}

/**
 * The state a node gave saveMeta keeps skiff-algorithm's field names: a rollback can read it.
 * `others` are the ids the node must list in `peers`.
 */
function assertOriginalShape(meta, selfId, others) {
  assert.ok(meta && typeof meta === 'object', `${selfId} saved a state`);
  assert.equal(typeof meta.currentTerm, 'number', `${selfId}: currentTerm`);
  assert.ok(meta.votedFor === null || typeof meta.votedFor === 'string', `${selfId}: votedFor`);
  assert.equal(typeof meta.log.meta.lastIncludedIndex, 'number', `${selfId}: lastIncludedIndex`);
  assert.equal(typeof meta.log.meta.lastIncludedTerm, 'number', `${selfId}: lastIncludedTerm`);
  assert.ok(Array.isArray(meta.log.entries), `${selfId}: log.entries`);
  let expected = meta.log.meta.lastIncludedIndex + 1;
  for (const e of meta.log.entries) {
    assert.equal(typeof e.term, 'number', `${selfId}: entry term`);
    assert.equal(e.index, expected, `${selfId}: entry indexes are consecutive`);
    expected += 1;
    assert.ok('command' in e, `${selfId}: entry ${e.index} has a command`);
    assert.equal(typeof e.uuid, 'string', `${selfId}: entry ${e.index} has a uuid`);
    if ('topologyChange' in e) assert.equal(e.topologyChange, true);
  }
  assert.ok(Array.isArray(meta.peers), `${selfId}: peers`);
  for (const p of meta.peers) {
    assert.equal(typeof p.id, 'string');
    assert.ok('metadata' in p, `${selfId}: peer ${p.id} has metadata`);
  }
  assert.deepEqual(meta.peers.map((p) => p.id).sort(), [...others].sort(), `${selfId}: peers`);
}

module.exports = {
  Legacy,
  LegacyCluster,
  mixedCommands,
  recordApplies,
  watchLeaders,
  assertOriginalShape,
  cb2p,
};
