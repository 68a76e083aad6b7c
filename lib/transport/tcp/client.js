'use strict';

// The dialling side of a peer connection: connects (TCP or mutual TLS), says hello, checks the
// welcome, reconnects with jittered back-off while it is open, and pings when it has been silent
// so the listener's idle timeout does not close it.

const net = require('node:net');
const tls = require('node:tls');
const { makeError } = require('../../errors');
const { emitError } = require('./callbacks');
const { parseAddress } = require('./address');
const { encodeFrame, FrameDecoder, readFrames } = require('./frames');
const { newNonce, tlsConnectOptions, helloMessage, acceptWelcome } = require('./handshake');
const { Connection } = require('./connection');

class ClientConnection extends Connection {
  constructor(localId, localMetadata, peerId, opts) {
    super(opts);
    this.id = peerId;
    this.localId = localId;
    this._metadata = localMetadata === undefined ? null : localMetadata;
    this._address = parseAddress(peerId);
    this._attempt = 0;
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._current = null; // the socket being dialled or in use, until its 'close'
    process.nextTick(() => this._dial());
  }

  _dial() {
    if (this._closed) return;
    this._reconnectTimer = null;
    this.emit('connecting');
    if (this._closed) return;
    const opts = this._opts;
    const { host, port } = this._address;
    const socket = opts.tls ? tls.connect(tlsConnectOptions(opts, host, port)) : net.connect({ host, port });
    this._current = socket;
    socket.setTimeout(opts.connectTimeout, () => {
      socket.destroy(makeError('connect timed out', 'ETIMEDOUT'));
    });
    let reached = false; // TCP connected: failures from here on are worth reporting
    let handshake = null; // timer while waiting for the welcome
    const nonce = newNonce();
    const decoder = new FrameDecoder(opts.maxHelloSize);
    const fail = (err) => {
      if (socket.destroyed) return;
      this._protocolError(socket, err);
    };
    socket.on('connect', () => { reached = true; });
    socket.on('error', (err) => {
      // Before TCP connects, errors just mean reconnecting; after, (TLS) they say why we failed.
      if (reached && !this._closed && this._socket !== socket) emitError(this, err);
    });
    socket.once(opts.tls ? 'secureConnect' : 'connect', () => {
      if (this._closed) {
        socket.destroy();
        return;
      }
      socket.setTimeout(0);
      if (opts.noDelay) socket.setNoDelay(true);
      if (opts.keepAlive) socket.setKeepAlive(true, opts.keepAlive);
      let frame;
      try {
        frame = encodeFrame(helloMessage(opts, this.localId, this._metadata, nonce), opts.maxHelloSize);
      } catch (e) {
        socket.destroy();
        emitError(this, e);
        this.close();
        return;
      }
      this._writeFrame(socket, frame);
      handshake = setTimeout(() => fail(makeError(
        `${this.id} did not complete the handshake within ${opts.handshakeTimeout} ms`, 'EHANDSHAKE')),
      opts.handshakeTimeout);
      handshake.unref();
    });
    let handle = (msg) => {
      const auth = acceptWelcome(msg, opts, this.id, this.localId, nonce);
      if (auth) this._writeFrame(socket, encodeFrame(auth, opts.maxHelloSize));
      clearTimeout(handshake);
      decoder.max = opts.maxFrameSize;
      handle = (m) => this._onMessage(socket, m);
      this._attempt = 0;
      this._up(socket);
      this._startPings();
      this.emit('connected');
    };
    readFrames(socket, decoder, (msg) => handle(msg), fail);
    socket.once('close', () => {
      if (handshake) clearTimeout(handshake);
      if (this._current === socket) this._current = null;
      const wasConnected = this._socket === socket ? this._down() : false;
      if (wasConnected) this._stopPings();
      if (this._closed) {
        this._finishClose();
        return;
      }
      if (wasConnected) this.emit('disconnected');
      this._scheduleReconnect();
    });
  }

  // The listening side closes connections that stay silent for its `idleTimeout`: say something
  // when there is nothing else to say.
  _startPings() {
    this._stopPings();
    this._wrote = false;
    this._pingTimer = setInterval(() => {
      if (!this._connected) return;
      if (!this._wrote) this._writeFrame(this._socket, encodeFrame({ ping: 1 }, this._opts.maxFrameSize));
      this._wrote = false;
    }, Math.max(1, Math.floor(this._opts.idleTimeout / 3)));
    this._pingTimer.unref();
  }

  _stopPings() {
    if (this._pingTimer) clearInterval(this._pingTimer);
    this._pingTimer = null;
  }

  _scheduleReconnect() {
    if (this._closed || this._reconnectTimer) return;
    const base = Math.min(this._opts.maxReconnectDelay,
      this._opts.minReconnectDelay * 2 ** Math.min(this._attempt, 30));
    this._attempt++;
    const delay = base / 2 + Math.random() * base / 2; // jittered in [base/2, base]
    // Referenced on purpose: an open connection wants to reconnect; close() clears it.
    this._reconnectTimer = setTimeout(() => this._dial(), delay);
  }

  close(cb) {
    if (typeof cb === 'function') this._closeCallbacks.push(cb);
    if (this._closed) {
      if (!this._current && this._closeCallbacks.length) this._finishClose();
      return;
    }
    this._stopPings();
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._shutdown();
    if (this._current) this._current.destroy(); // its 'close' finishes
    else process.nextTick(() => this._finishClose());
  }
}

module.exports = { ClientConnection };
