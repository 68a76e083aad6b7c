'use strict';

// The benchmark's plugins: lib/memory.js's transport and persistence, with no fault set, so what
// is measured is the engine. One pair of objects drives skiff-algorithm 0.8.2 and skiff-rs alike.
// The state machine is a key/value map per node: `{op: 'put', key, value}` sets a key. With
// `incremental: true` the persistence also has the incremental extension (saveLog, applyCommands).

const { MemoryNetwork, MemoryPersistence, keyValue } = require('../lib/memory');

class Persistence extends MemoryPersistence {
  constructor({ incremental = false } = {}) {
    super({ stateMachine: keyValue, incremental });
  }
}

module.exports = { Hub: MemoryNetwork, Persistence };
