'use strict';

// Option validation and the module shape: `Node(options)` with and without `new`, defaults,
// generated ids, and clear EINVALIDOPTIONS errors for bad options (no engine is created for them).

const test = require('node:test');
const assert = require('node:assert/strict');
const { EventEmitter } = require('events');
const Node = require('..');
const { normalizeOptions, DEFAULTS } = require('../lib/options');
const { MemoryNetwork: Hub, MemoryPersistence: Persistence } = require('../lib/memory');

const transport = { listen() {}, connect() {} };

function rejects(options, pattern) {
  assert.throws(() => Node(options), (err) => {
    assert.ok(err instanceof Error, 'an Error');
    assert.equal(err.code, 'EINVALIDOPTIONS');
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

// A missing or unusable transport is refused with the original's message.
test('transport is required and must have listen() and connect()', () => {
  rejects(undefined, /need options\.transport/);
  rejects({}, /need options\.transport/);
  rejects({ transport: null }, /need options\.transport/);
  rejects({ transport: { listen() {} } }, /need options\.transport/);
  rejects({ transport: { connect() {} } }, /need options\.transport/);
  rejects({ transport: 'tcp' }, /need options\.transport/);
});

// Election timeout range, heartbeat below it, positive finite numbers.
test('timing options are checked', () => {
  rejects({ transport, minElectionTimeout: 300, maxElectionTimeout: 200 }, /maxElectionTimeout/);
  rejects({ transport, heartbeatInterval: 150 }, /heartbeatInterval/);
  rejects({ transport, heartbeatInterval: 200, minElectionTimeout: 150 }, /heartbeatInterval/);
  for (const bad of [0, -1, NaN, Infinity, '50', null]) {
    rejects({ transport, heartbeatInterval: bad }, /heartbeatInterval/);
    rejects({ transport, commandTimeout: bad }, /commandTimeout/);
  }
  rejects({ transport, minElectionTimeout: 'x' }, /minElectionTimeout/);
  rejects({ transport, retainedLogEntries: -1 }, /retainedLogEntries/);
  rejects({ transport, retainedLogEntries: 1.5 }, /retainedLogEntries/);
  rejects({ transport, maxCommandBytes: 0 }, /maxCommandBytes/);
  rejects({ transport, maxCommandBytes: 1.5 }, /maxCommandBytes/);
  rejects({ transport, maxCommandBytes: '1mb' }, /maxCommandBytes/);
});

// Types of the other options.
test('id, cluster, standby, uuid, metadata and persistence are type-checked', () => {
  rejects({ transport, id: 42 }, /options\.id/);
  rejects({ transport, cluster: {} }, /options\.cluster/);
  rejects({ transport, standby: 'yes' }, /options\.standby/);
  rejects({ transport, transferOnStop: 1 }, /options\.transferOnStop/);
  rejects({ transport, uuid: 'abc' }, /options\.uuid/);
  rejects({ transport, uuid: () => 7n }, /uuid/);
  rejects({ transport, metadata: 'm' }, /options\.metadata/);
  rejects({ transport, metadata: [1] }, /options\.metadata/);
  rejects({ transport, metadata: { f() {} } }, /options\.metadata/);
  const cyclic = {};
  cyclic.self = cyclic;
  rejects({ transport, metadata: cyclic }, /options\.metadata/);
  rejects({ transport, persistence: {} }, /persistence/);
  const p = new Persistence();
  const partial = { loadMeta: p.loadMeta, saveMeta: p.saveMeta };
  rejects({ transport, persistence: partial }, /applyCommand/);
  rejects('options', /options must be an object/);
});

// Defaults match the contract; ids come from options.uuid() when given.
test('defaults and generated ids', () => {
  const { options, config } = normalizeOptions({ transport }, () => new Persistence());
  assert.equal(options.standby, false);
  assert.equal(options.heartbeatInterval, 50);
  assert.equal(options.minElectionTimeout, 150);
  assert.equal(options.maxElectionTimeout, 300);
  assert.equal(options.commandTimeout, 3000);
  assert.equal(options.retainedLogEntries, 50);
  assert.equal(options.maxCommandBytes, 1048576);
  assert.equal(options.transferOnStop, true);
  assert.equal(config.transferOnStop, true);
  assert.equal(normalizeOptions({ transport, transferOnStop: false }, () => new Persistence()).config.transferOnStop, false);
  assert.deepEqual(options.metadata, {});
  assert.equal(typeof options.id, 'string');
  assert.ok(options.id.length > 0);
  assert.equal(typeof options.cluster, 'string');
  assert.notEqual(options.id, normalizeOptions({ transport }, () => new Persistence()).options.id);
  assert.deepEqual(Object.keys(config).sort(), ['clusterId', 'commandTimeout', 'heartbeatInterval',
    'id', 'maxCommandBytes', 'maxElectionTimeout', 'metadata', 'minElectionTimeout', 'pipelining',
    'pointInTimeSnapshots', 'retainedLogEntries', 'standby', 'transferOnStop']);
  // point-in-time snapshot reads only with a persistence that has the extension
  assert.equal(config.pointInTimeSnapshots, false);
  const pit = Object.assign(new Persistence(), { createSnapshotReadStream() {} });
  assert.equal(normalizeOptions({ transport, persistence: pit }, () => new Persistence()).config.pointInTimeSnapshots, true);
  // one request in flight per connection unless the transport declares pipelining
  assert.equal(config.pipelining, false);
  const piped = Object.assign({}, transport, { pipelining: true });
  assert.equal(normalizeOptions({ transport: piped }, () => new Persistence()).config.pipelining, true);
  assert.equal(normalizeOptions({ transport: Object.assign({}, transport, { pipelining: 'yes' }) },
    () => new Persistence()).config.pipelining, false);
  assert.equal(DEFAULTS.commandTimeout, 3000);

  let n = 0;
  const uuid = () => `u${++n}`;
  const r = normalizeOptions({ transport, uuid }, () => new Persistence());
  assert.equal(r.options.id, 'u1');
  assert.equal(r.options.cluster, 'u2');
  assert.equal(r.config.clusterId, 'u2');
});

// `Node()` works without `new`, is an EventEmitter, and exposes id, metadata, cluster.id, state.
test('Node() with and without new', async (t) => {
  const hub = new Hub();
  const persistence = new Persistence();
  const a = Node({ id: 'a', cluster: 'c1', metadata: { zone: 'x' }, transport: hub, persistence });
  const b = new Node({ id: 'b', transport: hub, persistence, standby: true });
  t.after(() => Promise.all([a.stop(), b.stop()]));
  for (const node of [a, b]) {
    assert.ok(node instanceof Node);
    assert.ok(node instanceof EventEmitter);
    assert.equal(node.constructor, Node);
  }
  assert.equal(a.id, 'a');
  assert.deepEqual(a.metadata, { zone: 'x' });
  assert.equal(a.cluster.id, 'c1');
  assert.equal(typeof b.cluster.id, 'string');
  assert.ok(['idle', 'follower', 'standby', 'candidate'].includes(a.state.name), a.state.name);
  assert.equal(a.currentLeader(), null);
  assert.equal(a.currentTerm(), 0);
  assert.equal(a.options.transport, hub);
  // a subclass gets its own prototype
  class Sub extends Node {}
  const c = new Sub({ id: 'c', transport: hub, persistence, standby: true });
  t.after(() => c.stop());
  assert.ok(c instanceof Sub);
  assert.ok(c instanceof Node);
});

// Without options.persistence the built-in, non-durable memory persistence is used and works.
test('built-in persistence when none is given', async (t) => {
  const hub = new Hub();
  const node = Node({ id: 'solo', transport: hub });
  t.after(() => node.stop());
  assert.equal(typeof node.options.persistence.applyCommand, 'function');
  await new Promise((resolve) => node.once('leader', resolve));
  await node.command({ hello: 'world' });
  assert.deepEqual(node.options.persistence.commands('solo'), [{ hello: 'world' }]);
});

// lib/options.js keeps its own DEFAULTS (the module loads without the addon), so they are held
// against the engine's (crates/skiff-driver/src/options.rs, whose timing defaults are skiff-core's Config).
test('the wrapper\'s defaults are the engine\'s', () => {
  const binding = require('../binding.js');
  assert.deepEqual(JSON.parse(binding.engineDefaults()), { ...DEFAULTS });
  assert.deepEqual(Node.defaults, DEFAULTS);
});

// The wrapper checks options first (for messages that name the option); the engine checks them
// again. For integer values both must draw the line in the same place: a config the wrapper lets
// through and the engine refuses would throw from the native constructor instead.
test('the wrapper and the engine accept and refuse the same options', () => {
  const binding = require('../binding.js');
  const check = (extra) => normalizeOptions({ transport, id: 'a', cluster: 'c', ...extra }, () => ({}));
  const { config: base } = check({});
  const cases = [];
  const values = [-1, 0, 1, 49, 50, 51, 149, 150, 151, 300, 3000, 2 ** 31, 2 ** 53 - 1, 2 ** 53];
  for (const name of ['heartbeatInterval', 'minElectionTimeout', 'maxElectionTimeout', 'commandTimeout',
    'retainedLogEntries', 'maxCommandBytes']) {
    for (const v of values) cases.push({ [name]: v });
  }
  for (const h of [1, 50, 150]) {
    for (const min of [1, 50, 150, 151]) {
      for (const max of [1, 150, 151, 300]) {
        cases.push({ heartbeatInterval: h, minElectionTimeout: min, maxElectionTimeout: max });
      }
    }
  }
  const disagree = [];
  for (const c of cases) {
    let wrapper = true;
    try { check(c); } catch (e) {
      assert.equal(e.code, 'EINVALIDOPTIONS');
      wrapper = false;
    }
    let engine = true;
    try { binding.checkOptions(JSON.stringify({ ...base, ...c })); } catch (e) {
      assert.equal(e.code, 'EINVALIDOPTIONS');
      engine = false;
    }
    if (wrapper !== engine) disagree.push(`${JSON.stringify(c)}: wrapper ${wrapper}, engine ${engine}`);
  }
  assert.deepEqual(disagree, []);
});
