'use strict';

// Leader crash: the leader is stopped without leaving, the others elect a new leader, and no
// command the old leader acknowledged is lost; every survivor ends with the same log, each
// command once.

const test = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, waitUntil, within } = require('./helpers/cluster');

function key(cmd) {
  return JSON.stringify(cmd);
}

for (const size of [3, 5]) {
  test(`${size} nodes: the leader crashes under load, acknowledged commands survive`, async (t) => {
    const c = await startCluster(t, size);
    const old = await c.waitForLeader();
    // the leader's state machine is slow, so it acknowledges late
    c.persistence.delay('applyCommand', 2, old.id);
    const acked = [];
    const failed = [];
    const send = (wave, count) => {
      const list = [];
      for (let i = 0; i < count; i++) {
        const cmd = { wave, i };
        list.push(old.command(cmd).then(() => acked.push(cmd), (err) => failed.push(err)));
      }
      return list;
    };
    await Promise.all(send(1, 100));
    assert.equal(acked.length, 100);
    // second wave: the leader crashes (no leave) as soon as a follower applied one of them, so
    // they are committed but mostly not yet acknowledged
    const followerApplied = new Promise((resolve) => {
      const on = (nodeId, index, cmd) => {
        if (nodeId !== old.id && cmd && cmd.wave === 2) {
          c.persistence.removeListener('applied', on);
          resolve();
        }
      };
      c.persistence.on('applied', on);
    });
    const wave2 = send(2, 100);
    await within(followerApplied, 5000, 'a follower applying the second wave');
    await old.stop();
    await Promise.all(wave2);
    assert.ok(failed.length > 0, 'some commands were in flight when the leader crashed');
    for (const err of failed) {
      assert.ok(['ESTOPPED', 'ETIMEDOUT', 'ENOTLEADER'].includes(err.code), `failure code ${err.code}: ${err.message}`);
    }

    const survivors = c.running();
    assert.equal(survivors.length, size - 1);
    const next = await c.waitForLeader(survivors);
    assert.notEqual(next.id, old.id);
    for (let i = 0; i < 10; i++) await next.command({ after: i });

    await waitUntil(() => {
      const logs = survivors.map((n) => c.commands(n.id).map(key).join('|'));
      return logs.every((l) => l === logs[0]) && c.commands(next.id).length >= acked.length + 10;
    }, 'the survivors to converge');

    const log = c.commands(next.id).map(key);
    assert.equal(new Set(log).size, log.length, 'no command applied twice');
    for (const cmd of acked) assert.ok(log.includes(key(cmd)), `acknowledged ${key(cmd)} kept`);
    assert.deepEqual(log.slice(-10), [...Array(10).keys()].map((i) => key({ after: i })));
    // the old leader's applied commands are a prefix of the survivors' log
    const oldLog = c.commands(old.id).map(key);
    assert.deepEqual(log.slice(0, oldLog.length), oldLog);
  });
}
