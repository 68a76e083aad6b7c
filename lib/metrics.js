'use strict';

// `require('skiff-rs/metrics')(node, [registry])`: a Prometheus collector for a node, on
// prom-client (an optional peer dependency). The metrics are read from `node.stats()` when the
// registry is scraped; nothing is counted twice and nothing runs between scrapes.
//
// Several nodes may share a registry: every series carries a `node` label (the node's id), and
// the second node added to a registry joins the metrics the first registered. A stopped node
// leaves the output at the next scrape.

const { makeError, CODES } = require('./errors');

const PREFIX = 'skiff_';

// Gauges and counters read from one node's stats: [name, type, help, read(stats)].
const NODE_SERIES = Object.freeze([
  ['term', 'gauge', 'Current Raft term.', (s) => s.term],
  ['is_leader', 'gauge', '1 while this node leads, else 0.', (s) => (s.state === 'leader' ? 1 : 0)],
  ['leader_known', 'gauge', '1 while this node knows a leader, else 0.', (s) => (s.leader ? 1 : 0)],
  ['commit_index', 'gauge', 'Highest log index known committed.', (s) => s.commitIndex],
  ['last_applied', 'gauge', 'Highest log index applied to the state machine.', (s) => s.lastApplied],
  ['last_log_index', 'gauge', 'Index of the last log entry.', (s) => s.lastLogIndex],
  ['first_log_index', 'gauge', 'Index of the first log entry kept (after compaction).', (s) => s.firstLogIndex],
  ['members', 'gauge', 'Members of the cluster, as this node knows them.', (s) => s.members.length],
  ['elections_started_total', 'counter', 'Elections this node stood in.', (s) => s.counters.electionsStarted],
  ['leader_changes_total', 'counter', 'Times the known leader became another node.', (s) => s.counters.leaderChanges],
  ['commands_committed_total', 'counter', 'Commands that committed through this node.', (s) => s.counters.commandsCommitted],
  ['commands_failed_total', 'counter', 'Commands through this node that failed.', (s) => s.counters.commandsFailed],
  ['snapshots_sent_total', 'counter', 'Snapshots this node streamed to a follower to their end.', (s) => s.counters.snapshotsSent],
  ['snapshot_bytes_sent_total', 'counter', 'Bytes of snapshot chunks this node sent.', (s) => s.counters.snapshotBytesSent],
  ['snapshots_installed_total', 'counter', 'Snapshots this node installed from a leader.', (s) => s.counters.snapshotsInstalled],
  ['plugin_retries_total', 'counter', 'Persistence calls that failed and were retried.', (s) => s.counters.pluginRetries],
]);

// Per follower, while the node leads (labels `node`, `peer`): [name, help, read(member)].
const PEER_SERIES = Object.freeze([
  ['peer_match_index', 'Highest log index known replicated on the follower.', (m) => m.matchIndex],
  ['peer_next_index', 'Next log index to send to the follower.', (m) => m.nextIndex],
  ['peer_inflight', 'AppendEntries sent to the follower and not yet answered.', (m) => m.inflight],
  ['peer_last_contact_seconds', 'Seconds since the follower last answered.', (m) => m.lastContactMs / 1000],
  ['peer_snapshot_sending', '1 while a snapshot streams to the follower, else 0.', (m) => (m.snapshot.sending ? 1 : 0)],
  ['peer_snapshot_bytes', 'Bytes of the current snapshot transfer sent so far.', (m) => m.snapshot.bytes],
]);

// Latency histograms: [name, help, key in stats.latency].
const HISTOGRAMS = Object.freeze([
  ['save_duration_seconds', 'Time from a saveMeta op to its completion.', 'save'],
  ['apply_duration_seconds', 'Time from an apply batch to its completion.', 'apply'],
]);

// One metric, computed from the nodes' stats at each scrape. prom-client's registry takes any
// object with a name and an async `get()` in the shape its own metrics return.
class CollectedMetric {
  constructor(name, help, type, values) {
    this.name = name;
    this.help = help;
    this.type = type;
    this.aggregator = 'sum';
    this._values = values; // () => [{ labels, value, metricName? }]
  }

