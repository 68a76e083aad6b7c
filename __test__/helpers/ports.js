'use strict';

const net = require('node:net');

/** A TCP port on 127.0.0.1 that was free a moment ago. */
async function freePort() {
  const srv = net.createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address();
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

module.exports = { freePort };
