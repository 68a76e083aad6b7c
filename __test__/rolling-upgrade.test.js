'use strict';

// A rolling upgrade (issue 11): a live skiff-algorithm 0.8.2 cluster has its nodes replaced one at
// a time by skiff-rs nodes with the same id and the same persisted state, followers first and the
// leader last, while clients keep writing. Once over an in-memory hub, once over the published
// skiff-tcp-msgpack 0.8.3. Every acknowledged write is applied exactly once, in one order, on
// every node.
//
// The procedure, designed around skiff-algorithm's defects (README, "Migrating from
// skiff-algorithm"):
//   - its leader keeps sending on the connection it opened; a skiff-rs node on a transport that
//     declares nothing connects only when it has something to ask, so a skiff-rs follower never
//     replaces that connection (a skiff-algorithm node drops its own connection to a peer that
//     connects to it, and never uses the new one);
//   - its AppendEntries has no prevLogTerm: a skiff-rs follower takes entries only after a prefix
//     it can vouch for, and otherwise answers with its lastApplied, from which that leader resends;
//   - it clears its vote each time it becomes a follower, so it may vote twice in a term, and a
//     skiff-rs node that campaigns connects to it: no election may happen while a skiff-algorithm
//     node leads. Its leader sends a peer nothing new until the request lost with the stopped
//     node times out (its `commandTimeout`), so the skiff-rs nodes get an election timeout longer
//     than that (and than the transport's reconnect delay); the leader goes last, when every
//     node that votes in the next election runs skiff-rs;
//   - a command still under way when its leader stops makes it throw (`self.state.replicate is
//     not a function`), which ends the process: clients stop sending to it, and it answers what
//     it has, before it is stopped;
//   - its peer calls time out after `commandTimeout` with the send still pending on a transport
//     without request ids, and the next one is then paired with the late reply: its
//     `commandTimeout` is longer than the transport's reconnect delay (skiff-tcp-msgpack: 1 s);
//   - its snapshot messages have no sequence numbers: the skiff-algorithm nodes keep their log
//     (a large retainedLogEntries) for the duration of the upgrade.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster, waitUntil, sleep } = require('./helpers/cluster');
const { MemoryNetwork: Hub, MemoryPersistence: Persistence } = require('../lib/memory');
const { LegacyCluster } = require('./helpers/migration-legacy');
const { msgpackIds, msgpackTransport } = require('./helpers/published-plugins');

const LEGACY = { commandTimeout: 2000, retainedLogEntries: 100000 };
// Writes resume this soon after each step: the election at the last one takes up to
// maxElectionTimeout, a pre-vote round and a commit.
const RESUME_MS = 8000;
const SKIFF_RS = { heartbeatInterval: 50, minElectionTimeout: 3000, maxElectionTimeout: 4500, commandTimeout: 4000 };

/**
 * Clients writing throughout: each sends unique commands to whichever node leads now (either
 * engine), one at a time, and records what was acknowledged. A command that fails or never
 * answers is not sent again (it may or may not be applied, but never twice).
 */
class Writers {
  constructor(nodes, count) {
    this.nodes = nodes; // () => running nodes of either engine
    this.acked = [];
    this.failed = 0;
    this.running = true;
    this.avoid = new Set(); // ids that get no new commands
    this.inflight = new Map(); // id -> commands sent to it and not answered
    this.loops = [];
    for (let w = 0; w < count; w++) this.loops.push(this._loop(w));
  }

  async _loop(w) {
    for (let i = 0; this.running; i++) {
      const leader = this.nodes().find((n) => n.state && n.state.name === 'leader' && !this.avoid.has(n.id));
      if (!leader) {
        await sleep(20);
        continue;
      }
      const cmd = { w, i };
      const id = leader.id;
      this.inflight.set(id, (this.inflight.get(id) || 0) + 1);
      const ok = await new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), 6000);
        try {
          leader.command(cmd, (err) => {
            clearTimeout(timer);
            resolve(!err);
          });
        } catch (e) {
          clearTimeout(timer);
          resolve(false);
        }
      });
      this.inflight.set(id, this.inflight.get(id) - 1);
      if (ok) this.acked.push(cmd);
      else {
        this.failed += 1;
        await sleep(20);
      }
    }
  }

  /** Sends `id` nothing more and resolves once it answered what it was sent. */
  async drain(id) {
    this.avoid.add(id);
    await waitUntil(() => !this.inflight.get(id), `${id} to answer its pending commands`, { timeout: 15000 });
  }

  /** Resolves once `n` more writes were acknowledged, the first within `resume` ms. */
  async more(n, what, resume = RESUME_MS) {
    const first = this.acked.length + 1;
    await waitUntil(() => this.acked.length >= first, `writes to resume ${what}`, { timeout: resume });
    const target = first - 1 + n;
    await waitUntil(() => this.acked.length >= target, `${n} more acknowledged writes ${what}`, { timeout: 15000 });
  }

  async stop() {
    this.running = false;
    await Promise.all(this.loops);
  }
}

