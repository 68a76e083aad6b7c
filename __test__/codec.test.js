'use strict';

// The command codec (lib/codec.js): what JSON carries exactly is encoded, everything else is
// refused with EBADCOMMAND, and Buffers (in their standard JSON form) are revived deeply.

const test = require('node:test');
const assert = require('node:assert/strict');
const { encode, revive } = require('../lib/codec');

// Plain JSON values encode to exactly what JSON.stringify gives.
test('JSON values encode as JSON', () => {
  const values = [0, -1.5, 'str', '', true, false, null, [], {}, [1, 'a', null, { b: [2] }],
    { nested: { deep: [true, { x: 'y' }] } }, ['add peer', 'node-d', { zone: 'b' }]];
  for (const v of values) {
    assert.equal(encode(v), JSON.stringify(v));
    assert.deepEqual(JSON.parse(encode(v)), v);
  }
  // object properties holding undefined are absent, as in JSON; Dates become their ISO text
  assert.equal(encode({ a: 1, b: undefined }), '{"a":1}');
  assert.equal(encode({ d: new Date(0) }), '{"d":"1970-01-01T00:00:00.000Z"}');
  // a shared (not cyclic) reference is fine
  const shared = { s: 1 };
  assert.equal(encode([shared, shared]), '[{"s":1},{"s":1}]');
});

// Everything JSON cannot carry exactly is refused with a coded error naming where it is.
test('refused values', () => {
  const cyclic = { a: [] };
  cyclic.a.push(cyclic);
  const cases = [
    [() => 1, /function/],
    [{ f() {} }, /function cannot be carried as JSON at \.f/],
    [Symbol('s'), /symbol/],
    [{ s: Symbol('s') }, /symbol/],
    [10n, /bigint/],
    [NaN, /NaN/],
    [{ x: [1, Infinity] }, /Infinity cannot be carried as JSON at \.x\[1\]/],
    [-Infinity, /-Infinity/],
    [undefined, /undefined/],
    [[1, undefined], /undefined cannot be carried as JSON at \[1\]/],
    [cyclic, /cycle/],
    [new Uint8Array([1, 2]), /Uint8Array/],
    [new Float64Array(1), /Float64Array/],
    [new ArrayBuffer(2), /ArrayBuffer/],
    [new Map([[1, 2]]), /Map/],
    [new Set([1]), /Set/],
    [/re/, /RegExp/],
    [{ toJSON() { throw new Error('nope'); } }, /toJSON\(\) threw/],
  ];
  for (const [value, pattern] of cases) {
    assert.throws(() => encode(value), (err) => {
      assert.equal(err.code, 'EBADCOMMAND', `code for ${String(pattern)}`);
      assert.match(err.message, pattern);
      return true;
    });
  }
  // the error code can be chosen by the caller
  assert.throws(() => encode(NaN, 'EOTHER'), { code: 'EOTHER' });
});

// Buffers encode in their standard JSON form and come back as Buffers, at any depth.
test('Buffers round-trip', () => {
  const buf = Buffer.from([0, 1, 254, 255]);
  const json = encode(buf);
  assert.equal(json, JSON.stringify({ type: 'Buffer', data: [0, 1, 254, 255] }));
  const back = revive(JSON.parse(json));
  assert.ok(Buffer.isBuffer(back));
  assert.ok(back.equals(buf));

  const deep = revive(JSON.parse(encode({ list: [{ b: buf }, 'x'], top: Buffer.from('hi') })));
  assert.ok(Buffer.isBuffer(deep.list[0].b));
  assert.ok(deep.list[0].b.equals(buf));
  assert.equal(deep.top.toString(), 'hi');
  assert.equal(deep.list[1], 'x');
});

// Only exact Buffer JSON is revived; look-alikes stay plain objects.
test('revive leaves look-alikes alone', () => {
  const lookAlikes = [
    { type: 'Buffer', data: [1, 256] },
    { type: 'Buffer', data: [1.5] },
    { type: 'Buffer', data: 'abc' },
    { type: 'Buffer', data: [1], extra: true },
    { type: 'buffer', data: [1] },
  ];
  for (const v of lookAlikes) {
    const copy = JSON.parse(JSON.stringify(v));
    assert.deepEqual(revive(copy), v);
    assert.ok(!Buffer.isBuffer(revive(JSON.parse(JSON.stringify(v)))));
  }
  for (const v of [1, 'a', null, true]) assert.equal(revive(v), v);
});
