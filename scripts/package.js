#!/usr/bin/env node
// `npm run package`: a local rehearsal of a release for this machine's platform.
//
//   node scripts/package.js [--out <folder>] [--prebuilt <skiff.<platform>.node>]
//
// Builds this platform's addon (release profile; with --prebuilt, takes that file and the existing
// binding.js instead, as the release workflow does with the addon its build job made), then writes into one folder the two tarballs a
// user's install combines: the main package (skiff-rs-<version>.tgz: JS, types, binding.js and the
// sources of the build-from-source fallback, no addon) and this platform's package
// (skiff-rs-<platform>-<version>.tgz: the addon alone, from npm/<platform>/package.json). It prints
// the two paths, one a line. Installing both into a project works without cargo and with install
// scripts ignored (__test__/package.test.js does exactly that); the release workflow publishes the
// same packages for every target.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { PACKAGE_NAME, platformTag, localBinaryName } = require('../lib/platform');

const root = path.resolve(__dirname, '..');

function fail(message) {
  console.error(`skiff-rs: ${message}`);
  process.exit(1);
}

function run(cmd, args, options) {
  const res = spawnSync(cmd, args, { stdio: 'inherit', ...options });
  if (res.error) throw res.error;
  if (res.status !== 0) fail(`${path.basename(cmd)} ${args.join(' ')} failed (exit ${res.status})`);
  return res;
}

// npm runs this script with npm_execpath set to its own CLI; run that one (no shell needed).
function npmPack(dir, out) {
  const npmCli = process.env.npm_execpath;
  const [cmd, pre] = npmCli && /\.[cm]?js$/.test(npmCli) ? [process.execPath, [npmCli]] : ['npm', []];
  const res = run(cmd, [...pre, 'pack', '--json', '--pack-destination', out], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    shell: cmd === 'npm' && process.platform === 'win32',
  });
  const [info] = JSON.parse(res.stdout.slice(res.stdout.indexOf('[')));
  return path.join(out, info.filename);
}

function main() {
  const argv = process.argv.slice(2);
  let out = path.join(root, 'packages');
  let prebuilt = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && i + 1 < argv.length) out = path.resolve(argv[++i]);
    else if (argv[i] === '--prebuilt' && i + 1 < argv.length) prebuilt = path.resolve(argv[++i]);
    else fail(`unknown argument ${argv[i]} (usage: npm run package -- [--out <folder>] [--prebuilt <file.node>])`);
  }

  const tag = platformTag();
  const template = path.join(root, 'npm', tag);
  if (!fs.existsSync(path.join(template, 'package.json'))) {
    fail(`${tag} is not one of the prebuilt targets (no npm/${tag}/package.json)`);
  }

  let binary = path.join(root, localBinaryName());
  if (prebuilt) {
    if (path.basename(prebuilt) !== localBinaryName()) fail(`--prebuilt must be a ${localBinaryName()} for this platform`);
    if (!fs.existsSync(path.join(root, 'binding.js'))) fail('--prebuilt needs the generated binding.js next to package.json');
    binary = prebuilt;
  } else {
    run(process.execPath, [path.join(__dirname, 'build.js'), '--release'], { cwd: root });
  }
  if (!fs.existsSync(binary)) fail(`there is no ${binary}`);

  fs.mkdirSync(out, { recursive: true });
  // The platform package is packed from a staging copy, so npm/ keeps only what is committed.
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), `${PACKAGE_NAME}-${tag}-`));
  try {
    for (const file of fs.readdirSync(template)) fs.copyFileSync(path.join(template, file), path.join(stage, file));
    fs.copyFileSync(binary, path.join(stage, path.basename(binary)));
    const platformTarball = npmPack(stage, out);
    const mainTarball = npmPack(root, out);
    console.log(mainTarball);
    console.log(platformTarball);
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

main();
