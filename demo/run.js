'use strict';

// `npm run demo`: a 3-member replicated key-value store (lib/kv.js), one process per member, on
// loopback TCP with durable file storage in a fresh temp folder. The story:
// The members and the client share a random secret (SKIFF_SECRET, handed to the member processes
// through their environment): a connection that cannot prove it knows it is refused.
//   1. start the members and elect a leader;
//   2. write 50 keys through the leader, read them back (linearizable reads, through the log);
//   3. SIGKILL the leader's process;
//   4. the two others elect a new leader (its id and term are shown);
//   5. every acknowledged write is read back through the new leader;
//   6. more writes go through a redirecting client (createKvClient) that still lists the dead member;
//   7. stop everything, remove the temp folder, exit 0.
// Any failure prints a clear message and exits 1; member processes are always killed.

const fs = require('node:fs');
const crypto = require('node:crypto');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const { createKvClient } = require('../lib/kv');
const { Member, waitForLeader } = require('./control');

const MEMBERS = 3;
const FIRST_WRITES = 50;
const MORE_WRITES = 20;
const DEADLINE_MS = 60000; // the whole demo, as a safety net (it normally takes a few seconds)

const t0 = Date.now();
function log(msg) {
  const s = ((Date.now() - t0) / 1000).toFixed(2).padStart(6);
  console.log(`[${s}s] ${msg}`);
}

