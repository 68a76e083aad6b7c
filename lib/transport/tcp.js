'use strict';

// A TCP transport plugin for skiff-rs (the skiff-algorithm transport contract).
//
//   const createTcpTransport = require('skiff-rs/lib/transport/tcp');
//   const transport = createTcpTransport({ secret: process.env.SKIFF_SECRET, cluster: 'prod' });
//   Node({ id: 'tcp://127.0.0.1:9001', transport, ... });
//
// Node ids are addresses: `tcp://host:port` (also `tcp+msgpack://host:port`, `tcp://[::1]:port`).
//
// Wire format: every frame is a 4-byte big-endian payload length followed by a msgpack payload of
// plain maps (string keys), arrays, strings, numbers, booleans, nil and binary only: no extension
// types, so nothing in a frame can expand (references, records, bundled strings) or build objects
// other than those. A frame is checked byte by byte before it is decoded, and its shape before it
// is handed on.
//
//   client -> server:  { hello: { id, metadata, cluster, nonce } }          (nonce: 32 random bytes)
//   server -> client:  { welcome: { cluster, nonce, proof } }  or  { refused: { code, message } }
//   client -> server:  { auth: proof }                                      (only with `secret`)
//   then, either direction:
//     request:  { req: <id>, type, args }
//     reply:    { res: <id>, error: { message, code, ... } }  or  { res: <id>, result }
//     ping:     { ping: 1 }   (the dialling side, when it has sent nothing for a while)
//
// With `secret`, each side proves it knows the secret by an HMAC-SHA256 over both nonces, the
// client's id and the cluster id (the secret never goes on the wire; proofs are compared in
// constant time). The server proves first; it hands the connection to `onConnection` and reads
// any other frame only once the client's proof checked out. With `tls`, the connection is mutual
// TLS (node:tls): each side verifies the other's certificate against `ca`. With `cluster`, the
// hello and the welcome carry the cluster id and each side refuses the other's if it differs.
// A frame above the size limits, a malformed one, or a limit exceeded closes that socket.
//
// The parts, under ./tcp/: options.js (defaults and checks), address.js (node ids as addresses),
// frames.js (framing and the byte check), messages.js (the shape of requests and replies),
// handshake.js (hello, welcome, proofs, TLS options), connection.js (one peer connection: ids,
// limits, in-flight requests, timeouts), client.js (dialling and reconnecting), server.js
// (listening and accepting), callbacks.js (calling user code safely).

const { optionError } = require('../errors');
const { DEFAULTS, checkOptions } = require('./tcp/options');
const { parseAddress } = require('./tcp/address');
const { scanMsgpack } = require('./tcp/frames');
const { handshakeProof } = require('./tcp/handshake');
const { ClientConnection } = require('./tcp/client');
const { TcpServer } = require('./tcp/server');

/**
 * createTcpTransport(options?) → { listen(localNodeId, options, onConnection, cb), connect(...) }
 */
function createTcpTransport(options) {
  const opts = Object.freeze(checkOptions(options));
  return {
    name: 'tcp',
    options: opts,
    // Every request carries an id and its reply comes back with it: several may be in flight.
    pipelining: true,
    listen(localNodeId, listenOptions, onConnection, cb) {
      if (typeof listenOptions === 'function' && typeof onConnection !== 'function') {
        cb = onConnection;
        onConnection = listenOptions;
        listenOptions = undefined;
      }
      if (typeof onConnection !== 'function') throw optionError('listen needs an onConnection function', 'EBADARGS');
      return new TcpServer(this, localNodeId, listenOptions, onConnection, cb);
    },
    connect(localNodeId, localMetadata, peerId, peerMetadata) { // eslint-disable-line no-unused-vars
      return new ClientConnection(localNodeId, localMetadata, peerId, opts);
    },
  };
}

createTcpTransport.createTcpTransport = createTcpTransport;
createTcpTransport.parseAddress = parseAddress;
createTcpTransport.scanMsgpack = scanMsgpack;
createTcpTransport.handshakeProof = handshakeProof; // the protocol's HMAC, for raw-socket tests
createTcpTransport.DEFAULTS = DEFAULTS;
module.exports = createTcpTransport;
