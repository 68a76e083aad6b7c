'use strict';

// applyCommands answers that do not line up with their batch: a state machine failing partway
// through a batch (the file persistence then calls back with the error and the results of the
// commands that took effect), a plugin answering fewer results than commands, or no array. Every
// command must still resolve with its own result, each command take effect exactly once, and the
// failure be reported; none may succeed with an `undefined` result it never got, nor be
// acknowledged and then lost.

const test = require('node:test');
const assert = require('node:assert/strict');

const Node = require('..');
const createFilePersistence = require('../lib/persistence/file');
const { MemoryNetwork } = require('../lib/memory');
const { tmpDirs } = require('./helpers/tmp');
const { waitForState } = require('./helpers/cluster');

const tmpDir = tmpDirs('skiff-apply-results-');

// A state machine whose result is 10 x the command's `n`; it keeps every index it applied, and
// `failOnce(pred)` makes it throw once, for the first command `pred(index)` takes.
function tensMachine() {
  const machine = {
    applied: [],
    fail: null,
    failOnce(pred) { this.fail = pred; },
    apply(command, index) {
      if (this.fail && this.fail(index)) {
        this.fail = null;
        throw Object.assign(new Error(`refused index ${index}`), { code: 'EREFUSED' });
      }
      this.applied.push(command.n);
      return command.n * 10;
    },
    snapshot() { return []; },
    reset() { this.applied = []; },
    restore() {},
  };
  return machine;
}

// A one-node cluster on the file persistence with `machine`; `batches` records the first index
// and length of every applyCommands batch, and `answer(batch, cb, apply)` (when set) replaces
// the next call of more than one command.
async function oneNode(t, machine) {
  const persistence = createFilePersistence({ dir: tmpDir(), stateMachine: machine });
  const batches = [];
  const inner = persistence.applyCommands.bind(persistence);
  const plugin = { batches, answer: null };
  persistence.applyCommands = (nodeId, batch, cb) => {
    batches.push({ first: batch[0].index, length: batch.length });
    const answer = batch.length > 1 ? plugin.answer : null;
    if (answer === null) {
      inner(nodeId, batch, cb);
      return;
    }
    plugin.answer = null;
    answer(batch, cb, inner.bind(null, nodeId));
  };
  const node = Node({ id: 'solo', transport: new MemoryNetwork(), persistence, commandTimeout: 5000 });
  const reports = [];
  node.on('error', (e) => reports.push(e));
  node.on('warning', (e) => reports.push(e));
  node.listen('solo');
  t.after(async () => {
    await new Promise((resolve) => node.stop(() => resolve()));
    await persistence.close();
  });
  await waitForState(node, 'leader', { timeout: 10000 });
  // one command alone first, so that the ones the test sends together form a batch of their own
  assert.equal(await node.command({ n: 0 }), 0);
  return { node, plugin, reports };
}

// `count` commands sent together: they commit together and go to the state machine as one batch.
async function together(node, count) {
  const ns = Array.from({ length: count }, (_, i) => i + 1);
  const results = await Promise.all(ns.map((n) => node.command({ n })));
  return { ns, results };
}

function assertReported(reports, code) {
  assert.ok(reports.some((e) => e.code === code), `${code} reported: ${reports.map((e) => `${e.code} ${e.message}`)}`);
}

test('a state machine failing partway through a batch: the commands before it keep their results', async (t) => {
  const machine = tensMachine();
  const { node, plugin, reports } = await oneNode(t, machine);
  // throw at the third command of the next batch, once
  machine.failOnce((index) => index === plugin.batches[plugin.batches.length - 1].first + 2);
  const { ns, results } = await together(node, 8);
  assert.equal(machine.fail, null, `a batch reached the failing command: ${JSON.stringify(plugin.batches)}`);
  assert.deepEqual(results, ns.map((n) => n * 10), 'every command resolves with its own result');
  assert.deepEqual(machine.applied, [0, ...ns], 'each command applied once, in order');
  assertReported(reports, 'EREFUSED');
});

test('an applyCommands answer with fewer results than commands is EBADRESULT: the rest is retried', async (t) => {
  const machine = tensMachine();
  const { node, plugin, reports } = await oneNode(t, machine);
  // the next batch: only its first command is applied, and its one result answered
  plugin.answer = (batch, cb, apply) => apply(batch.slice(0, 1), cb);
  const { ns, results } = await together(node, 8);
  assert.equal(plugin.answer, null, `a batch was cut short: ${JSON.stringify(plugin.batches)}`);
  assert.deepEqual(results, ns.map((n) => n * 10), 'every command resolves with its own result');
  assert.deepEqual(machine.applied, [0, ...ns], 'no acknowledged command is lost, none applied twice');
  assertReported(reports, 'EBADRESULT');
});

for (const [what, answer] of [['no results', undefined], ['an object', { 0: 1 }], ['too many results', 'long']]) {
  test(`an applyCommands answer with ${what} is EBADRESULT: the batch is retried`, async (t) => {
    const machine = tensMachine();
    const { node, plugin, reports } = await oneNode(t, machine);
    // the next batch is not applied at all, and answered without its results
    plugin.answer = (batch, cb) => setImmediate(cb, null, answer === 'long' ? [...batch, 1].map(() => 1) : answer);
    const { ns, results } = await together(node, 8);
    assert.equal(plugin.answer, null, `a batch was answered so: ${JSON.stringify(plugin.batches)}`);
    assert.deepEqual(results, ns.map((n) => n * 10), 'every command resolves with its own result');
    assert.deepEqual(machine.applied, [0, ...ns], 'every command applied once');
    assertReported(reports, 'EBADRESULT');
  });
}