const key = (c) => JSON.stringify(c);

async function rollingUpgrade(t, { ids, legacyTransport, skiffTransport, perStep }) {
  const persistence = new Persistence();
  const legacy = new LegacyCluster({ hub: null, persistence, options: LEGACY });
  const skiff = new Cluster({ persistence, nodeOptions: SKIFF_RS });
  const writers = { stop: async () => {} };
  t.after(async () => {
    await writers.stop();
    await skiff.stop();
    await legacy.stop();
  });
  // the legacy helper uses one transport for all; here each node gets its own
  legacy.add = ((add) => (id, extra = {}) => add.call(legacy, id, Object.assign({ transport: legacyTransport(id) }, extra)))(legacy.add);
  await legacy.start(ids);
  legacy.guardPeers();
  const [leaderId, ...followerIds] = ids;
  const running = () => ids.map((id) => skiff.byId(id) || (legacy.stopped.has(id) ? null : legacy.byId(id))).filter(Boolean);
  const w = new Writers(running, 3);
  writers.stop = () => w.stop();
  await w.more(perStep, 'on skiff-algorithm');

  const leadersByTerm = new Map(); // term -> ids of skiff-rs nodes that led in it
  const replace = (id) => {
    const node = skiff.add({ id, transport: skiffTransport(id) });
    node.on('state', (name) => {
      if (name !== 'leader') return;
      const term = node.currentTerm();
      if (!leadersByTerm.has(term)) leadersByTerm.set(term, new Set());
      leadersByTerm.get(term).add(node.id);
    });
    return node;
  };

  // followers first: stop one, start skiff-rs in its place at once
  for (const id of followerIds) {
    await legacy.stopNode(id);
    const node = replace(id);
    await w.more(perStep, `after replacing ${id}`);
    // what to check: it follows the skiff-algorithm leader and applies what it commits
    await waitUntil(() => node.state.name === 'follower' && node.currentLeader() === leaderId,
      `${id} to follow ${leaderId}`, { timeout: 15000 });
    const target = persistence.commands(leaderId).length;
    await waitUntil(() => persistence.commands(id).length >= target, `${id} to catch up to ${target}`, { timeout: 15000 });
    legacy.guardPeers();
  }

  // the leader last: the skiff-rs followers elect one of themselves, then it comes back
  // skiff-algorithm throws (and crashes the process) when a command is still under way as its
  // leader stops: its clients go elsewhere first, and it answers what it has
  await w.drain(leaderId);
  await legacy.stopNode(leaderId);
  const elected = await skiff.waitForLeader(skiff.running(), { timeout: 15000 });
  assert.notEqual(elected.id, leaderId);
  await w.more(perStep, 'after the skiff-algorithm leader stopped');
  const back = replace(leaderId);
  await w.more(perStep, `after ${leaderId} came back on skiff-rs`);
  await skiff.waitForLeader(skiff.running(), { timeout: 15000 });
  await w.stop();

  // every node applied the same commands, in one order; each acknowledged one exactly once
  const leader = skiff.running().find((n) => n.state.name === 'leader');
  await leader.command('barrier');
  const order = persistence.commands(leader.id);
  await waitUntil(() => ids.every((id) => persistence.commands(id).length >= order.length),
    'every node to apply everything', { timeout: 15000 });
  for (const id of ids) assert.deepEqual(persistence.commands(id), order, `${id} applied the same commands in the same order`);
  const seen = new Map();
  for (const cmd of order) seen.set(key(cmd), (seen.get(key(cmd)) || 0) + 1);
  for (const [k, n] of seen) assert.equal(n, 1, `${k} applied once`);
  for (const cmd of w.acked) assert.equal(seen.get(key(cmd)), 1, `acknowledged ${key(cmd)} is applied`);
  assert.equal(persistence.stats.reapplied, 0, 'no index applied twice');
  assert.ok(w.acked.length >= perStep * 5, `${w.acked.length} writes acknowledged`);
  assert.equal(back.state.name === 'leader' || back.state.name === 'follower', true);
  for (const [term, who] of leadersByTerm) assert.equal(who.size, 1, `one leader in term ${term}: ${[...who]}`);
  assert.deepEqual(skiff.errors, []);
  const unexpected = legacy.errors.filter((e) => !/not connected|closed|cannot connect|ECONNREFUSED/.test(String(e.error && e.error.message)));
  assert.deepEqual(unexpected.map((e) => `${e.node}: ${e.error.message}`), []);
  return { acked: w.acked.length, failed: w.failed };
}

test('rolling upgrade of a live skiff-algorithm cluster over an in-memory hub', async (t) => {
  const hub = new Hub();
  hub.pipelining = false; // a transport written for skiff-algorithm declares nothing
  await rollingUpgrade(t, {
    ids: ['ru1', 'ru2', 'ru3'],
    legacyTransport: () => hub,
    skiffTransport: () => hub,
    perStep: 30,
  });
});

