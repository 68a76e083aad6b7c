'use strict';

// An HTTP endpoint for a node's Prometheus metrics (lib/metrics.js): `GET /metrics` answers with
// the registry's text; anything else gets 404 (405 for another method on /metrics). Used by
// `createKvStore({ metrics: { port } })`.

const http = require('http');
const { makeError, CODES } = require('./errors');
const collect = require('./metrics');

// `options` for serveMetrics as given to createKvStore: undefined (no endpoint), or
// `{ port, host?, path?, registry? }`. Throws EINVALIDOPTIONS otherwise.
function checkMetricsOptions(options) {
  if (options === undefined || options === null || options === false) return null;
  const bad = (what) => makeError(`options.metrics${what}`, CODES.EINVALIDOPTIONS);
  if (typeof options !== 'object') throw bad(' must be an object like { port: 9464 }');
  const { port, host = '127.0.0.1', path = '/metrics', registry } = options;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw bad('.port must be a TCP port number (0: any free one)');
  if (typeof host !== 'string' || host === '') throw bad('.host must be a host name or address');
  if (typeof path !== 'string' || !path.startsWith('/')) throw bad('.path must start with /');
  return { port, host, path, registry };
}

// Serves `node`'s metrics as `options` (checked by checkMetricsOptions) say. Resolves with
// `{ registry, port, host, path, close() }` once listening; without a registry in the options
// a new prom-client Registry holds just this node's metrics.
function serveMetrics(node, options) {
  const registry = options.registry || new (collect.loadPromClient().Registry)();
  const collector = collect(node, registry);
  const server = http.createServer((req, res) => {
    const url = (req.url || '').split('?')[0];
    if (url !== options.path) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    registry.metrics().then((text) => {
      res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text);
    }, (err) => {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${err && err.message}\n`);
    });
  });
  return new Promise((resolve, reject) => {
    const failed = (err) => {
      collector.remove();
      reject(err);
    };
    server.once('error', failed);
    server.listen(options.port, options.host, () => {
      server.removeListener('error', failed);
      let closing = null;
      resolve({
        registry,
        host: options.host,
        port: server.address().port,
        path: options.path,
        close() {
          if (!closing) {
            collector.remove();
            closing = new Promise((done) => server.close(() => done()));
            if (typeof server.closeAllConnections === 'function') server.closeAllConnections();
          }
          return closing;
        },
      });
    });
  });
}

module.exports = { serveMetrics, checkMetricsOptions };
