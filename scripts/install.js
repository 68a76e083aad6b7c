#!/usr/bin/env node
// The package's `install` script: makes sure a native addon is there, compiling only as a fallback.
//
// 1. An addon that loads is already present (the platform package skiff-rs-<platform>, installed
//    as an optional dependency, or a skiff.<platform>.node built earlier): nothing is compiled.
// 2. Else, when cargo is on PATH, the addon is built from the shipped sources (scripts/build.js).
//    SKIFF_BUILD_FROM_SOURCE=1 or `npm install --build-from-source` (npm_config_build_from_source)
//    forces this step even when a prebuilt addon is present, and then a failure fails the install.
// 3. Else one paragraph says what is missing and the script exits 0: failing here would roll back
//    the whole application's install, while `Node()` reports the missing addon itself (with the
//    same advice) and everything that does not need it keeps working.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { hasCargo } = require('./build');
const { PREBUILT, platformTag, describePlatform, localBinaryName } = require('../lib/platform');

const root = path.resolve(__dirname, '..');

function asked(value) {
  return typeof value === 'string' && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

/** True when binding.js finds an addon that loads (the same lookup `Node()` does). */
function prebuiltLoads() {
  try {
    return typeof require(path.join(root, 'binding.js')).RaftNode === 'function';
  } catch (_) {
    return false;
  }
}

/**
 * In a git checkout (a contributor's clone, CI) only an addon built from this tree counts: a
 * platform package fetched from the registry is not what the tests must run against, and an
 * unpublished name could be anyone's until the first release reserves it.
 */
function isCheckout() {
  return fs.existsSync(path.join(root, '.git')) && !root.split(path.sep).includes('node_modules');
}

function localAddonPresent() {
  return fs.existsSync(path.join(root, localBinaryName()));
}

function build() {
  const res = spawnSync(process.execPath, [path.join(__dirname, 'build.js'), '--release'],
    { cwd: root, stdio: 'inherit' });
  if (res.error) throw res.error;
  return res.status === null ? 1 : res.status;
}

function main() {
  const forced = asked(process.env.SKIFF_BUILD_FROM_SOURCE) || asked(process.env.npm_config_build_from_source);
  const present = isCheckout() ? localAddonPresent() && prebuiltLoads() : prebuiltLoads();
  if (!forced && present) return 0;
  if (forced || hasCargo()) return build();

  const tag = platformTag();
  const reason = PREBUILT.has(tag)
    ? `its prebuilt package skiff-rs-${tag} is not installed (were optional dependencies omitted, ` +
      'or was the lockfile made on another platform?)'
    : `no prebuilt package exists for ${tag}`;
  console.warn(
    `skiff-rs: no native addon for ${describePlatform()}: ${reason}, and \`cargo\` is not on PATH ` +
      'to build one from source. The install goes on, but creating a node will fail with ENOBINDING ' +
      'until an addon is there: reinstall with optional dependencies on this machine, or install a ' +
      'Rust toolchain (https://rustup.rs) and run `npm rebuild skiff-rs`.'
  );
  return 0;
}

process.exitCode = main();
