'use strict';

// The parent's side of demo/node-process.js: start member processes and talk to them over IPC.
// Used by demo/run.js and __test__/netns.test.js.

const path = require('node:path');
const { spawn } = require('node:child_process');

const NODE_PROCESS = path.join(__dirname, 'node-process.js');

class Member {
  /**
   * @param {string} id        the member's address (node id)
   * @param {string[]} [prefix] command run before node, e.g. ['ip', 'netns', 'exec', 'ns1']
   * @param {string[]} args    arguments of node-process.js
   * @param {string[]} [nodeArgs] options of node itself, e.g. ['--cpu-prof'] (bench/deployed.js)
   * @param {object} [env]     the member's environment [this process's]
   */
  constructor(id, args, { prefix = [], stdio = 'inherit', nodeArgs = [], env = process.env } = {}) {
    this.id = id;
    this.status = null;
    this.exited = false;
    this.exitCode = null;
    this._seq = 0;
    this._pending = new Map();
    this._listeners = new Set();
    const argv = [...prefix, process.execPath, ...nodeArgs, NODE_PROCESS, ...args];
    this.proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', stdio, stdio, 'ipc'], env });
    this.pid = this.proc.pid;
    this.exitedP = new Promise((resolve) => {
      this.proc.once('exit', (code, signal) => {
        this.exited = true;
        this.exitCode = code;
        this.exitSignal = signal;
        const err = new Error(`member ${id} exited (${signal || `code ${code}`})`);
        err.code = 'EEXITED';
        for (const p of this._pending.values()) p.reject(err);
        this._pending.clear();
        resolve({ code, signal });
      });
    });
    this.proc.on('error', () => { /* exit follows */ });
    this.proc.on('message', (msg) => this._onMessage(msg));
  }

  _onMessage(msg) {
    if (!msg || typeof msg !== 'object') return;
    if (msg.status) this.status = msg.status;
    if (msg.req !== undefined) {
      const p = this._pending.get(msg.req);
      if (!p) return;
      this._pending.delete(msg.req);
      clearTimeout(p.timer);
      if (msg.ok) p.resolve(msg.isUndefined ? undefined : msg.result);
      else p.reject(Object.assign(new Error(msg.error.message), msg.error));
      return;
    }
    for (const fn of this._listeners) fn(msg);
  }

  /** Waits for an event message matching `filter`. */
  waitEvent(filter, timeout = 10000, what = 'an event') {
    return new Promise((resolve, reject) => {
      const done = (fn, v) => { clearTimeout(timer); this._listeners.delete(on); fn(v); };
      const timer = setTimeout(() => done(reject, new Error(`${this.id}: timed out waiting for ${what}`)), timeout);
      const on = (msg) => {
        if (msg.event === 'failed') done(reject, Object.assign(new Error(`${this.id} failed: ${msg.error.message}`), msg.error));
        else if (filter(msg)) done(resolve, msg);
      };
      this._listeners.add(on);
      this.exitedP.then(() => done(reject, new Error(`${this.id} exited while waiting for ${what}`)));
    });
  }

  /** Sends a command; resolves with its result, rejects with the member's error (code, leader). */
  request(cmd, args = {}, timeout = 10000) {
    if (this.exited || !this.proc.connected) {
      const err = new Error(`member ${this.id} is not running`);
      err.code = 'EEXITED';
      return Promise.reject(err);
    }
    const req = ++this._seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(req);
        const err = new Error(`${this.id}: ${cmd} got no answer within ${timeout} ms`);
        err.code = 'ETIMEDOUT';
        reject(err);
      }, timeout);
      this._pending.set(req, { resolve, reject, timer });
      this.proc.send(Object.assign({}, args, { req, cmd }), (err) => {
        if (err && this._pending.has(req)) {
          this._pending.delete(req);
          clearTimeout(timer);
          reject(err);
        }
      });
    });
  }

  kill(signal = 'SIGKILL') {
    if (!this.exited) {
      try { this.proc.kill(signal); } catch (_) { /* gone */ }
    }
    return this.exitedP;
  }

  /** Asks the member to stop; kills it if it has not exited within `timeout` ms. */
  async stop(timeout = 5000) {
    if (this.exited) return this.exitedP;
    await this.request('stop', {}, timeout).catch(() => {});
    const t = setTimeout(() => this.kill(), timeout);
    await this.exitedP;
    clearTimeout(t);
    return this.exitedP;
  }
}

/**
 * Polls `members` (the running ones) until exactly one says it leads and every other one follows
 * it in the same term. Resolves with { leader: Member, term }.
 */
async function waitForLeader(members, timeout = 10000) {
  const deadline = Date.now() + timeout;
  let last = [];
  for (;;) {
    const running = members.filter((m) => !m.exited);
    last = await Promise.all(running.map((m) => m.request('status', {}, 2000).catch((e) => ({ error: e.message }))));
    const leaders = last.filter((s) => s.state === 'leader');
    if (leaders.length === 1) {
      const l = leaders[0];
      if (last.every((s) => s === l || (s.state === 'follower' && s.leader === l.id && s.term === l.term))) {
        return { leader: running.find((m) => m.id === l.id), term: l.term };
      }
    }
    if (Date.now() > deadline) {
      throw new Error(`no agreed leader within ${timeout} ms: ${JSON.stringify(last)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

module.exports = { Member, waitForLeader, NODE_PROCESS };
