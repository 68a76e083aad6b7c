'use strict';

// A replicated key-value store: a skiff-rs Node + the TCP transport + the durable file persistence
// (whose built-in state machine is the key-value store of ./persistence/kv-state-machine.js).
//
//   const { createKvStore, createKvClient } = require('skiff-rs');   // or require('skiff-rs/lib/kv')
//
//   // Start the standby members first, then the one that bootstraps the cluster and joins them.
//   const b = createKvStore({ id: 'tcp://127.0.0.1:9002', dir: '/var/lib/kv' });
//   const c = createKvStore({ id: 'tcp://127.0.0.1:9003', dir: '/var/lib/kv' });
//   const a = createKvStore({ id: 'tcp://127.0.0.1:9001', dir: '/var/lib/kv', bootstrap: true,
//                             peers: ['tcp://127.0.0.1:9002', 'tcp://127.0.0.1:9003'] });
//   await b.start(); await c.start(); await a.start();
//   await a.put('k', { any: 'JSON' });  await a.get('k');  await a.del('k');
//
//   const client = createKvClient(['tcp://127.0.0.1:9001', 'tcp://127.0.0.1:9002']);
//   await client.put('k', 1);  await client.get('k');  await client.close();
//
// Design
//
// * The node id IS the address the node listens on (`tcp://host:port`), so an `ENOTLEADER`
//   error's `err.leader` is directly where to go next.
// * Membership: a brand-new store forms a one-member cluster when `bootstrap: true`, otherwise it
//   starts as a standby that waits for a leader to `join` it. Once a store has state on disk,
//   `bootstrap` does not matter any more: membership is in the replicated log. `peers` are joined
//   by a bootstrapping store once it leads, on its very first start only (call `join` for more);
//   its `start()` resolves when they are members.
//   Joining needs the joined store to be running (the new member counts for the majority).
// * Every write of a store goes through the Raft log of its local node, which must be the leader.
//   `get` is a linearizable read that writes nothing: `node.read()` (ReadIndex: the leader confirms
//   it still leads with a heartbeat round; a follower asks the leader for its commit index), then
//   the local copy once it has applied that far. So a follower's store serves `get` too.
//   A store whose node is not the leader does NOT forward writes: it rejects with `ENOTLEADER` and
//   `err.leader` (the leader's address, or null while unknown). That keeps the store honest about
//   where an operation ran.
// * Redirection is the client's job: `createKvClient(addresses)` talks to stores over the same TCP
//   port as Raft (the transport's hello carries `{ skiffKvClient: 1 }`, which the store serves itself
//   instead of handing the connection to the Raft node). It sends to the leader it last heard of,
//   follows `err.leader` when that is one of ITS OWN addresses (a store that lies about the leader
//   cannot send the client's writes elsewhere), and tries the other addresses while no leader is
//   known or a store is unreachable, until its `timeout`. It answers nothing a store asks of it.
// * Security: stores and clients take the TCP transport's `secret`, `tls` and `cluster` (a client
//   holding the secret or a certificate is trusted like a member); a store refuses a command whose
//   JSON exceeds `maxCommandBytes` before proposing it.
// * Retries and exactly-once: a retry after `ENOTLEADER` or a request that never left
//   (`ENOTCONNECTED`) is safe. After an ambiguous failure (a timeout or a lost connection: the
//   command may or may not have been committed) the client retries too, which is harmless for
//   `put` and `get`; a retried `del` may then report `false` for a key it did delete.
//   Set `retryAmbiguous: false` to get such errors instead.
// * `localGet(key)` reads this store's own copy without the log: fast, NOT linearizable (a
//   follower may lag, a deposed leader may not know yet).
// * Batching: operations arriving together (from any number of clients and connections) share
//   one log entry, a `{ op: 'batch', ops }` command answered per operation once applied
//   (./kv/batcher.js).
//
// The parts, under ./kv/: protocol.js (requests, commands and their size), transport.js (the
// TCP transport with the security options), batcher.js, store.js (KvStore), client.js
// (KvClient), promises.js.

const { KvStore, createKvStore } = require('./kv/store');
const { KvClient, createKvClient } = require('./kv/client');
const { REQUEST_TYPE, CLIENT_HELLO } = require('./kv/protocol');

module.exports = {
  createKvStore,
  createKvClient,
  KvStore,
  KvClient,
  REQUEST_TYPE,
  CLIENT_HELLO,
};
