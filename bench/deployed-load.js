'use strict';

// The client side of bench/deployed.js (and of __test__/deployed.test.js): C closed-loop clients
// sharing one createKvClient, each putting a small value and waiting for the answer before its
// next put.
//
//   runLoad({ addresses, clients, warmupMs, durationMs, clientOptions, etcd, onAck }) ->
//     { clients, puts, warmupPuts, errors, firstError, seconds, putsPerSec, p50, p99, max }   (latencies in ms)
//
// Forked with an IPC channel (bench/deployed.js runs it as its own process), it takes one
// { run: <runLoad options> } message, answers { result } or { error }, and exits.

const { createKvClient } = require('../lib/kv');

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

/**
 * @param {object} o
 *   addresses      the stores' addresses
 *   clients        how many closed-loop clients
 *   warmupMs       puts during this first period are not counted [500]
 *   durationMs     how long the counted period lasts
 *   clientOptions  createKvClient options (secret, timeout, ...)
 *   etcd           instead of the stores: { module, hosts } drives an etcd cluster with the etcd3
 *                  client loaded from `module` (a path), `addresses` unused
 *   onAck(key, value)  called for every acknowledged put
 *   stopSignal     optional { stopped: boolean }: ends the run early once set
 */
// { put(key, value) -> Promise, close() -> Promise } for the stores or for etcd.
function connect(o) {
  if (o.etcd) {
    const { Etcd3 } = require(o.etcd.module); // eslint-disable-line global-require -- optional, bench only
    const etcd = new Etcd3({ hosts: o.etcd.hosts });
    return {
      put: (key, value) => etcd.put(key).value(JSON.stringify(value)),
      close: async () => etcd.close(),
    };
  }
  return createKvClient(o.addresses, o.clientOptions || {});
}

async function runLoad(o) {
  const client = connect(o);
  const warmupMs = o.warmupMs === undefined ? 500 : o.warmupMs;
  const start = Date.now();
  const measureFrom = start + warmupMs;
  const end = measureFrom + o.durationMs;
  const latencies = [];
  let errors = 0;
  let warmupPuts = 0;
  let firstError = null;
  const value = { v: 'x'.repeat(16) };
  const loop = async (c) => {
    for (let seq = 0; Date.now() < end && !(o.stopSignal && o.stopSignal.stopped); seq++) {
      const key = `c${c}-${seq}`;
      const t0 = process.hrtime.bigint();
      try {
        await client.put(key, value);
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (o.onAck) o.onAck(key, value);
        if (Date.now() >= measureFrom) latencies.push(ms);
        else warmupPuts++;
      } catch (err) {
        errors++;
        if (!firstError) firstError = `${err.code || ''} ${err.message}`;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: o.clients }, (_, c) => loop(c)));
  } finally {
    await client.close();
  }
  const seconds = Math.max(1, Math.min(Date.now(), end) - measureFrom) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    clients: o.clients,
    puts: latencies.length,
    warmupPuts,
    errors,
    firstError,
    seconds,
    putsPerSec: latencies.length / seconds,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    max: latencies.length ? latencies[latencies.length - 1] : NaN,
  };
}

module.exports = { runLoad, percentile };

if (require.main === module && typeof process.send === 'function') {
  process.once('message', (msg) => {
    runLoad(msg.run).then(
      (result) => process.send({ result }, () => process.exit(0)),
      (err) => process.send({ error: `${err.code || ''} ${err.message}` }, () => process.exit(1)),
    );
  });
  process.on('disconnect', () => process.exit(0));
}
