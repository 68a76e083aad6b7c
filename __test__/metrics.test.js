'use strict';

// The Prometheus collector (lib/metrics.js): its text output parsed back from a prom-client
// registry and held against stats(); several nodes in one registry; a stopped node leaving the
// output; ENOPROMCLIENT without prom-client; and /metrics over HTTP from createKvStore
// (lib/metrics-server.js).

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');
const { execFile } = require('node:child_process');
const { Registry } = require('prom-client');

const collect = require('../lib/metrics');
const { createKvStore } = require('../lib/kv');
const { startCluster, waitUntil } = require('./helpers/cluster');
const { freePort } = require('./helpers/ports');

const ROOT = path.join(__dirname, '..');

// Prometheus text -> { 'name{labels}': value } and { name: type }.
function parse(text) {
  const values = {};
  const types = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      types[name] = type;
    } else if (line !== '' && !line.startsWith('#')) {
      const at = line.lastIndexOf(' ');
      values[line.slice(0, at)] = Number(line.slice(at + 1));
    }
  }
  return { values, types };
}

test('the collector reads stats() on scrape: gauges, counters, per-follower series and histograms', async (t) => {
  const c = await startCluster(t, 3);
  const leader = await c.waitForLeader();
  const registry = new Registry();
  for (const n of c.nodes) collect(n, registry);
  for (let i = 0; i < 5; i++) await leader.command({ i });
  await waitUntil(() => leader.stats().members.every((m) => m.id === leader.id ||
    m.matchIndex === leader.stats().commitIndex), 'followers in step');

  const s = leader.stats();
  const { values, types } = parse(await registry.metrics());
  const L = `node="${leader.id}"`;
  assert.equal(types.skiff_term, 'gauge');
  assert.equal(types.skiff_commands_committed_total, 'counter');
  assert.equal(types.skiff_save_duration_seconds, 'histogram');
  assert.equal(values[`skiff_term{${L}}`], s.term);
  assert.equal(values[`skiff_is_leader{${L}}`], 1);
  assert.equal(values[`skiff_commit_index{${L}}`], s.commitIndex);
  assert.equal(values[`skiff_last_log_index{${L}}`], s.lastLogIndex);
  assert.equal(values[`skiff_first_log_index{${L}}`], 1);
  assert.equal(values[`skiff_members{${L}}`], 3);
  assert.equal(values[`skiff_commands_committed_total{${L}}`], s.counters.commandsCommitted);
  assert.equal(values[`skiff_elections_started_total{${L}}`], s.counters.electionsStarted);
  for (const n of c.nodes) {
    assert.equal(values[`skiff_is_leader{node="${n.id}"}`], n === leader ? 1 : 0, `${n.id} is in the output`);
    assert.equal(values[`skiff_leader_known{node="${n.id}"}`], 1);
    if (n === leader) continue;
    assert.equal(values[`skiff_peer_match_index{${L},peer="${n.id}"}`], s.commitIndex);
    assert.equal(values[`skiff_peer_next_index{${L},peer="${n.id}"}`], s.commitIndex + 1);
    assert.equal(typeof values[`skiff_peer_last_contact_seconds{${L},peer="${n.id}"}`], 'number');
    assert.equal(values[`skiff_peer_snapshot_sending{${L},peer="${n.id}"}`], 0);
    // followers show no progress of their own
    assert.equal(Object.keys(values).some((k) => k.startsWith(`skiff_peer_match_index{node="${n.id}"`)), false);
  }
  // histogram: cumulative buckets ending in +Inf = _count; the sum in seconds
  const h = s.latency.save;
  const inf = values[`skiff_save_duration_seconds_bucket{${L},le="+Inf"}`];
  assert.ok(inf >= h.count && h.count > 0, `+Inf bucket ${inf}, count ${h.count}`);
  assert.equal(values[`skiff_save_duration_seconds_count{${L}}`], inf);
  let prev = 0;
  for (const ms of h.buckets) {
    const v = values[`skiff_save_duration_seconds_bucket{${L},le="${ms / 1000}"}`];
    assert.ok(v >= prev && v <= inf, `bucket ${ms} ms: ${v}`);
    prev = v;
  }
  assert.ok(values[`skiff_save_duration_seconds_sum{${L}}`] >= 0);

  // collected on scrape: a new command shows at the next scrape
  await leader.command('one more');
  const again = parse(await registry.metrics()).values;
  assert.equal(again[`skiff_commands_committed_total{${L}}`], s.counters.commandsCommitted + 1);

  // a stopped node leaves the output; remove() takes a node out
  const [f1, f2] = c.nodes.filter((n) => n !== leader);
  await f1.stop();
  collect(f2, registry).remove();
  const after = parse(await registry.metrics()).values;
  assert.equal(after[`skiff_term{node="${f1.id}"}`], undefined);
  assert.equal(after[`skiff_term{node="${f2.id}"}`], undefined);
  assert.equal(after[`skiff_term{${L}}`], leader.currentTerm());
});

test('the collector refuses what is not a node or a registry', () => {
  assert.throws(() => collect({}, new Registry()), { code: 'EINVALIDOPTIONS' });
  assert.throws(() => collect({ id: 'x', stats() {} }, {}), { code: 'EINVALIDOPTIONS' });
});

test('without prom-client, skiff-rs/metrics says so with ENOPROMCLIENT', async () => {
  // prom-client made unloadable in a child; a registry given by the caller still works
  const script = `
const Module = require('module');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  if (request === 'prom-client') { const e = new Error("Cannot find module 'prom-client'"); e.code = 'MODULE_NOT_FOUND'; throw e; }
  return resolve.call(this, request, ...rest);
};
const collect = require('skiff-rs/metrics');
const node = { id: 'n1', state: { name: 'follower' }, stats() {} };
try { collect(node); console.log('no error'); } catch (e) { console.log(e.code, e.message); }
const reg = { registerMetric() {}, metrics() {} };
console.log(typeof collect(node, reg).remove);
`;
  const out = await new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script], { cwd: ROOT, timeout: 20000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
  assert.match(out, /^ENOPROMCLIENT skiff-rs\/metrics needs prom-client: npm install prom-client$/m);
  assert.match(out, /^function$/m);
});

function get(port, urlPath, method = 'GET') {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: urlPath, method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('createKvStore serves /metrics on options.metrics, and stops serving when it stops', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-metrics-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const id = `tcp://127.0.0.1:${await freePort()}`;
  assert.throws(() => createKvStore({ id, dir, metrics: { port: 'x' } }), { code: 'EINVALIDOPTIONS' });
  assert.throws(() => createKvStore({ id, dir, metrics: 9464 }), { code: 'EINVALIDOPTIONS' });
  const store = createKvStore({ id, dir, bootstrap: true, metrics: { port: 0 } });
  t.after(() => store.stop());
  assert.equal(store.metrics, null, 'no endpoint before start');
  await store.start();
  await store.put('k', 1);
  const { port } = store.metrics;
  assert.ok(port > 0);

  const r = await get(port, '/metrics');
  assert.equal(r.status, 200);
  assert.match(r.type, /^text\/plain/);
  const { values } = parse(r.body);
  assert.equal(values[`skiff_is_leader{node="${id}"}`], 1);
  assert.ok(values[`skiff_commands_committed_total{node="${id}"}`] >= 1);
  assert.equal((await get(port, '/other')).status, 404);
  assert.equal((await get(port, '/metrics', 'POST')).status, 405);

  await store.stop();
  await assert.rejects(get(port, '/metrics'), { code: 'ECONNREFUSED' });
});
