'use strict';

// Validation and defaults for the options of `Node(options)`.

const crypto = require('crypto');
const { makeError } = require('./errors');
const { encode } = require('./codec');

// The engine's defaults (crates/skiff-driver/src/options.rs, whose timing ones are skiff-core's `Config::new`),
// written here too because this module loads without the addon; __test__/options.test.js holds
// them, and where the two validations draw their lines, against the engine's.
const DEFAULTS = Object.freeze({
  standby: false,
  heartbeatInterval: 50,
  minElectionTimeout: 150,
  maxElectionTimeout: 300,
  commandTimeout: 3000,
  retainedLogEntries: 50,
  // Largest command, as JSON text in bytes: well below what the built-in TCP transport carries in
  // one frame (maxFrameSize, 16 MiB), so a batch of entries plus one such command always fits.
  maxCommandBytes: 1048576,
  // `stop()` on a leader hands leadership to the most up-to-date voter first.
  transferOnStop: true,
});

const PERSISTENCE_METHODS = Object.freeze([
  'loadMeta',
  'saveMeta',
  'applyCommand',
  'lastAppliedCommitIndex',
  'saveCommitIndex',
  'createReadStream',
  'createWriteStream',
  'removeAllState',
]);

const TRANSPORT_METHODS = Object.freeze(['listen', 'connect']);

function invalid(message) {
  return makeError(message, 'EINVALIDOPTIONS');
}

function defaultUuid() {
  return crypto.randomUUID();
}

function isObjectLike(v) {
  return v !== null && (typeof v === 'object' || typeof v === 'function');
}

function positiveNumber(options, name) {
  const v = options[name];
  if (v === undefined) return DEFAULTS[name];
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw invalid(`options.${name} must be a positive finite number of milliseconds, got ${show(v)}`);
  }
  return Math.ceil(v);
}

function show(v) {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v == null) return String(v);
  if (typeof v === 'function') return 'a function';
  return `a ${typeof v}`;
}

function fresh(uuid, what) {
  let v;
  try {
    v = uuid();
  } catch (e) {
    throw invalid(`options.uuid() threw while generating ${what}: ${e && e.message}`);
  }
  if (typeof v === 'number' && Number.isFinite(v)) v = String(v);
  if (typeof v !== 'string' || v === '') {
    throw invalid(`options.uuid() must return a non-empty string, got ${show(v)}`);
  }
  return v;
}

/**
 * Validates user options and fills in defaults.
 * Returns `{ options, config }`: `options` is what the wrapper keeps as `node.options`, `config` is
 * what is handed to the native engine.
 * @param {object} input
 * @param {() => object} [defaultPersistence] factory for the built-in persistence
 */
