'use strict';

// lib/errors.js's conversions between errors and their wire form, which the wrapper (to and from
// the engine) and the TCP transport (to and from a peer) both use.

const test = require('node:test');
const assert = require('node:assert/strict');
const { toWire, toError } = require('../lib/errors');

test('toWire carries message and code, and scalar fields only up to the limit', () => {
  const err = Object.assign(new Error('not the leader'), { code: 'ENOTLEADER', leader: 'b', nested: { x: 1 } });
  assert.deepEqual(toWire(err), { message: 'not the leader', code: 'ENOTLEADER' });
  assert.deepEqual(toWire(err, 32), { message: 'not the leader', code: 'ENOTLEADER', leader: 'b' });
  const many = Object.assign(new Error('m'), { code: 'EX' }, Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`f${i}`, i])));
  assert.equal(Object.keys(toWire(many, 32)).length, 32);
  assert.deepEqual(toWire('plain'), { message: 'plain' });
  assert.deepEqual(toWire({ code: 7 }), { message: '{"code":7}', code: '7' });
  const hostile = new Proxy({}, { get() { throw new Error('no'); }, ownKeys() { throw new Error('no'); } });
  assert.equal(typeof toWire(hostile, 32).message, 'string');
});

test('toError keeps the fields, gives a code to a bare value, and never takes a prototype', () => {
  const e = toError({ message: 'refused', code: 'EBUSY', leader: null });
  assert.ok(e instanceof Error);
  assert.equal(e.message, 'refused');
  assert.equal(e.code, 'EBUSY');
  assert.equal(e.leader, null);
  assert.equal(toError('boom', 'EREMOTE').code, 'EREMOTE');
  const original = new Error('same');
  assert.equal(toError(original), original);
  // JSON.parse (and msgpack) make `__proto__` an own key; copied, it would replace the prototype.
  const lie = toError(JSON.parse('{"message":"m","__proto__":{"polluted":true}}'));
  assert.ok(lie instanceof Error);
  assert.equal(lie.polluted, undefined);
});
