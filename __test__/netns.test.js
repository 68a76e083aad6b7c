'use strict';

// Across hosts: three Linux network namespaces, one key-value store process each
// (`ip netns exec NS node demo/node-process.js ...`), on the real TCP transport. A fourth namespace
// holds a bridge that every member's veth is plugged into:
//
//     ns-a [eth0 10.231.X.1] ---- v0 ┐
//     ns-b [eth0 10.231.X.2] ---- v1 ├ br0   (in ns-sw)
//     ns-c [eth0 10.231.X.3] ---- v2 ┘
//
// The 10.231.X.0/24 addresses exist only inside these namespaces: nothing is added to the host's
// own network namespace and this traffic never leaves them. Shown: replication, a client
// redirected across the network, cutting the leader's link (`ip link set v<i> down`) → the others
// elect a new leader and keep committing while the cut-off one cannot → healing the link → the
// old leader follows and catches up; then SIGKILL of the leader → failover with every write kept.
//
// Needs root and iproute2's `ip` with netns support; skipped otherwise (with the reason).
// Namespaces and processes are always torn down in t.after.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawnSync } = require('node:child_process');
const { Member, waitForLeader } = require('../demo/control');

const PORT = 7000;

function ip(args, { check = true } = {}) {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10000 });
  if (check && (r.error || r.status !== 0)) {
    throw new Error(`ip ${args.join(' ')} failed: ${r.error ? r.error.message : (r.stderr || '').trim()}`);
  }
  return r;
}

// Why this test cannot run here, or null.
function skipReason() {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'needs root (ip netns)';
  const v = spawnSync('ip', ['-V'], { encoding: 'utf8' });
  if (v.error) return `the iproute2 \`ip\` command is not available (${v.error.code || v.error.message}); install iproute2`;
  return null;
}

