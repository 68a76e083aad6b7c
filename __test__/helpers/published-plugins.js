'use strict';

// The published skiff-algorithm-era plugins under test: skiff-tcp-msgpack 0.8.3 (a devDependency).

const net = require('node:net');
const MsgpackTransport = require('skiff-tcp-msgpack');

/** A TCP port free on 127.0.0.1 right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** `n` node ids (skiff-tcp-msgpack addresses) on free ports. */
async function msgpackIds(n) {
  const ids = [];
  for (let i = 0; i < n; i++) ids.push(`tcp+msgpack://127.0.0.1:${await freePort()}`);
  return ids;
}

/**
 * A skiff-tcp-msgpack transport for one node (it keeps its server on the object, so each node needs
 * its own). Its own `error` events (a client socket error) are pushed onto `errors`.
 */
function msgpackTransport(errors) {
  const tr = new MsgpackTransport();
  tr.on('error', (e) => errors.push(e));
  tr.on('warning', () => {});
  return tr;
}

module.exports = { freePort, msgpackIds, msgpackTransport };
