'use strict';

// The in-memory transport and persistence: one implementation of each plugin contract
// (/work/shared/skiff-compat.md, "Transport plugin" and "Persistence plugin") with fault hooks.
// The default persistence (lib/memory-persistence.js), the tests, the chaos harness and the bench
// all use these two classes, so a fix to how a message or a save behaves reaches all of them.
//
// Like a real wire or disk, everything crossing them is JSON-cloned and every callback is
// asynchronous. With no fault set they add nothing but that, so the bench measures the engine.
//
// Transport faults (MemoryNetwork):
//   net.partition(a, b)      cut a <-> b (ids or arrays of ids), both ways
//   net.partition(groups)    cut between groups (an array of arrays of ids), both ways
//   net.block(from, to)      cut one direction only
//   net.isolate(id)          cut everything to and from id
//   net.heal([id])           undo cuts and isolation (all, or those involving id)
//   net.crash(id) / revive   the node's instance is gone: no traffic, its ends and listener die
//   net.partitionMode        what a cut does to a message: 'error' (the sender is called back with
//                            EHOSTUNREACH) or 'drop' (lost; `refuseRate` of them fail with
//                            ECONNREFUSED instead)
//   net.dropRate / dupRate   lose / deliver twice that share of messages (the sender is called
//                            back once, with whichever reply arrives first)
//   net.delay = [min, max]   ms per message, uniform, so messages overtake each other;
//   net.lagRate / lagMax     a share of messages is held up to lagMax ms more (stale arrivals)
//   net.fail(id, 'connect' | 'send' | 'listen', mode, times)    misbehave on the next calls
//   net.onMessage(from, to, type, args)                         sees every request sent
// Persistence faults (MemoryPersistence):
//   p.fail(method, mode, times, [nodeId])   misbehave on the next calls of `method`
//   p.delay(method, ms, [nodeId])           call back after ms instead of at once
//   p.plugin(id)                            a plugin object for one instance of node `id`: its
//                                           calls complete in order on its own disk queue
//   p.setDisk(id, [min, max], [methods])    that instance's disk latency (p.baseDisk: all nodes)
//   p.crash(id)                             the instance loses its queue and never calls back
//   p.lying = true                          saveMeta acknowledges before it is durable
// where a `mode` is one of
//   'throw'  throw synchronously            'error'  call back with an Error (code EINJECTED)
//   'value'  call back with a non-Error     'twice'  do the work, call back twice
//   'never'  do nothing, never call back    'bad'    call back with a result JSON cannot carry
// Everything random comes from `rand` (Math.random unless a seeded one is given), drawn in a fixed
// order per message, so a seeded run draws the same numbers for the same traffic.
//
// lib/memory/common.js: the JSON wire (clone, wireError) and the one-shot fault list;
// lib/memory/network.js: the transport; lib/memory/persistence.js: the persistence.

const { clone, wireError, coded, injected, cyclic, Faults } = require('./common');
const { MemoryNetwork, Endpoint } = require('./network');
const { MemoryPersistence, commandLog, keyValue } = require('./persistence');

module.exports = {
  MemoryNetwork, MemoryPersistence, Endpoint, Faults, commandLog, keyValue,
  clone, wireError, coded, injected, cyclic,
};
