'use strict';

// The plugins people wrote for skiff-algorithm 0.8, as published on npm, under skiff-rs (issue 11):
//   - skiff-tcp-msgpack 0.8.3, the published TCP transport. It has no request ids: `send` waits
//     with `once('response')`, so it works only with one request in flight per connection, which
//     is what skiff-rs gives a transport that does not declare `pipelining`.
//   - the test transport and persistence shipped inside the skiff-algorithm 0.8.2 package.
// Also the gate itself: a transport that declares nothing never sees two requests at once on a
// connection; one that declares `pipelining` (or a connection that does) may.

const test = require('node:test');
const assert = require('node:assert/strict');
const { Cluster, waitUntil, waitForState, within } = require('./helpers/cluster');
const { MemoryNetwork: Hub } = require('../lib/memory');
const { msgpackIds, msgpackTransport: msgpack } = require('./helpers/published-plugins');

const TIMING = { heartbeatInterval: 50, minElectionTimeout: 300, maxElectionTimeout: 600, commandTimeout: 5000 };

function assertSameLog(c, ids, expected) {
  for (const id of ids) assert.deepEqual(c.commands(id), expected, `${id} applied every command once, in order`);
}

test('three nodes over skiff-tcp-msgpack 0.8.3: commands, loss of the leader, restart', async (t) => {
  const ids = await msgpackIds(3);
  const transportErrors = [];
  const c = new Cluster({ nodeOptions: TIMING });
  t.after(() => c.stop());
  const first = c.add({ id: ids[0], transport: msgpack(transportErrors) });
  await waitForState(first, 'leader');
  for (const id of ids.slice(1)) {
    c.add({ id, standby: true, transport: msgpack(transportErrors) });
    await within(first.join(id), 10000, `joining ${id}`);
  }
  let leader = await c.waitForLeader();

  // one at a time, then many at once: every one is acknowledged (none times out)
  const sent = [];
  for (let i = 0; i < 20; i++) {
    sent.push(`one-${i}`);
    await leader.command(`one-${i}`);
  }
  const burst = [];
  for (let i = 0; i < 100; i++) burst.push({ burst: i });
  await Promise.all(burst.map((cmd) => leader.command(cmd)));
  sent.push(...burst);
  await c.waitApplied(sent.length);
  // concurrent commands may be appended in any order; the order is the leader's
  const order = c.commands(leader.id);
  assert.equal(order.length, sent.length);
  assertSameLog(c, ids, order);

  // the leader goes away: the other two elect one and go on
  const oldLeader = leader;
  await oldLeader.stop();
  leader = await c.waitForLeader(c.running(), { timeout: 15000 });
  assert.notEqual(leader.id, oldLeader.id);
  const after = [];
  for (let i = 0; i < 20; i++) after.push(['after', i]);
  await Promise.all(after.map((cmd) => leader.command(cmd)));
  await c.waitApplied(sent.length + after.length);

  // it comes back with its persisted state, on a fresh transport, and catches up
  const back = c.add({ id: oldLeader.id, transport: msgpack(transportErrors) });
  await c.waitForLeader(c.running(), { timeout: 15000 });
  leader = c.running().find((n) => n.state.name === 'leader');
  await leader.command('last');
  await c.waitApplied(sent.length + after.length + 1, undefined, { timeout: 15000 });
  const final = c.commands(leader.id);
  assertSameLog(c, ids, final);
  assert.ok(back.state.name === 'follower' || back.state.name === 'leader');
  assert.deepEqual(c.errors, []);
  const timeouts = c.warnings.filter((w) => w.error.code === 'ETIMEDOUT' && /command|replicate/.test(w.error.message));
  assert.deepEqual(timeouts, []);
  assert.deepEqual(transportErrors, []);
});

