'use strict';

// The error code table: every code the engine reports (crates/skiff-driver/src/code.rs, exported by the
// binding), lib/errors.js's CODES and index.d.ts's ErrorCode union must agree, and no source of
// the engine or the wrapper may spell a code that is not in the table.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const Node = require('..');
const binding = require('../binding.js');
const { CODES } = require('../lib/errors');

const root = path.join(__dirname, '..');

/** Every file below `dir` (relative to the package root) whose name ends with `ext`. */
function sources(dir, ext) {
  const full = path.join(root, dir);
  if (!fs.existsSync(full)) return [];
  if (fs.statSync(full).isFile()) return [dir];
  return fs.readdirSync(full, { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return sources(rel, ext);
    return e.name.endsWith(ext) ? [rel] : [];
  });
}

/** `{ code → [files] }` for each quoted code-like string (`'EFOO'`, `"EFOO"`) in the files. */
function spelled(files) {
  const found = new Map();
  for (const file of files) {
    const text = fs.readFileSync(path.join(root, file), 'utf8');
    for (const m of text.matchAll(/(["'])(E[A-Z]{3,})\1/g)) {
      if (!found.has(m[2])) found.set(m[2], new Set());
      found.get(m[2]).add(file);
    }
  }
  return found;
}

test('CODES maps each code to itself and is what Node.codes exports', () => {
  for (const [key, value] of Object.entries(CODES)) assert.equal(value, key);
  assert.deepEqual(Node.codes, CODES);
});

test('every code the engine reports is in lib/errors.js', () => {
  const engine = binding.errorCodes();
  assert.ok(engine.length > 10, `the binding lists the engine's codes (${engine.length})`);
  const missing = engine.filter((code) => !(code in CODES));
  assert.deepEqual(missing, [], 'engine codes missing from lib/errors.js CODES');
});

test('no Rust source spells a code outside crates/skiff-driver/src/code.rs', () => {
  const files = [...sources('src', '.rs'), ...sources('crates/skiff-core/src', '.rs'), ...sources('crates/skiff-driver/src', '.rs')]
    .filter((f) => f !== path.join('crates', 'skiff-driver', 'src', 'code.rs'));
  assert.ok(files.length > 5, 'found the Rust sources');
  const stray = [...spelled(files)].map(([code, where]) => `${code} in ${[...where].join(', ')}`);
  assert.deepEqual(stray, [], 'use driver::code::X, so the table stays complete');
});

test('every code the wrapper spells is in lib/errors.js', () => {
  // The wrapper: everything in lib/ except the plugins (transport/, persistence/, the in-memory
  // memory/) and the KV store and client (kv.js, kv/), whose own codes pass through unchanged
  // like any plugin's.
  const files = ['index.js', ...sources('lib', '.js')]
    .filter((f) => !/^lib[\\/](transport|persistence|memory|kv)[\\/]/.test(f) && f !== path.join('lib', 'kv.js'));
  const unknown = [...spelled(files)].filter(([code]) => !(code in CODES))
    .map(([code, where]) => `${code} in ${[...where].join(', ')}`);
  assert.deepEqual(unknown, []);
});

test("index.d.ts's ErrorCode union lists exactly CODES", () => {
  const dts = fs.readFileSync(path.join(root, 'index.d.ts'), 'utf8');
  const union = /type ErrorCode =([^;]*);/.exec(dts);
  assert.ok(union, 'index.d.ts declares ErrorCode');
  const listed = [...union[1].matchAll(/'(E[A-Z]+)'/g)].map((m) => m[1]);
  assert.equal(new Set(listed).size, listed.length, 'no code listed twice');
  assert.deepEqual([...listed].sort(), Object.keys(CODES).sort());
});

test("the README's Errors section names every code", () => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const start = readme.indexOf('### Errors');
  assert.ok(start >= 0, 'README has an Errors section');
  const section = readme.slice(start, readme.indexOf('\n### ', start + 1));
  const unnamed = Object.keys(CODES).filter((code) => !section.includes(`\`${code}\``));
  assert.deepEqual(unnamed, []);
});