async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', resolve);
  });
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Runs `fn` over `items` with at most `n` at a time.
async function pool(items, n, fn) {
  let i = 0;
  const worker = async () => {
    while (i < items.length) {
      const item = items[i++];
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

// The cluster's shared secret, made fresh for this run; member processes inherit the environment.
const SECRET = crypto.randomBytes(32).toString('hex');
process.env.SKIFF_SECRET = SECRET;

async function main(members, dir) {
  // 1. Start: the standby members first, then the one that bootstraps and joins them.
  const ports = [];
  while (ports.length < MEMBERS) {
    const p = await freePort();
    if (!ports.includes(p)) ports.push(p);
  }
  const ids = ports.map((p) => `tcp://127.0.0.1:${p}`);
  log(`data folder ${dir}`);
  log('members and clients authenticate every connection with a random shared secret (SKIFF_SECRET)');
  for (let i = MEMBERS - 1; i >= 0; i--) {
    const args = ['--id', ids[i], '--dir', dir];
    if (i === 0) args.push('--bootstrap', '--peers', ids.slice(1).join(','));
    const m = new Member(ids[i], args);
    members.unshift(m);
    log(`started member process ${m.pid} for ${ids[i]}${i === 0 ? ' (bootstraps the cluster, joins the others)' : ' (standby)'}`);
  }
  await Promise.all(members.map((m) => m.waitEvent((msg) => msg.event === 'started', 15000, 'the member to start')));
  const first = await waitForLeader(members);
  log(`leader elected: ${first.leader.id} (term ${first.term}); ${MEMBERS} members`);

  // 2. Writes and reads through the leader.
  const acknowledged = new Map();
  const keys = Array.from({ length: FIRST_WRITES }, (_, i) => `key-${String(i).padStart(3, '0')}`);
  const tw = Date.now();
  await pool(keys, 8, async (key) => {
    const value = { n: Number(key.slice(4)), at: Date.now() };
    await first.leader.request('put', { key, value });
    acknowledged.set(key, value);
  });
  log(`${acknowledged.size} puts acknowledged by the leader in ${Date.now() - tw} ms`);
  const tr = Date.now();
  await pool(keys, 8, async (key) => {
    const got = await first.leader.request('get', { key });
    check(JSON.stringify(got) === JSON.stringify(acknowledged.get(key)),
      `read ${key} through the leader: got ${JSON.stringify(got)}, wrote ${JSON.stringify(acknowledged.get(key))}`);
  });
  log(`${keys.length} linearizable reads through the leader in ${Date.now() - tr} ms: all match`);
  const followers = members.filter((m) => m !== first.leader);
  const expect = Object.fromEntries(acknowledged);
  for (const f of followers) {
    const deadline = Date.now() + 5000;
    let n = 0;
    while ((n = await f.request('localCount', { expect })) < acknowledged.size && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    check(n === acknowledged.size, `follower ${f.id} has only ${n}/${acknowledged.size} keys in its own copy`);
    log(`follower ${f.id} has all ${n} keys in its own copy (replicated)`);
  }
  const follower = followers[0];
  try {
    await follower.request('put', { key: 'via-follower', value: 1 });
    throw new Error('a follower accepted a write');
  } catch (err) {
    check(err.code === 'ENOTLEADER', `a follower's put failed with ${err.code}: ${err.message}`);
    log(`a follower refuses writes: ${err.code}, err.leader = ${err.leader}`);
  }

  // 3. Kill the leader.
  const oldLeader = first.leader;
  log(`killing the leader ${oldLeader.id} (process ${oldLeader.pid}) with SIGKILL`);
  const tk = Date.now();
  await oldLeader.kill('SIGKILL');

  // 4. A new leader.
  const survivors = members.filter((m) => m !== oldLeader);
  const next = await waitForLeader(survivors, 10000);
  check(next.leader.id !== oldLeader.id, 'the old leader is still the leader');
  check(next.term > first.term, `the new term ${next.term} is not above ${first.term}`);
  log(`new leader: ${next.leader.id} (term ${next.term}), ${Date.now() - tk} ms after the kill`);

  // 5. Every acknowledged write survived.
  let survived = 0;
  await pool([...acknowledged], 8, async ([key, value]) => {
    const got = await next.leader.request('get', { key });
    check(JSON.stringify(got) === JSON.stringify(value),
      `acknowledged write ${key} lost: got ${JSON.stringify(got)}, wrote ${JSON.stringify(value)}`);
    survived++;
  });
  log(`all ${survived}/${acknowledged.size} acknowledged writes survived (read through the new leader)`);

  // 6. More writes, through a client that starts at the dead member and follows redirects.
  const client = createKvClient([oldLeader.id, ...survivors.map((m) => m.id)], { timeout: 10000, secret: SECRET });
  try {
    const tm = Date.now();
    for (let i = 0; i < MORE_WRITES; i++) {
      const key = `more-${String(i).padStart(3, '0')}`;
      await client.put(key, i);
      acknowledged.set(key, i);
    }
    log(`${MORE_WRITES} more puts through the redirecting client in ${Date.now() - tm} ms (it found ${client.leader})`);
    for (const [key, value] of acknowledged) {
      const got = await client.get(key);
      check(JSON.stringify(got) === JSON.stringify(value), `read ${key} through the client: got ${JSON.stringify(got)}`);
    }
    check(await client.del('more-000') === true, 'del of an existing key did not report true');
    check(await client.get('more-000') === undefined, 'a deleted key is still there');
    log(`all ${acknowledged.size} keys read back through the client; del works`);
  } finally {
    await client.close();
  }
  // Without the secret, nothing gets in.
  const stranger = createKvClient(survivors.map((m) => m.id), { timeout: 1000, connectWait: 300 });
  try {
    await stranger.get('key-000');
    throw new Error('a client without the secret was served');
  } catch (err) {
    check(err.code === 'EAUTH', `a client without the secret failed with ${err.code}: ${err.message}`);
    log(`a client without the secret is refused by every member (${err.code})`);
  } finally {
    await stranger.close();
  }

  // 7. Stop.
  await Promise.all(survivors.map((m) => m.stop()));
  log('members stopped');
}

async function run() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-rs-demo-'));
  const members = [];
  let failed = null;
  const deadline = setTimeout(() => {
    console.error(`demo FAILED: did not finish within ${DEADLINE_MS / 1000} s`);
    for (const m of members) m.kill();
    fs.rmSync(dir, { recursive: true, force: true });
    process.exit(1);
  }, DEADLINE_MS);
  try {
    await main(members, dir);
  } catch (err) {
    failed = err;
  }
  clearTimeout(deadline);
  await Promise.all(members.map((m) => m.kill()));
  fs.rmSync(dir, { recursive: true, force: true });
  if (failed) {
    console.error(`demo FAILED: ${failed.message}`);
    process.exit(1);
  }
  log(`removed ${dir}; done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  process.exit(0);
}

run();
