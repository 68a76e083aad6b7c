'use strict';

// The persistence used when `options.persistence` is not given (exported as Node.MemoryPersistence).
//
// NOT DURABLE: everything lives in this process's memory and is gone when it exits. It exists so
// that a node can be tried out without writing a plugin; give real deployments a real plugin.
// One instance is created per node that lacks a persistence plugin. It is lib/memory.js's
// persistence (the one the tests and the bench use) with its default state machine, the log of
// applied commands: `commands(nodeId)` lists them.

const { MemoryPersistence, clone } = require('./memory');

MemoryPersistence.clone = clone;

module.exports = MemoryPersistence;