  async get() {
    return { name: this.name, help: this.help, type: this.type, values: this._values(), aggregator: this.aggregator };
  }

  // Values come from the nodes; nothing to reset.
  reset() {}
}

// The nodes of one registry and the metrics that read them.
class NodeSet {
  constructor(registry) {
    this.nodes = new Set();
    this._scrape = null; // stats of the current scrape: [{ id, stats }]
    const metric = (name, help, type, values) =>
      registry.registerMetric(new CollectedMetric(PREFIX + name, help, type, values));
    for (const [name, type, help, read] of NODE_SERIES) {
      metric(name, help, type, () => this._stats().map(({ id, stats }) => ({ labels: { node: id }, value: read(stats) })));
    }
    for (const [name, help, read] of PEER_SERIES) {
      metric(name, help, 'gauge', () => this._stats().flatMap(({ id, stats }) => stats.members
        .filter((m) => m.id !== id && m.matchIndex !== null)
        .map((m) => ({ labels: { node: id, peer: m.id }, value: read(m) }))));
    }
    for (const [name, help, key] of HISTOGRAMS) {
      metric(name, help, 'histogram', () => this._stats().flatMap(({ id, stats }) =>
        histogramValues(PREFIX + name, { node: id }, stats.latency[key])));
    }
  }

  // Each node's stats, read once per scrape (the metrics of one scrape ask within one turn).
  _stats() {
    if (this._scrape === null) {
      const list = [];
      for (const node of this.nodes) {
        if (node.state.name === 'stopped') {
          this.nodes.delete(node);
          continue;
        }
        list.push({ id: node.id, stats: node.stats() });
      }
      this._scrape = list;
      queueMicrotask(() => {
        this._scrape = null;
      });
    }
    return this._scrape;
  }
}

// A histogram of ms buckets (lib/node/stats.js) as Prometheus series, in seconds: cumulative
// `_bucket` counts by `le`, then `_sum` and `_count`.
function histogramValues(name, labels, h) {
  const values = [];
  let cumulative = 0;
  h.buckets.forEach((ms, i) => {
    cumulative += h.counts[i];
    values.push({ metricName: `${name}_bucket`, labels: Object.assign({}, labels, { le: ms / 1000 }), value: cumulative });
  });
  values.push({ metricName: `${name}_bucket`, labels: Object.assign({}, labels, { le: '+Inf' }), value: h.count });
  values.push({ metricName: `${name}_sum`, labels, value: h.sum / 1000 });
  values.push({ metricName: `${name}_count`, labels, value: h.count });
  return values;
}

// prom-client, or an error coded ENOPROMCLIENT saying how to get it.
function loadPromClient() {
  try {
    return require('prom-client');
  } catch (e) {
    if (e && e.code === 'MODULE_NOT_FOUND' && /prom-client/.test(String(e.message))) {
      throw makeError('skiff-rs/metrics needs prom-client: npm install prom-client', CODES.ENOPROMCLIENT);
    }
    throw e;
  }
}

const sets = new WeakMap(); // registry -> NodeSet

// Adds `node`'s metrics to `registry` (prom-client's default registry when none is given).
// Returns `{ registry, remove() }`; `remove()` takes the node out of the output.
function collect(node, registry) {
  if (!node || typeof node.stats !== 'function' || typeof node.id !== 'string') {
    throw makeError('skiff-rs/metrics needs a skiff-rs Node', CODES.EINVALIDOPTIONS);
  }
  const reg = registry === undefined || registry === null ? loadPromClient().register : registry;
  if (typeof reg.registerMetric !== 'function' || typeof reg.metrics !== 'function') {
    throw makeError('skiff-rs/metrics: the registry must be a prom-client Registry', CODES.EINVALIDOPTIONS);
  }
  let set = sets.get(reg);
  if (!set) {
    set = new NodeSet(reg);
    sets.set(reg, set);
  }
  set.nodes.add(node);
  return {
    registry: reg,
    remove() {
      set.nodes.delete(node);
    },
  };
}

module.exports = collect;
module.exports.collect = collect;
module.exports.loadPromClient = loadPromClient;