async function waitUntil(fn, what, timeout = 15000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${last})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test('replication and failover across network namespaces over TCP, with a cut and healed link', { timeout: 90000 }, async (t) => {
  const reason = skipReason();
  if (reason) {
    t.skip(reason);
    return;
  }
  const t0 = Date.now();
  const suffix = crypto.randomBytes(3).toString('hex');
  const subnet = `10.231.${crypto.randomInt(0, 256)}`;
  const sw = `skiff-${suffix}-sw`;
  const names = ['a', 'b', 'c'];
  const nss = names.map((n) => `skiff-${suffix}-${n}`);
  const created = [];
  const members = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-netns-test-'));
  const log = (msg) => t.diagnostic(`[${((Date.now() - t0) / 1000).toFixed(2)}s] ${msg}`);

  // One cleanup, registered before anything is made: processes, then namespaces, then files.
  t.after(async () => {
    await Promise.all(members.map((m) => m.kill('SIGKILL')));
    for (const ns of created.reverse()) ip(['netns', 'del', ns], { check: false });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // ---- the network
  const probe = ip(['netns', 'add', sw], { check: false });
  if (probe.error || probe.status !== 0) {
    t.skip(`ip netns add failed: ${probe.error ? probe.error.message : probe.stderr.trim()}`);
    return;
  }
  created.push(sw);
  ip(['-n', sw, 'link', 'add', 'br0', 'type', 'bridge']);
  ip(['-n', sw, 'link', 'set', 'br0', 'up']);
  const addrs = [];
  nss.forEach((ns, i) => {
    ip(['netns', 'add', ns]);
    created.push(ns);
    ip(['-n', sw, 'link', 'add', `v${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    ip(['-n', sw, 'link', 'set', `v${i}`, 'master', 'br0', 'up']);
    addrs.push(`${subnet}.${i + 1}`);
    ip(['-n', ns, 'addr', 'add', `${addrs[i]}/24`, 'dev', 'eth0']);
    ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
    ip(['-n', ns, 'link', 'set', 'lo', 'up']);
  });
  const ids = addrs.map((a) => `tcp://${a}:${PORT}`);
  const linkOf = (id) => `v${ids.indexOf(id)}`;
  log(`namespaces ${nss.join(', ')} on bridge br0 in ${sw}; members ${ids.join(' ')}`);

  // ---- one member process per namespace; b and c wait, a bootstraps and joins them
  const options = JSON.stringify({ commandTimeout: 2000 });
  const start = (i) => {
    const args = ['--id', ids[i], '--dir', dir, '--options', options];
    if (i === 0) args.push('--bootstrap', '--peers', ids.slice(1).join(','));
    const m = new Member(ids[i], args, { prefix: ['ip', 'netns', 'exec', nss[i]] });
    members.push(m);
    return m.waitEvent((msg) => msg.event === 'started', 20000, 'the member to start');
  };
  await Promise.all([start(1), start(2)]);
  await start(0);
  const first = await waitForLeader(members, 15000);
  log(`leader ${first.leader.id} term ${first.term}`);

  // ---- replication over the bridge
  const expect = {};
  for (let i = 0; i < 20; i++) {
    await first.leader.request('put', { key: `r${i}`, value: { i } });
    expect[`r${i}`] = { i };
  }
  for (const m of members) {
    await waitUntil(async () => (await m.request('localCount', { expect })) === 20, `${m.id} to have 20 keys`);
  }
  log('20 writes replicated to every namespace');

  // A follower is asked to write: ENOTLEADER naming the leader; a client in its namespace that
  // asks the follower first is redirected to the leader (one of its addresses) across the network.
  const follower = members.find((m) => m !== first.leader);
  await assert.rejects(follower.request('put', { key: 'x', value: 1 }),
    (err) => err.code === 'ENOTLEADER' && err.leader === first.leader.id);
  const viaClient = await follower.request('client', {
    addresses: [follower.id, ...members.filter((m) => m !== follower).map((m) => m.id)],
    ops: [{ op: 'put', key: 'client-key', value: 'from ns' }, { op: 'get', key: 'client-key' }, { op: 'get', key: 'r3' }],
  }, 20000);
  assert.deepEqual(viaClient.results, [null, 'from ns', { i: 3 }]);
  assert.equal(viaClient.leader, first.leader.id);
  expect['client-key'] = 'from ns';
  log(`client in ${follower.id}'s namespace redirected to ${viaClient.leader}`);

  // ---- cut the leader's link
  const cut = first.leader;
  ip(['-n', sw, 'link', 'set', linkOf(cut.id), 'down']);
  log(`cut ${linkOf(cut.id)} (the link of leader ${cut.id})`);
  const rest = members.filter((m) => m !== cut);
  const second = await waitForLeader(rest, 15000);
  assert.notEqual(second.leader.id, cut.id);
  assert.ok(second.term > first.term);
  log(`the connected two elected ${second.leader.id} term ${second.term}`);
  for (let i = 0; i < 10; i++) {
    await second.leader.request('put', { key: `p${i}`, value: i });
    expect[`p${i}`] = i;
  }
  // The cut-off member cannot commit anything: it times out or knows it is no longer leader.
  let refused;
  await assert.rejects(cut.request('put', { key: 'lost-in-partition', value: 1 }, 10000), (err) => {
    refused = err.code;
    return err.code === 'ETIMEDOUT' || err.code === 'ENOTLEADER';
  });
  const other = rest.find((m) => m !== second.leader);
  await waitUntil(async () => (await other.request('localCount', { expect })) === Object.keys(expect).length,
    'the other connected member to apply the new writes');
  log(`10 writes committed by the majority side; the cut-off old leader refused a write (${refused})`);

  // ---- heal: one leader for all three again, the old leader catches up
  ip(['-n', sw, 'link', 'set', linkOf(cut.id), 'up']);
  log('healed the link');
  const third = await waitForLeader(members, 30000);
  log(`after healing: leader ${third.leader.id} term ${third.term}, all three agree`);
  await waitUntil(async () => (await cut.request('localCount', { expect })) === Object.keys(expect).length,
    'the old leader to catch up', 30000);
  assert.equal(await third.leader.request('get', { key: 'lost-in-partition' }), undefined,
    'the write the cut-off leader could not commit is gone');
  log(`the old leader has all ${Object.keys(expect).length} keys`);

  // ---- failover by killing the leader's process
  const victim = third.leader;
  await victim.kill('SIGKILL');
  const survivors = members.filter((m) => m !== victim);
  const fourth = await waitForLeader(survivors, 15000);
  assert.notEqual(fourth.leader.id, victim.id);
  for (const [key, value] of Object.entries(expect)) {
    assert.deepEqual(await fourth.leader.request('get', { key }), value, `${key} after the leader was killed`);
  }
  await fourth.leader.request('put', { key: 'final', value: true });
  assert.equal(await fourth.leader.request('get', { key: 'final' }), true);
  log(`killed ${victim.id}; new leader ${fourth.leader.id} term ${fourth.term} has all ${Object.keys(expect).length} keys`);

  await Promise.all(survivors.map((m) => m.stop()));
});
