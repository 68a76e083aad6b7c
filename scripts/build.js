#!/usr/bin/env node
// Builds the native addon from source.
//
//   node scripts/build.js [--release] [extra napi build flags...]
//
// Output (next to package.json): skiff.<platform>.node (the name binding.js looks for, see
// lib/platform.js).
//
// In a checkout (`npm run build`, or `npm install` of the repository) the napi CLI, a
// devDependency, builds it and also regenerates binding.js and binding.d.ts from the Rust code.
// Installed as a dependency (the source fallback of scripts/install.js) devDependencies are absent
// and the published binding.js is already there, so a plain `cargo build` of the shipped sources
// (with the shipped Cargo.lock) makes the same library without downloading the CLI; only
// --release is understood then.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { localBinaryName } = require('../lib/platform');

const root = path.resolve(__dirname, '..');
// Installed as a dependency (inside some node_modules) rather than a checkout of the repository.
const isDependency = root.split(path.sep).includes('node_modules');

function hasCargo() {
  const res = spawnSync('cargo', ['--version'], { stdio: 'ignore' });
  return !res.error && res.status === 0;
}

const NO_CLI = 'skiff-rs: @napi-rs/cli (a devDependency) is missing; run `npm install` first';

/** The napi CLI's entry script, or null when it is not installed (as a dependency it is not). */
function napiCli() {
  let pkgPath;
  try {
    pkgPath = require.resolve('@napi-rs/cli/package.json', { paths: [root] });
  } catch (_) {
    return null;
  }
  const pkg = JSON.parse(fs.readFileSync(pkgPath, 'utf8'));
  return path.join(path.dirname(pkgPath), pkg.bin.napi);
}

function buildWithNapi(cli, args) {
  const res = spawnSync(process.execPath,
    [cli, 'build', '--platform', '--js', 'binding.js', '--dts', 'binding.d.ts', ...args],
    { cwd: root, stdio: 'inherit' });
  if (res.error) throw res.error;
  return res.status === null ? 1 : res.status;
}

// cargo prints one JSON message per line; the cdylib's `compiler-artifact` names the built library
// (libskiff_rs.so, libskiff_rs.dylib or skiff_rs.dll, in whatever target dir cargo uses).
function buildWithCargo(release) {
  const args = ['build', '--locked', '--lib', '--message-format=json-render-diagnostics'];
  if (release) args.push('--release');
  const res = spawnSync('cargo', args, {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 * 1024 * 1024,
    encoding: 'utf8',
  });
  if (res.error) throw res.error;
  if (res.status !== 0) return res.status === null ? 1 : res.status;
  let library = null;
  for (const line of res.stdout.split('\n')) {
    if (!line.startsWith('{')) continue;
    let msg;
    try { msg = JSON.parse(line); } catch (_) { continue; }
    if (msg.reason === 'compiler-artifact' && msg.target && msg.target.kind.includes('cdylib')) {
      library = msg.filenames.find((f) => /\.(so|dylib|dll)$/.test(f)) || library;
    }
  }
  if (!library) {
    console.error('skiff-rs: cargo reported no cdylib for the skiff-rs crate');
    return 1;
  }
  fs.copyFileSync(library, path.join(root, localBinaryName()));
  return 0;
}

function main() {
  const args = process.argv.slice(2);
  if (!hasCargo()) {
    console.error('skiff-rs: `cargo` was not found on PATH. Building the native addon from source needs a\n' +
      'Rust toolchain (https://rustup.rs).');
    return 1;
  }
  const started = Date.now();
  let status;
  if (!isDependency) {
    const cli = napiCli();
    if (!cli) {
      console.error(NO_CLI);
      return 1;
    }
    status = buildWithNapi(cli, args);
  } else {
    const unknown = args.filter((a) => a !== '--release');
    if (unknown.length) {
      console.error(`skiff-rs: without @napi-rs/cli only --release is understood, not ${unknown.join(' ')}`);
      return 1;
    }
    status = buildWithCargo(args.includes('--release'));
  }
  if (status !== 0) return status;
  console.log(`skiff-rs: native build done in ${((Date.now() - started) / 1000).toFixed(1)} s`);

  // As a dependency the cargo target dir is only a build cache of several hundred MB; drop it
  // unless asked to keep it.
  if (isDependency && !process.env.SKIFF_KEEP_TARGET) {
    fs.rmSync(path.join(root, 'target'), { recursive: true, force: true });
  }
  return 0;
}

if (require.main === module) process.exitCode = main();

module.exports = { hasCargo, napiCli, NO_CLI };
