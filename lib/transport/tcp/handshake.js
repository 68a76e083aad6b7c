'use strict';

// The handshake that opens every connection, both sides of it: who the client is, which cluster
// each side belongs to, and (with `secret`) that each side knows the shared secret; plus the
// mutual TLS options that wrap it.
//
//   client -> server:  { hello: { id, metadata, cluster, nonce } }          (nonce: 32 random bytes)
//   server -> client:  { welcome: { cluster, nonce, proof } }  or  { refused: { code, message } }
//   client -> server:  { auth: proof }                                      (only with `secret`)
//
// With `secret`, each side proves it knows the secret by an HMAC-SHA256 over both nonces, the
// client's id and the cluster id (the secret never goes on the wire; proofs are compared in
// constant time). The server proves first, and reads any other frame only once the client's proof
// checked out. With `cluster`, the hello and the welcome carry the cluster id and each side
// refuses the other's if it differs. With `tls`, each side verifies the other's certificate
// against `ca`.

const net = require('node:net');
const tls = require('node:tls');
const crypto = require('node:crypto');
const { makeError } = require('../../errors');
const { badFrame } = require('./frames');
const { isPlainObject } = require('./messages');

const NONCE_BYTES = 32;
const PROTOCOL_LABEL = 'skiff-tcp/2';

function newNonce() {
  return crypto.randomBytes(NONCE_BYTES);
}

function asBuffer(v, length) {
  if (!ArrayBuffer.isView(v) || v.byteLength !== length) return null;
  return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

// HMAC-SHA256 of everything both sides agreed on in this handshake, for one role.
function handshakeProof(secret, role, clientId, cluster, clientNonce, serverNonce) {
  return crypto.createHmac('sha256', secret)
    .update(JSON.stringify([PROTOCOL_LABEL, role, clientId, cluster === null ? '' : cluster,
      clientNonce.toString('hex'), serverNonce.toString('hex')]))
    .digest();
}

function sameProof(got, expected) {
  const buf = asBuffer(got, expected.length);
  return buf !== null && crypto.timingSafeEqual(buf, expected);
}

// A cluster id from the wire: a string, or null for none.
function clusterOf(v) {
  return typeof v === 'string' ? v : null;
}

// ------------------------------------------------------------------ the dialling side

function tlsConnectOptions(opts, host, port) {
  return {
    host,
    port,
    key: opts.tls.key,
    cert: opts.tls.cert,
    ca: opts.tls.ca,
    servername: net.isIP(host) ? undefined : host,
    checkServerIdentity: opts.tls.checkServerIdentity || tls.checkServerIdentity,
  };
}

function helloMessage(opts, localId, metadata, nonce) {
  return { hello: { id: localId, metadata, cluster: opts.cluster, nonce } };
}

/**
 * Checks the server's answer to our hello (`peerId` is who we dialled). Returns the message to
 * send back, `{ auth: proof }`, or null when there is none; throws when the server refused us,
 * is in another cluster, or does not prove it knows the secret (or wants one we lack).
 */
function acceptWelcome(msg, opts, peerId, localId, nonce) {
  if (!isPlainObject(msg)) throw badFrame('expected a welcome');
  if (msg.refused !== undefined) {
    const r = isPlainObject(msg.refused) ? msg.refused : {};
    throw makeError(`${peerId} refused the connection: ${typeof r.message === 'string' ? r.message : 'no reason'}`,
      typeof r.code === 'string' ? r.code : 'EREFUSED');
  }
  const w = msg.welcome;
  if (!isPlainObject(w)) throw badFrame('expected a welcome');
  const serverCluster = clusterOf(w.cluster);
  if (opts.cluster !== null && serverCluster !== opts.cluster) {
    throw makeError(`${peerId} belongs to cluster ${JSON.stringify(serverCluster)}, not ` +
      `${JSON.stringify(opts.cluster)}`, 'ECLUSTER');
  }
  const serverNonce = asBuffer(w.nonce, NONCE_BYTES);
  if (!serverNonce) throw badFrame('welcome nonce');
  if (!opts.secret) {
    if (w.proof !== undefined && w.proof !== null) {
      throw makeError(`${peerId} requires a shared secret (the transport's \`secret\` option)`, 'EAUTH');
    }
    return null;
  }
  const expected = handshakeProof(opts.secret, 'server', localId, opts.cluster, nonce, serverNonce);
  if (!sameProof(w.proof, expected)) throw makeError(`${peerId} did not prove it knows the secret`, 'EAUTH');
  return { auth: handshakeProof(opts.secret, 'client', localId, opts.cluster, nonce, serverNonce) };
}

// ------------------------------------------------------------------ the listening side

function tlsServerOptions(opts) {
  return {
    key: opts.tls.key,
    cert: opts.tls.cert,
    ca: opts.tls.ca,
    requestCert: true,
    rejectUnauthorized: true,
    handshakeTimeout: opts.handshakeTimeout,
  };
}

/**
 * The client's hello as { id, metadata, nonce }; throws an error whose `code` and `message` are
 * the refusal to send (EBADFRAME for anything but a hello, ECLUSTER for another cluster).
 */
function readHello(msg, opts) {
  const h = isPlainObject(msg) ? msg.hello : undefined;
  const nonce = isPlainObject(h) ? asBuffer(h.nonce, NONCE_BYTES) : null;
  if (!isPlainObject(h) || typeof h.id !== 'string' || h.id === '' || !nonce ||
      (h.cluster !== undefined && h.cluster !== null && typeof h.cluster !== 'string')) {
    throw makeError('expected a hello frame', 'EBADFRAME');
  }
  const cluster = clusterOf(h.cluster);
  if (opts.cluster !== null && cluster !== opts.cluster) {
    throw makeError(`this node belongs to cluster ${JSON.stringify(opts.cluster)}, not ${JSON.stringify(cluster)}`,
      'ECLUSTER');
  }
  return { id: h.id, metadata: h.metadata === undefined ? null : h.metadata, nonce };
}

function welcomeMessage(opts, hello, serverNonce) {
  const proof = opts.secret
    ? handshakeProof(opts.secret, 'server', hello.id, opts.cluster, hello.nonce, serverNonce) : null;
  return { welcome: { cluster: opts.cluster, nonce: serverNonce, proof } };
}

/** True when `msg` is the client's `{ auth: proof }` for this hello and welcome. */
function checkAuth(msg, opts, hello, serverNonce) {
  const expected = handshakeProof(opts.secret, 'client', hello.id, opts.cluster, hello.nonce, serverNonce);
  return isPlainObject(msg) && sameProof(msg.auth, expected);
}

module.exports = {
  newNonce,
  handshakeProof,
  tlsConnectOptions,
  helloMessage,
  acceptWelcome,
  tlsServerOptions,
  readHello,
  welcomeMessage,
  checkAuth,
};
