'use strict';

// Node ids as TCP addresses: `tcp://host:port` (also `tcp+msgpack://host:port`, `tcp://[::1]:port`).

const { makeError } = require('../../errors');

/** { host, port } of a node id, or an EINVALIDADDRESS error thrown. */
function parseAddress(id) {
  if (typeof id !== 'string') throw makeError(`node id must be a string like tcp://host:port, got ${typeof id}`, 'EINVALIDADDRESS');
  let url;
  try {
    url = new URL(id);
  } catch (_) {
    throw makeError(`node id ${JSON.stringify(id)} is not an address like tcp://host:port`, 'EINVALIDADDRESS');
  }
  if (url.protocol !== 'tcp:' && url.protocol !== 'tcp+msgpack:') {
    throw makeError(`node id ${JSON.stringify(id)}: expected the tcp:// scheme`, 'EINVALIDADDRESS');
  }
  let host = url.hostname;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  const port = Number(url.port);
  if (!host || !url.port || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw makeError(`node id ${JSON.stringify(id)}: expected tcp://host:port`, 'EINVALIDADDRESS');
  }
  return { host, port };
}

/**
 * `host:port` of an address, so that `tcp://127.0.0.1:1` and `tcp+msgpack://127.0.0.1:1` name
 * the same place; null for what is not an address.
 */
function addressKey(id) {
  try {
    const { host, port } = parseAddress(id);
    return `${host.toLowerCase()}:${port}`;
  } catch (_) {
    return null;
  }
}

module.exports = { parseAddress, addressKey };