test('rolling upgrade of a live skiff-algorithm cluster over skiff-tcp-msgpack 0.8.3', async (t) => {
  const ids = await msgpackIds(3);
  const errors = [];
  const transport = () => msgpackTransport(errors);
  // skiff-algorithm over this transport commits a few commands a second: fewer per step
  await rollingUpgrade(t, { ids, legacyTransport: transport, skiffTransport: transport, perStep: 10 });
  assert.deepEqual(errors, []);
});

// skiff-algorithm's InstallSnapshot chunks carry no sequence number: taken as ours, each would
// restart the transfer and the last one (no data) would leave an empty state machine installed at
// the leader's index. skiff-rs refuses them and leaves its state alone.
test('a skiff-algorithm snapshot chunk is refused, not installed', async (t) => {
  const hub = new Hub();
  hub.pipelining = false;
  const c = new Cluster({ hub, nodeOptions: SKIFF_RS });
  t.after(() => c.stop());
  const node = c.add({ id: 'snap-b' });
  await waitUntil(() => node.state.name === 'leader', 'snap-b to lead its one-node cluster');
  await node.command('kept');
  const cleared = [];
  const removeAllState = c.persistence.removeAllState;
  c.persistence.removeAllState = (id, cb) => {
    cleared.push(id);
    return removeAllState(id, cb);
  };
  const conn = hub.connect('snap-a', {}, 'snap-b', {});
  conn.receive(() => {});
  t.after(() => conn.close());
  const send = (args) => new Promise((resolve) => conn.send('InstallSnapshot', args, (err, res) => resolve({ err, res })));
  const chunk = { term: node.currentTerm() + 1, leaderId: 'snap-a', lastIncludedIndex: 50, lastIncludedTerm: 1 };
  const first = await send(Object.assign({ data: ['x'], first: true, done: false }, chunk));
  const last = await send(Object.assign({ data: null, first: false, done: true }, chunk));
  for (const r of [first, last]) {
    assert.ok(r.err, 'refused');
    assert.equal(r.err.code, 'EBADMESSAGE');
    assert.match(r.err.message, /without seq/);
  }
  await sleep(200);
  assert.deepEqual(cleared, [], 'the state machine was not cleared');
  assert.deepEqual(c.commands('snap-b'), ['kept']);
  assert.ok(c.warnings.some((w) => w.error.code === 'EBADMESSAGE'), 'a warning says so');
});

// The other direction, outside the procedure above: a skiff-rs leader driving a skiff-algorithm
// follower. Its AppendEntries (batches, with prevLogTerm) are taken by skiff-algorithm; its
// answers carry no matchIndex and are read against the request they answer; the commit index it
// is sent never goes past what the message vouches for (it would set its own from it blindly).
test('a skiff-rs leader drives a skiff-algorithm follower', async (t) => {
  const hub = new Hub();
  hub.pipelining = false;
  const persistence = new Persistence();
  const skiff = new Cluster({ hub, persistence, nodeOptions: SKIFF_RS });
  const legacy = new LegacyCluster({ hub, persistence, options: LEGACY });
  t.after(async () => {
    await skiff.stop();
    await legacy.stop();
  });
  const leader = skiff.add({ id: 'mix-1' });
  await waitUntil(() => leader.state.name === 'leader', 'mix-1 to lead its one-node cluster');
  const old = legacy.add('mix-2', { standby: true });
  await leader.join('mix-2');
  const follower = skiff.add({ id: 'mix-3', standby: true });
  await leader.join('mix-3');
  legacy.guardPeers();
  const cmds = [];
  for (let i = 0; i < 40; i++) cmds.push({ mixed: i });
  for (const cmd of cmds.slice(0, 10)) await leader.command(cmd);
  await Promise.all(cmds.slice(10).map((cmd) => leader.command(cmd)));
  await waitUntil(() => ['mix-1', 'mix-2', 'mix-3'].every((id) => persistence.commands(id).length === cmds.length),
    'every node to apply every command', { timeout: 15000 });
  const order = persistence.commands('mix-1');
  for (const id of ['mix-2', 'mix-3']) assert.deepEqual(persistence.commands(id), order, `${id}: same commands, same order`);
  assert.deepEqual(order.slice(0, 10), cmds.slice(0, 10));
  assert.equal(old.state.name, 'follower');
  assert.equal(old.currentLeader(), 'mix-1');
  assert.equal(persistence.stats.reapplied, 0);
  // with the skiff-rs follower stopped, the skiff-algorithm follower's acknowledgements alone
  // make the majority
  await skiff.byId('mix-3').stop();
  await leader.command('with the old follower');
  await waitUntil(() => persistence.commands('mix-2').length === cmds.length + 1, 'mix-2 to apply it');
  assert.deepEqual(skiff.errors, []);
});
