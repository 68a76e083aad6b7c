'use strict';

// Test certificates, made at test time with the openssl command line (no private key is kept in
// the repository): a CA, a certificate it signs for 127.0.0.1 (used by every member, as server and
// as client), and a look-alike signed by another CA. Returns null when openssl is not installed.

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

function openssl(dir, args) {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir, name) {
  openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '1', '-subj', `/CN=${name}`]);
}

function makeLeaf(dir, ca, name) {
  fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`,
    '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', '-extfile', 'ext.cnf']);
  return {
    key: fs.readFileSync(path.join(dir, `${name}.key`), 'utf8'),
    cert: fs.readFileSync(path.join(dir, `${name}.crt`), 'utf8'),
    ca: fs.readFileSync(path.join(dir, `${ca}.crt`), 'utf8'),
  };
}

/** { member: { key, cert, ca }, rogue: { key, cert, ca } } or null without openssl. */
function makeTestCerts() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-certs-'));
  try {
    makeCa(dir, 'cluster-ca');
    makeCa(dir, 'rogue-ca');
    const member = makeLeaf(dir, 'cluster-ca', 'member');
    const rogue = makeLeaf(dir, 'rogue-ca', 'rogue');
    return { member, rogue };
  } catch (e) {
    if (e.code === 'ENOENT') return null;
    throw e;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { makeTestCerts };
