'use strict';

// A persistence plugin's callback methods as Promises, under the plugin's own names (those the
// plugin has: the incremental extension's only when present), for tests that call a plugin
// directly: `await promised(p).applyCommand(id, 1, command)`.

const { promisify } = require('node:util');

const METHODS = ['loadMeta', 'saveMeta', 'saveLog', 'applyCommand', 'applyCommands', 'lastAppliedCommitIndex',
  'saveCommitIndex', 'removeAllState'];

function promised(p) {
  const api = {};
  for (const m of METHODS) if (typeof p[m] === 'function') api[m] = promisify(p[m].bind(p));
  return api;
}

module.exports = { promised };
