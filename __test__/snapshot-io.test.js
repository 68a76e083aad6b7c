'use strict';
// The wrapper's snapshot stream bookkeeping (lib/node/snapshot-io.js), driven without an engine.
const test = require('node:test');
const assert = require('node:assert');
const { SnapshotIO } = require('../lib/node/snapshot-io');
const { Lane } = require('../lib/lane');

function harness() {
  const completed = [];
  const io = { complete: (id, error, result) => completed.push({ id, error, result }), holdUntilComplete() {} };
  const apply = { lane: new Lane(), supersede() {} };
  const node = { id: 'n1', options: { persistence: {} }, _warn() {}, _debug: { staleReset() {} } };
  return { snaps: new SnapshotIO(node, io, apply), completed };
}

test('a write for an aborted stream is refused, and the aborted streams remembered stay bounded', async () => {
  const { snaps, completed } = harness();
  for (let sid = 1; sid <= 10_000; sid++) snaps.abort(sid);
  assert.ok(snaps._abortedSids.size <= 256, `remembers ${snaps._abortedSids.size} aborted streams`);
  snaps.write({ io: 7, sid: 10_000, seq: 0, data: 'x', end: false });
  await new Promise((resolve) => setImmediate(resolve));
  assert.strictEqual(completed.length, 1);
  assert.strictEqual(completed[0].id, 7);
  assert.strictEqual(completed[0].error.code, 'EPLUGIN');
});
