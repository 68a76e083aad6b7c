'use strict';

// skiff-rs: a drop-in replacement for skiff-algorithm 0.8.2 with the Raft engine in Rust.
//
//   const Node = require('skiff-rs');
//   const node = Node({ transport, persistence });   // `new Node(...)` works too
//
// Without `options.persistence` a node keeps its state in memory only (lib/memory-persistence.js):
// that is NOT durable and is meant for trying things out.
//
// The native binding is loaded when the first node is created, so that option errors are reported
// as such and this module can be required (e.g. for its types and helpers) without it.

const { createNodeClass, ENGINE_EVENTS, STATE_NAMES } = require('./lib/node');
const { CODES } = require('./lib/errors');
const { DEFAULTS } = require('./lib/options');
const MemoryPersistence = require('./lib/memory-persistence');

let RaftNode = null;

function loadNative() {
  if (RaftNode === null) {
    RaftNode = require('./binding.js').RaftNode;
    if (typeof RaftNode !== 'function') {
      throw new Error('skiff-rs: the native binding does not export RaftNode');
    }
  }
  return RaftNode;
}

const Node = createNodeClass(loadNative);

Node.Node = Node;
Node.default = Node;
Node.codes = CODES;
Node.defaults = DEFAULTS;
Node.events = ENGINE_EVENTS;
Node.states = STATE_NAMES;
Node.MemoryPersistence = MemoryPersistence;
// Built-in plugins and the replicated key-value store (lib/kv.js).
Node.createTcpTransport = require('./lib/transport/tcp');
Node.createFilePersistence = require('./lib/persistence/file');
Node.createKvStateMachine = require('./lib/persistence/kv-state-machine');
Node.createKvStore = require('./lib/kv').createKvStore;
Node.createKvClient = require('./lib/kv').createKvClient;

module.exports = Node;
