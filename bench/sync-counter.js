'use strict';

// Preloaded (`node --require bench/sync-counter.js`) into the store processes of bench/deployed.js:
// counts the fsync and fdatasync calls the process makes, whichever fs API makes them, without
// touching the code under test, and the time they take as the caller sees it (ms, from the call to
// the callback or the promise settling: the thread-pool hop included). The parent asks over IPC
// with { syncCounter: 'get' } and gets { event: 'syncCounter', fsync, fdatasync, ms, save, saveMs,
// apply, applyMs }: also how many saves (saveLog or saveMeta) and applies (applyCommands or
// applyCommand) the file persistence had and how long each took from the call to its callback
// (what the engine waits for), so the bench can tell where the milliseconds of a put go.

const fs = require('node:fs');

const path = require('node:path');

const counts = { fsync: 0, fdatasync: 0, ms: 0, save: 0, saveMs: 0, apply: 0, applyMs: 0 };

function counted(obj, name, kind) {
  const original = obj[name];
  if (typeof original !== 'function') return;
  obj[name] = function countedSync(...args) {
    counts[kind]++;
    const t0 = process.hrtime.bigint();
    const took = () => { counts.ms += Number(process.hrtime.bigint() - t0) / 1e6; };
    const cb = args[args.length - 1];
    if (typeof cb === 'function') {
      args[args.length - 1] = function timed(...res) { took(); return cb.apply(this, res); };
      return original.apply(this, args);
    }
    const out = original.apply(this, args);
    if (out && typeof out.then === 'function') out.then(took, took);
    else took();
    return out;
  };
}

counted(fs, 'fsync', 'fsync');
counted(fs, 'fsyncSync', 'fsync');
counted(fs, 'fdatasync', 'fdatasync');
counted(fs, 'fdatasyncSync', 'fdatasync');

// FileHandle is not exported: patch its prototype the first time fs.promises.open returns one.
const open = fs.promises.open;
let patched = false;
fs.promises.open = async function openCounted(...args) {
  const fh = await open.apply(this, args);
  if (!patched) {
    patched = true;
    const proto = Object.getPrototypeOf(fh);
    counted(proto, 'sync', 'fsync');
    counted(proto, 'datasync', 'fdatasync');
  }
  return fh;
};

// The file persistence's calls on the commit path, timed from the call to the callback.
const { FilePersistence } = require(path.join(__dirname, '..', 'lib', 'persistence', 'file.js'));
for (const [name, kind] of [['saveMeta', 'save'], ['saveLog', 'save'], ['applyCommand', 'apply'],
  ['applyCommands', 'apply']]) {
  const original = FilePersistence.prototype[name];
  FilePersistence.prototype[name] = function timedCall(...args) {
    const cb = args[args.length - 1];
    const t0 = process.hrtime.bigint();
    counts[kind]++;
    args[args.length - 1] = function timed(...res) {
      counts[`${kind}Ms`] += Number(process.hrtime.bigint() - t0) / 1e6;
      if (typeof cb === 'function') return cb.apply(this, res);
      return undefined;
    };
    return original.apply(this, args);
  };
}

if (typeof process.send === 'function') {
  process.on('message', (msg) => {
    if (msg && msg.syncCounter === 'get' && process.connected) {
      process.send(Object.assign({ event: 'syncCounter' }, counts));
    }
  });
}
