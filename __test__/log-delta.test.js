'use strict';

// The saveLog deltas the wrapper builds from the engine's saveMeta ops (lib/node/log-delta.js):
// each entry handed over once while saves succeed, and never less than the plugin may be missing
// after a save failed or was given up on.

const test = require('node:test');
const assert = require('node:assert/strict');
const { LogDelta } = require('../lib/node/log-delta');

const e = (index, term = 1) => ({ term, index, command: `c${index}` });
const range = (from, to, term) => Array.from({ length: to - from + 1 }, (_, k) => e(from + k, term));
const op = (from, entries, { li = 0, term = 1 } = {}) => ({
  from,
  state: {
    currentTerm: term, votedFor: null, peers: [{ id: 'b', metadata: {} }],
    log: { meta: { lastIncludedIndex: li, lastIncludedTerm: li ? 1 : 0 }, entries },
  },
});
const indexes = (delta) => delta.entries.map((x) => x.index);

// One call of `delta`, as the MetaSaver makes it: started, then finished with `ok`.
function call(log, delta, ok) {
  log.started();
  log.finished(ok, log.version);
  return delta;
}

test('the whole log first, then only what each op adds; the hard state with every delta', () => {
  const log = new LogDelta();
  const first = call(log, log.next(op(null, range(1, 3))), true);
  assert.equal(first.truncateFrom, 1);
  assert.deepEqual(indexes(first), [1, 2, 3]);
  assert.deepEqual(first.peers, [{ id: 'b', metadata: {} }]);
  assert.deepEqual(first.meta, { lastIncludedIndex: 0, lastIncludedTerm: 0 });
  const second = call(log, log.next(op(4, range(4, 5))), true);
  assert.equal(second.truncateFrom, 4);
  assert.deepEqual(indexes(second), [4, 5]);
  const vote = log.next(op(6, [], { term: 2 }));
  assert.equal(vote.truncateFrom, 6);
  assert.deepEqual(vote.entries, []);
  assert.equal(vote.currentTerm, 2);
  // the whole log again when the op says so (from null), from lastIncludedIndex + 1
  const whole = log.next(op(null, range(11, 12), { li: 10 }));
  assert.equal(whole.truncateFrom, 11);
});

test('after a failed save the next delta starts where the failed one did and carries its entries', () => {
  const log = new LogDelta();
  call(log, log.next(op(null, range(1, 3))), true);
  call(log, log.next(op(4, range(4, 5))), false);
  const next = log.next(op(6, range(6, 7)));
  assert.equal(next.truncateFrom, 4);
  assert.deepEqual(indexes(next), [4, 5, 6, 7]);
  // a newer op that cuts into the unconfirmed part replaces what it cuts
  const cut = log.next(op(5, [e(5, 2)], { term: 2 }));
  assert.equal(cut.truncateFrom, 4);
  assert.deepEqual(cut.entries, [e(4), e(5, 2)]);
  call(log, cut, true);
  assert.equal(log.next(op(6, [e(6, 2)])).truncateFrom, 6, 'confirmed: back to the op alone');
});

test('a save given up on may land late: nothing counts as confirmed until the newest state is written after it', () => {
  const log = new LogDelta();
  call(log, log.next(op(null, range(1, 2))), true);
  const a = log.next(op(3, range(3, 4)));
  const aVersion = log.version;
  log.started(); // a: abandoned, no callback yet
  const b = log.next(op(5, range(5, 6)));
  assert.equal(b.truncateFrom, 3, 'b carries a');
  call(log, b, true); // b succeeds while a may still land
  const c = log.next(op(7, [e(7)]));
  assert.equal(c.truncateFrom, 3, 'a could still overwrite b: everything since a goes again');
  call(log, c, true);
  // a lands after all: what it wrote is older than c, so the newest state is written again
  log.finished(true, aVersion);
  const again = log.current();
  assert.equal(again.truncateFrom, 3);
  assert.deepEqual(indexes(again), [3, 4, 5, 6, 7]);
  call(log, again, true);
  assert.equal(log.next(op(8, [e(8)])).truncateFrom, 8);
  assert.deepEqual(indexes(a), [3, 4]);
});

test('entries compaction removed are not sent again', () => {
  const log = new LogDelta();
  call(log, log.next(op(null, range(1, 5))), false);
  const next = log.next(op(6, range(6, 7), { li: 4 }));
  assert.equal(next.truncateFrom, 5);
  assert.deepEqual(indexes(next), [5, 6, 7]);
  assert.equal(log.hasState(), true);
  assert.equal(new LogDelta().hasState(), false);
});
