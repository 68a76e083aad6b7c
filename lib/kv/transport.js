'use strict';

// The TCP transport of a store or a client, built from its `transport` option (TCP options, or a
// transport plugin of the user's own) and the security options it takes at the top level.

const createTcpTransport = require('../transport/tcp');
const { SECURITY_OPTIONS } = require('../transport/tcp/options');
const { CODES, makeError } = require('../errors');

/**
 * `transportOption` with `security` (`secret`, `tls`, `cluster`) given to the built-in TCP
 * transport over `defaults`; a plugin object is used as it is (and takes no security options).
 */
function buildTransport(transportOption, security, defaults) {
  const given = SECURITY_OPTIONS.filter((k) => security[k] !== undefined);
  if (transportOption && typeof transportOption.connect === 'function') {
    if (given.length) {
      throw makeError(`options.${given[0]} configures the built-in TCP transport; give it to your own ` +
        'transport instead', CODES.EINVALIDOPTIONS);
    }
    return transportOption;
  }
  const opts = Object.assign({}, defaults, transportOption || {});
  for (const k of given) opts[k] = security[k];
  try {
    return createTcpTransport(opts);
  } catch (e) {
    throw makeError(`transport options: ${e.message}`, CODES.EINVALIDOPTIONS);
  }
}

module.exports = { buildTransport };
