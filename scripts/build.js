#!/usr/bin/env node
// Builds the native addon from source with the napi CLI (@napi-rs/cli, a runtime dependency so
// that this also works when skiff-rs is installed as a dependency of another package).
//
//   node scripts/build.js [--release] [extra napi build flags...]
//
// Output (next to package.json): skiff.<platform>.node, binding.js, binding.d.ts.
'use strict'

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
const args = process.argv.slice(2)

if (spawnSync('cargo', ['--version'], { stdio: 'ignore' }).status !== 0) {
  console.error(
    'skiff-rs: `cargo` was not found on PATH. skiff-rs builds its native addon from source;\n' +
      'install a Rust toolchain (https://rustup.rs) and run `npm install` again.'
  )
  process.exit(1)
}

const cliPkgPath = require.resolve('@napi-rs/cli/package.json', { paths: [root] })
const cliPkg = JSON.parse(fs.readFileSync(cliPkgPath, 'utf8'))
const cliBin = path.join(path.dirname(cliPkgPath), cliPkg.bin.napi)

const napiArgs = [
  cliBin,
  'build',
  '--platform',
  '--js',
  'binding.js',
  '--dts',
  'binding.d.ts',
  ...args,
]

const started = Date.now()
const res = spawnSync(process.execPath, napiArgs, { cwd: root, stdio: 'inherit' })
if (res.error) throw res.error
if (res.status !== 0) process.exit(res.status ?? 1)
console.log(`skiff-rs: native build done in ${((Date.now() - started) / 1000).toFixed(1)} s`)

// Installed as a dependency (inside some node_modules): the cargo target dir is only a
// build cache of several hundred MB; drop it unless asked to keep it.
const isDependency = root.split(path.sep).includes('node_modules')
if (isDependency && !process.env.SKIFF_KEEP_TARGET) {
  fs.rmSync(path.join(root, 'target'), { recursive: true, force: true })
}
