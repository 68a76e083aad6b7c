'use strict';

// The shape of a decoded frame once the handshake is over: a request, a reply or a ping, checked
// before any of it is used or stringified.
//
//   request:  { req: <id>, type, args }
//   reply:    { res: <id>, error: { message, code, ... } }  or  { res: <id>, result }
//   ping:     { ping: 1 }   (the dialling side, when it has sent nothing for a while)

const { badFrame } = require('./frames');

const MAX_TYPE_LENGTH = 256; // characters of a request type
const MAX_ERROR_FIELDS = 32; // fields of an error carried in a reply

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

function onlyKeys(msg, allowed) {
  for (const key of Object.keys(msg)) {
    if (!allowed.includes(key)) throw badFrame(`unexpected field ${JSON.stringify(key.slice(0, 64))}`);
  }
}

const REQUEST_KEYS = ['req', 'type', 'args'];
const REPLY_KEYS = ['res', 'result', 'error'];

// The shape of a frame after the handshake, checked before any of it is used or stringified.
// Returns 'req', 'res' or 'ping'.
function checkMessage(msg) {
  if (!isPlainObject(msg)) throw badFrame('not a map');
  if (msg.req !== undefined) {
    onlyKeys(msg, REQUEST_KEYS);
    if (!Number.isSafeInteger(msg.req) || msg.req < 0) throw badFrame('request id');
    if (typeof msg.type !== 'string' || msg.type.length > MAX_TYPE_LENGTH) throw badFrame('request type');
    return 'req';
  }
  if (msg.res !== undefined) {
    onlyKeys(msg, REPLY_KEYS);
    if (!Number.isSafeInteger(msg.res) || msg.res < 0) throw badFrame('reply id');
    const e = msg.error;
    if (e !== undefined && e !== null) {
      if (!isPlainObject(e)) throw badFrame('reply error');
      const keys = Object.keys(e);
      if (keys.length > MAX_ERROR_FIELDS) throw badFrame('reply error has too many fields');
      for (const k of keys) {
        const v = e[k];
        if (v !== null && typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
          throw badFrame('reply error fields must be scalars');
        }
      }
    }
    return 'res';
  }
  if (msg.ping !== undefined) {
    onlyKeys(msg, ['ping']);
    return 'ping';
  }
  throw badFrame('neither a request nor a reply');
}

module.exports = { checkMessage, isPlainObject, MAX_ERROR_FIELDS };