test('the test transport and persistence shipped with skiff-algorithm 0.8.2', async (t) => {
  const Transport = require('skiff-algorithm/tests/_transport2');
  const persistence = require('skiff-algorithm/tests/_persistence');
  const ids = ['orig-plugins-1', 'orig-plugins-2', 'orig-plugins-3'];
  // its applyCommand does not record what it applied (it pushes onto store.commands[id])
  const c = new Cluster({ persistence, nodeOptions: TIMING });
  c.persistence.commands = (id) => persistence.store.commands[id] || [];
  t.after(() => c.stop());
  const first = c.add({ id: ids[0], transport: new Transport(ids[0]) });
  await waitForState(first, 'leader');
  for (const id of ids.slice(1)) {
    c.add({ id, standby: true, transport: new Transport(id) });
    await within(first.join(id), 10000, `joining ${id}`);
  }
  const leader = await c.waitForLeader();
  const cmds = [];
  for (let i = 0; i < 10; i++) cmds.push(i % 2 ? `s${i}` : { n: i, list: [i, 'x'] });
  for (const cmd of cmds.slice(0, 5)) await leader.command(cmd);
  await Promise.all(cmds.slice(5).map((cmd) => leader.command(cmd)));
  await c.waitApplied(cmds.length);
  assertSameLog(c, ids, c.commands(leader.id));
  assert.deepEqual(c.commands(leader.id).slice(0, 5), cmds.slice(0, 5));
  assert.deepEqual(c.errors, []);
});

// A hub whose connections count the requests they have in flight, and remember the most.
function countingHub(pipelining) {
  const hub = new Hub();
  hub.pipelining = pipelining;
  hub.most = 0;
  const connect = hub.connect;
  hub.connect = (...args) => {
    const conn = connect(...args);
    if (!conn) return conn;
    let inFlight = 0;
    const send = conn.send.bind(conn);
    conn.send = (type, sendArgs, cb) => {
      inFlight += 1;
      hub.most = Math.max(hub.most, inFlight);
      send(type, sendArgs, (...res) => {
        inFlight -= 1;
        cb(...res);
      });
    };
    return conn;
  };
  return hub;
}

async function load(c) {
  const leader = await c.waitForLeader();
  const cmds = [];
  for (let i = 0; i < 300; i++) cmds.push({ i });
  await Promise.all(cmds.map((cmd) => leader.command(cmd)));
  await c.waitApplied(cmds.length);
  assertSameLog(c, c.running().map((n) => n.id), c.commands(leader.id));
}

async function threeNodes(t, hub, extra = {}) {
  const c = new Cluster({ hub, nodeOptions: Object.assign({}, TIMING, extra) });
  t.after(() => c.stop());
  const first = c.add();
  await waitForState(first, 'leader');
  for (let i = 0; i < 2; i++) {
    const n = c.add({ standby: true });
    await first.join(n.id);
  }
  return c;
}

test('a transport that declares nothing gets one request at a time per connection', async (t) => {
  const hub = countingHub(undefined);
  const c = await threeNodes(t, hub);
  await load(c);
  assert.equal(hub.most, 1, 'never two requests in flight on one connection');
});

test('a transport that declares pipelining gets several requests in flight', async (t) => {
  const hub = countingHub(true);
  const c = await threeNodes(t, hub);
  await load(c);
  assert.ok(hub.most > 1, `several requests in flight at once (most: ${hub.most})`);
});

test('a connection may declare pipelining for itself', async (t) => {
  const hub = countingHub(false);
  const connect = hub.connect;
  hub.connect = (...args) => {
    const conn = connect(...args);
    if (conn) conn.pipelining = true;
    return conn;
  };
  const c = await threeNodes(t, hub);
  await load(c);
  assert.ok(hub.most > 1, `several requests in flight at once (most: ${hub.most})`);
});

// Nothing is lost by the gate: a reply that never comes frees the connection after the send
// timeout, and the node reconnects so that a late reply cannot be taken for the next one's.
test('a one-at-a-time connection whose reply never comes is replaced', async (t) => {
  const hub = countingHub(false);
  const c = await threeNodes(t, hub);
  const first = await c.waitForLeader();
  const connects = hub.stats.connects;
  // the next request to each follower is lost (the followers may elect another leader meanwhile)
  hub.fail(first.id, 'send', 'never', 2);
  await waitUntil(() => hub.faults.list.length === 0, 'the lost sends to be used up');
  await waitUntil(() => c.warnings.some((w) => w.node === first.id && w.error.code === 'ETIMEDOUT'),
    'the lost request to time out');
  await waitUntil(() => hub.stats.connects >= connects + 2, 'fresh connections after the lost replies');
  const leader = await c.waitForLeader(undefined, { timeout: 15000 });
  for (let i = 0; i < 10; i++) await leader.command({ after: i });
  await c.waitApplied(10);
  assertSameLog(c, c.running().map((n) => n.id), c.commands(leader.id));
  assert.equal(hub.most, 1);
});