function normalizeOptions(input, defaultPersistence) {
  if (input === undefined || input === null) input = {};
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw invalid(`options must be an object, got ${show(input)}`);
  }
  const options = Object.assign({}, input);

  const transport = options.transport;
  if (!isObjectLike(transport)) {
    throw invalid('need options.transport (an object with listen() and connect() functions)');
  }
  for (const m of TRANSPORT_METHODS) {
    if (typeof transport[m] !== 'function') {
      throw invalid(`need options.transport with a ${m}() function`);
    }
  }

  if (options.persistence === undefined || options.persistence === null) {
    if (typeof defaultPersistence !== 'function') {
      throw invalid('need options.persistence');
    }
    options.persistence = defaultPersistence();
  } else {
    const p = options.persistence;
    if (!isObjectLike(p)) throw invalid(`options.persistence must be an object, got ${show(p)}`);
    const missing = PERSISTENCE_METHODS.filter((m) => typeof p[m] !== 'function');
    if (missing.length) {
      throw invalid(`options.persistence is missing the method(s) ${missing.join(', ')}`);
    }
  }

  if (options.uuid !== undefined && options.uuid !== null && typeof options.uuid !== 'function') {
    throw invalid(`options.uuid must be a function, got ${show(options.uuid)}`);
  }
  const uuid = typeof options.uuid === 'function' ? options.uuid : defaultUuid;
  options.uuid = uuid;

  if (options.standby === undefined || options.standby === null) options.standby = DEFAULTS.standby;
  if (typeof options.standby !== 'boolean') {
    throw invalid(`options.standby must be a boolean, got ${show(options.standby)}`);
  }

  const numbers = {};
  for (const name of ['heartbeatInterval', 'minElectionTimeout', 'maxElectionTimeout', 'commandTimeout']) {
    numbers[name] = positiveNumber(options, name);
  }
  if (options.retainedLogEntries === undefined) {
    numbers.retainedLogEntries = DEFAULTS.retainedLogEntries;
  } else {
    const r = options.retainedLogEntries;
    if (typeof r !== 'number' || !Number.isInteger(r) || r < 0) {
      throw invalid(`options.retainedLogEntries must be a non-negative integer, got ${show(r)}`);
    }
    numbers.retainedLogEntries = r;
  }
  if (options.maxCommandBytes === undefined) {
    numbers.maxCommandBytes = DEFAULTS.maxCommandBytes;
  } else {
    const m = options.maxCommandBytes;
    if (typeof m !== 'number' || !Number.isSafeInteger(m) || m <= 0) {
      throw invalid(`options.maxCommandBytes must be a positive integer (bytes), got ${show(m)}`);
    }
    numbers.maxCommandBytes = m;
  }
  if (options.transferOnStop === undefined || options.transferOnStop === null) {
    options.transferOnStop = DEFAULTS.transferOnStop;
  } else if (typeof options.transferOnStop !== 'boolean') {
    throw invalid(`options.transferOnStop must be a boolean, got ${show(options.transferOnStop)}`);
  }
  if (numbers.maxElectionTimeout < numbers.minElectionTimeout) {
    throw invalid(
      `options.maxElectionTimeout (${numbers.maxElectionTimeout}) must not be below ` +
      `options.minElectionTimeout (${numbers.minElectionTimeout})`);
  }
  if (numbers.heartbeatInterval >= numbers.minElectionTimeout) {
    throw invalid(
      `options.heartbeatInterval (${numbers.heartbeatInterval}) must be below ` +
      `options.minElectionTimeout (${numbers.minElectionTimeout})`);
  }
  Object.assign(options, numbers);

  if (options.metadata === undefined || options.metadata === null) {
    options.metadata = {};
  } else if (typeof options.metadata !== 'object' || Array.isArray(options.metadata) ||
             Buffer.isBuffer(options.metadata)) {
    throw invalid(`options.metadata must be a plain object, got ${show(options.metadata)}`);
  }
  let metadataJson;
  try {
    metadataJson = encode(options.metadata, 'EINVALIDOPTIONS');
  } catch (e) {
    throw invalid(`options.metadata: ${e.message}`);
  }

  if (options.id === undefined || options.id === null || options.id === '') {
    options.id = fresh(uuid, 'the node id');
  } else if (typeof options.id !== 'string') {
    throw invalid(`options.id must be a string, got ${show(options.id)}`);
  }

  if (options.cluster === undefined || options.cluster === null || options.cluster === '') {
    options.cluster = fresh(uuid, 'the cluster id');
  } else if (typeof options.cluster !== 'string') {
    throw invalid(`options.cluster must be a string, got ${show(options.cluster)}`);
  }

  const config = {
    id: options.id,
    standby: options.standby,
    clusterId: options.cluster,
    metadata: JSON.parse(metadataJson),
    heartbeatInterval: numbers.heartbeatInterval,
    minElectionTimeout: numbers.minElectionTimeout,
    maxElectionTimeout: numbers.maxElectionTimeout,
    commandTimeout: numbers.commandTimeout,
    retainedLogEntries: numbers.retainedLogEntries,
    // Several requests in flight per connection only for a transport that says it pairs each
    // reply with its request (skiff-algorithm never sent two at once; its plugins rely on that).
    pipelining: transport.pipelining === true,
    maxCommandBytes: numbers.maxCommandBytes,
    // A plugin with the point-in-time snapshot extension: transfers read a fixed index while
    // applying goes on, and a failed one resumes.
    pointInTimeSnapshots: typeof options.persistence.createSnapshotReadStream === 'function',
    transferOnStop: options.transferOnStop,
  };
  return { options, config };
}

module.exports = { normalizeOptions, DEFAULTS, PERSISTENCE_METHODS, TRANSPORT_METHODS };
