#!/usr/bin/env node
// The package's `version` script (run by `npm version` after it bumps package.json): gives every
// platform package under npm/ the new version (`napi version`) and pins the optionalDependencies on
// them to exactly that version, so a release never pairs the JS of one version with the addon of
// another. `npm version` then commits package.json and npm/ (the script's caller adds them).
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { napiCli, NO_CLI } = require('./build');

const root = path.resolve(__dirname, '..');
const pkgFile = path.join(root, 'package.json');

const cli = napiCli();
if (!cli) {
  console.error(NO_CLI);
  process.exit(1);
}
const res = spawnSync(process.execPath, [cli, 'version'], { cwd: root, stdio: 'inherit' });
if (res.error) throw res.error;
if (res.status !== 0) process.exit(res.status === null ? 1 : res.status);

const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
for (const name of Object.keys(pkg.optionalDependencies || {})) {
  if (name.startsWith(`${pkg.name}-`)) pkg.optionalDependencies[name] = pkg.version;
}
fs.writeFileSync(pkgFile, `${JSON.stringify(pkg, null, 2)}\n`);
console.log(`skiff-rs: platform packages and their pins are at ${pkg.version}`);
