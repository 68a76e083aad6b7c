'use strict';

// The promises the store and the client wait on: a callback-style call, and a pause that does
// not keep the process alive.

function promisifyCb(fn) {
  return new Promise((resolve, reject) => fn((err, result) => (err ? reject(err) : resolve(result))));
}

function sleep(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    if (typeof timer.unref === 'function') timer.unref();
  });
}

module.exports = { promisifyCb, sleep };
