'use strict';

// The Lane alone: plugin calls one at a time, a call that never calls back given up on after its
// timeout (counted from its last touch), and one timer per lane rather than one per call.

const test = require('node:test');
const assert = require('node:assert');
const { Lane } = require('../lib/lane');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test('calls run one after another, in the order they came', async () => {
  const lane = new Lane();
  const order = [];
  const releases = [];
  for (const name of ['a', 'b', 'c']) {
    lane.run((release) => {
      order.push(name);
      releases.push(release);
    }, 1000);
  }
  assert.deepStrictEqual(order, ['a'], 'a second call started before the first released the lane');
  assert.strictEqual(lane.pending, 3);
  releases[0]();
  releases[0](); // a second release is ignored
  assert.deepStrictEqual(order, ['a', 'b']);
  releases[1]();
  releases[2]();
  assert.deepStrictEqual(order, ['a', 'b', 'c']);
  assert.strictEqual(lane.pending, 0);
  lane.close();
});

test('a call that never calls back is given up on after its timeout, and the next one runs', async () => {
  const lane = new Lane();
  let abandoned = 0;
  const started = Date.now();
  let nextAt = 0;
  lane.run(() => {}, 60, () => {
    abandoned += 1;
  });
  lane.run((release) => {
    nextAt = Date.now();
    release();
  }, 60);
  await sleep(20);
  assert.strictEqual(nextAt, 0, 'the lane gave up before the timeout');
  const deadline = Date.now() + 5000;
  while (nextAt === 0 && Date.now() < deadline) await sleep(5);
  assert.strictEqual(abandoned, 1);
  assert.ok(nextAt - started >= 55, `gave up after ${nextAt - started} ms, timeout 60 ms`);
  lane.close();
});

test('a call that keeps touching the lane is not given up on; the timeout counts from the last touch', async () => {
  const lane = new Lane();
  let abandoned = false;
  let touchFn = null;
  lane.run((release, touch) => {
    touchFn = touch;
  }, 60, () => {
    abandoned = true;
  });
  // busy for 200 ms, touching every 20 ms: more than three timeouts in all, never one without a touch
  for (let i = 0; i < 10; i++) {
    await sleep(20);
    touchFn();
  }
  assert.strictEqual(abandoned, false, 'a call making progress was given up on');
  const quietFrom = Date.now();
  const deadline = quietFrom + 5000;
  while (!abandoned && Date.now() < deadline) await sleep(5);
  assert.ok(abandoned, 'a call that stopped making progress was never given up on');
  assert.ok(Date.now() - quietFrom >= 55, 'given up on sooner than the timeout after the last touch');
  lane.close();
});

test('calls that finish in time set no timer each: the lane keeps one', () => {
  const lane = new Lane();
  const realSetTimeout = global.setTimeout;
  let timers = 0;
  global.setTimeout = (...args) => {
    timers += 1;
    return realSetTimeout(...args);
  };
  try {
    for (let i = 0; i < 1000; i++) lane.run((release) => release(), 10000);
  } finally {
    global.setTimeout = realSetTimeout;
  }
  assert.strictEqual(timers, 1, `${timers} timers for 1000 calls`);
  lane.close();
});

test('a call with no timeout is waited for however long it takes, and close() stops the timing', async () => {
  const lane = new Lane();
  let abandoned = false;
  let release = null;
  lane.run((r) => {
    release = r;
  }, 0, () => {
    abandoned = true;
  });
  await sleep(50);
  assert.strictEqual(abandoned, false);
  release();
  // a timed call, then close(): nothing is given up on after the node is gone
  lane.run(() => {}, 20, () => {
    abandoned = true;
  });
  lane.close();
  await sleep(60);
  assert.strictEqual(abandoned, false, 'a closed lane still timed a call out');
});
