'use strict';

// The package as users get it. `npm run package` writes the main tarball and this platform's
// tarball; both are installed into a fresh project with install scripts ignored and with a PATH
// on which `cargo` cannot be found, and there:
// - nothing was compiled, and the addon comes from the platform package;
// - the README's CommonJS and ES module examples, copied out of README.md, run as pasted (each is a
//   three-node cluster);
// - an .mjs consumer gets the named exports and the documented deep paths, and a TypeScript
//   consumer compiles with `--module nodenext` (ESM and CommonJS files);
// - the install script decides as documented: addon present → nothing built; no addon and no
//   cargo → one paragraph and exit 0, then Node() throws ENOBINDING; a forced source build
//   without cargo fails;
// - the main tarball holds no tests, no addon, and what the install needs.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { platformTag, localBinaryName } = require('../lib/platform');

const ROOT = path.join(__dirname, '..');
const README = path.join(ROOT, 'README.md');
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const TAG = platformTag();
const PLATFORM_PACKAGE = `skiff-rs-${TAG}`;

// PATH without any folder that holds a cargo executable (e.g. ~/.cargo/bin).
const NO_CARGO_PATH = (process.env.PATH || '').split(path.delimiter).filter((dir) => {
  for (const name of ['cargo', 'cargo.exe']) {
    try {
      fs.accessSync(path.join(dir, name), fs.constants.X_OK);
      return false;
    } catch (_) { /* not here */ }
  }
  return true;
}).join(path.delimiter);

// The environment of a user's shell: no npm_* variables of the `npm test` that runs this file
// (they would configure the child npm), and PATH without cargo.
function userEnv(extra = {}) {
  const env = {};
  for (const [key, value] of Object.entries(process.env)) {
    // (Windows spells it Path; a second PATH key would leave the child's PATH to chance.)
    if (!/^(npm_|path$|node_options$|node_test_context$)/i.test(key)) env[key] = value;
  }
  return { ...env, PATH: NO_CARGO_PATH, ...extra };
}

// npm is a .cmd script on Windows, which only a shell runs.
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function run(cmd, args, options = {}) {
  return new Promise((resolve) => {
    execFile(cmd, args, { shell: cmd === NPM && process.platform === 'win32', timeout: 180000, maxBuffer: 16 * 1024 * 1024, ...options }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr, out: `${stdout}${stderr}` });
    });
  });
}

/** The fenced block of README.md whose info string is `js <name>`. */
function readmeExample(name) {
  const text = fs.readFileSync(README, 'utf8');
  const re = /^```js ([^\s`]+)\n([\s\S]*?)^```$/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (m[1] === name) return m[2];
  }
  throw new Error(`README.md has no \`\`\`js ${name} block`);
}

function listTarball(file) {
  // A relative name: GNU tar (as in Git for Windows) would take `C:` for a remote host.
  const res = spawnSync('tar', ['tzf', path.basename(file)], { cwd: path.dirname(file), encoding: 'utf8' });
  assert.equal(res.status, 0, `tar tzf ${file}: ${res.stderr}`);
  return res.stdout.split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
}

describe('the packed package, installed without cargo and without install scripts', { timeout: 600000 }, () => {
  let work;
  let tarballs;
  let app;

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-package-'));
    // The release workflow tests the addon its build job made: SKIFF_PREBUILT names that file.
    const prebuilt = process.env.SKIFF_PREBUILT ? ['--prebuilt', process.env.SKIFF_PREBUILT] : [];
    const pack = await run(process.execPath,
      [path.join(ROOT, 'scripts', 'package.js'), '--out', path.join(work, 'packages'), ...prebuilt],
      { cwd: ROOT, timeout: 480000 });
    assert.equal(pack.code, 0, `npm run package failed:\n${pack.out}`);
    tarballs = pack.stdout.trim().split('\n').slice(-2);
    assert.match(path.basename(tarballs[0]), /^skiff-rs-\d+\.\d+\.\d+.*\.tgz$/);
    assert.equal(path.basename(tarballs[1]).startsWith(`${PLATFORM_PACKAGE}-`), true, tarballs[1]);

    const probe = spawnSync('cargo', ['--version'], { env: userEnv() });
    assert.ok(probe.error && probe.error.code === 'ENOENT', 'cargo must not be found on the PATH used for the install');

    app = path.join(work, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    const install = await run(NPM, ['install', '--ignore-scripts', '--no-audit', '--no-fund', ...tarballs],
      { cwd: app, env: userEnv(), timeout: 300000 });
    assert.equal(install.code, 0, `npm install of the tarballs failed:\n${install.out}`);
  });

  after(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('holds no tests and no addon, and all the install and the source fallback need', () => {
    const files = listTarball(tarballs[0]);
    const tests = files.filter((f) => /(^|\/)(__test__|tests?|benches|bench|demo|docs)\//.test(f) || /\.test\.js$/.test(f));
    assert.deepEqual(tests, [], 'test sources in the tarball');
    assert.deepEqual(files.filter((f) => f.endsWith('.node')), [], 'the main package ships no addon');
    assert.equal(files.includes('scripts/chaos.js'), false);
    for (const f of ['LICENSE', 'README.md', 'package.json', 'index.js', 'index.mjs', 'index.d.ts', 'binding.js',
      'binding.d.ts', 'lib/platform.js', 'lib/kv.d.ts', 'scripts/install.js', 'scripts/build.js', 'Cargo.toml',
      'Cargo.lock', '.cargo/config.toml', 'build.rs', 'src/lib.rs', 'crates/skiff-core/Cargo.toml', 'crates/skiff-core/src/lib.rs']) {
      assert.ok(files.includes(f), `${f} is missing from the main tarball`);
    }
    assert.deepEqual(listTarball(tarballs[1]).sort(), ['README.md', localBinaryName(), 'package.json'].sort());
  });

  it('installed the addon from the platform package and compiled nothing', () => {
    const pkg = path.join(app, 'node_modules', 'skiff-rs');
    assert.ok(fs.existsSync(path.join(app, 'node_modules', PLATFORM_PACKAGE, localBinaryName())));
    assert.deepEqual(fs.readdirSync(pkg).filter((f) => f.endsWith('.node') || f === 'target'), []);
    const meta = JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8'));
    assert.equal(meta.optionalDependencies[PLATFORM_PACKAGE], meta.version, 'the platform package is pinned exactly');
    assert.equal(meta.dependencies['@napi-rs/cli'], undefined, 'the napi CLI is not a runtime dependency');
  });

  it("runs the README's CommonJS example as pasted (a three-node key-value store)", async () => {
    fs.writeFileSync(path.join(app, 'example.cjs'), readmeExample('example.cjs'));
    const r = await run(process.execPath, ['example.cjs'], { cwd: app, env: userEnv() });
    assert.equal(r.code, 0, r.out);
    assert.match(r.stdout, /\{ hello: 'world' \}/);
  });

  it("runs the README's ES module example as pasted (a three-node cluster of the Node API)", async () => {
    fs.writeFileSync(path.join(app, 'example.mjs'), readmeExample('example.mjs'));
    const r = await run(process.execPath, ['example.mjs'], { cwd: app, env: userEnv() });
    assert.equal(r.code, 0, r.out);
    assert.deepEqual(r.stdout.trim().split('\n'), ['1', 'ENOTLEADER tcp://127.0.0.1:7311']);
  });

  it('gives an .mjs consumer named exports, the same objects as require, and the deep paths', async () => {
    fs.writeFileSync(path.join(app, 'consumer.mjs'), `
import Node, { createKvStore, createKvClient, KvStore, KvClient, createTcpTransport, createFilePersistence,
  createKvStateMachine, MemoryPersistence, codes, defaults, events, states } from 'skiff-rs';
import * as ns from 'skiff-rs';
import tcp from 'skiff-rs/lib/transport/tcp';
import file from 'skiff-rs/lib/persistence/file.js';
import { createKvStore as deepKv } from 'skiff-rs/lib/kv';
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';
const require = createRequire(import.meta.url);
const cjs = require('skiff-rs');
assert.equal(Node, cjs);
assert.equal(ns.default, cjs);
assert.equal(ns.Node, cjs);
for (const [name, value] of Object.entries({ createKvStore, createKvClient, KvStore, KvClient, createTcpTransport,
  createFilePersistence, createKvStateMachine, MemoryPersistence, codes, defaults, events, states })) {
  assert.ok(value !== undefined, name);
  assert.equal(value, cjs[name], name);
  assert.equal(ns[name], cjs[name], name);
}
assert.equal(tcp, cjs.createTcpTransport);
assert.equal(file, cjs.createFilePersistence);
assert.equal(deepKv, cjs.createKvStore);
assert.throws(() => createFilePersistence({}), (e) => e instanceof TypeError && e.code === 'EINVALIDOPTIONS');
assert.equal(require('skiff-rs/package.json').name, 'skiff-rs');
console.log('ok');
`);
    const r = await run(process.execPath, ['consumer.mjs'], { cwd: app, env: userEnv() });
    assert.equal(r.code, 0, r.out);
    assert.equal(r.stdout.trim(), 'ok');
  });

  it('type-checks a TypeScript consumer with --module nodenext (ESM and CommonJS)', async () => {
    fs.writeFileSync(path.join(app, 'consumer.mts'), `
import Node, { createKvStore, createKvClient, KvStore, createTcpTransport, codes } from 'skiff-rs';
import type { Options, KvClient, SkiffError } from 'skiff-rs';
import createFilePersistence from 'skiff-rs/lib/persistence/file';
import { createKvClient as deepClient } from 'skiff-rs/lib/kv';
const options: Options = { id: 'tcp://127.0.0.1:1', transport: createTcpTransport(), persistence: createFilePersistence({ dir: '/tmp/x' }) };
const node: Node.Node = Node(options);
const store: Node.KvStore = new KvStore({ id: 'tcp://127.0.0.1:2', dir: '/tmp/y' });
const store2: Node.KvStore = createKvStore({ id: 'tcp://127.0.0.1:3', dir: '/tmp/z' });
const client: KvClient = createKvClient(['tcp://127.0.0.1:2']);
const client2: KvClient = deepClient(['tcp://127.0.0.1:2']);
const err: SkiffError | null = null;
const code: string = codes.ENOTLEADER;
// @ts-expect-error: createKvStore needs options
createKvStore();
export { node, store, store2, client, client2, err, code };
`);
    fs.writeFileSync(path.join(app, 'consumer.cts'), `
import Node = require('skiff-rs');
import createTcpTransport = require('skiff-rs/lib/transport/tcp');
const node: Node.Node = Node({ transport: createTcpTransport(), persistence: new Node.MemoryPersistence() });
const store: Node.KvStore = new Node.KvStore({ id: 'tcp://127.0.0.1:2', dir: '/tmp/y' });
export = { node, store };
`);
    const r = await run(process.execPath, [TSC, '--strict', '--noEmit', '--module', 'nodenext', '--moduleResolution',
      'nodenext', '--target', 'es2022', '--types', 'node', '--typeRoots', path.join(ROOT, 'node_modules', '@types'),
      '--pretty', 'false', '--ignoreConfig', 'consumer.mts', 'consumer.cts'], { cwd: app });
    assert.equal(r.code, 0, `tsc:\n${r.out}`);
  });

  it('install script: keeps a present addon, explains a missing one and exits 0, fails a forced build without cargo', async () => {
    const script = path.join(app, 'node_modules', 'skiff-rs', 'scripts', 'install.js');
    const pkg = path.join(app, 'node_modules', 'skiff-rs');

    // Present: nothing is built, even with cargo on PATH.
    let r = await run(process.execPath, [script], { cwd: pkg, env: userEnv({ PATH: process.env.PATH }) });
    assert.equal(r.code, 0, r.out);
    assert.equal(r.out, '');
    assert.deepEqual(fs.readdirSync(pkg).filter((f) => f.endsWith('.node') || f === 'target'), []);

    // Missing, no cargo: one paragraph, exit 0; then Node() names the platform.
    const platformDir = path.join(app, 'node_modules', PLATFORM_PACKAGE);
    const aside = path.join(work, 'aside');
    fs.renameSync(platformDir, aside);
    try {
      r = await run(process.execPath, [script], { cwd: pkg, env: userEnv() });
      assert.equal(r.code, 0, r.out);
      assert.match(r.stderr, new RegExp(`no native addon for ${process.platform} ${process.arch}`));
      assert.match(r.stderr, /cargo` is not on PATH/);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one paragraph');

      fs.writeFileSync(path.join(app, 'no-addon.cjs'), `
const Node = require('skiff-rs');
try {
  Node({ transport: Node.createTcpTransport() });
  console.log('created');
} catch (e) {
  console.log(JSON.stringify({ code: e.code, platform: e.platform, message: e.message }));
}`);
      r = await run(process.execPath, ['no-addon.cjs'], { cwd: app, env: userEnv() });
      assert.equal(r.code, 0, r.out);
      const e = JSON.parse(r.stdout);
      assert.equal(e.code, 'ENOBINDING');
      assert.equal(e.platform, TAG);
      assert.match(e.message, new RegExp(`${PLATFORM_PACKAGE}.*rustup`, 's'));
      assert.doesNotMatch(e.message, /npm has a bug/);

      // Forced without cargo: the user asked for a build, so its failure is the install's.
      r = await run(process.execPath, [script], { cwd: pkg, env: userEnv({ SKIFF_BUILD_FROM_SOURCE: '1' }) });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /`cargo` was not found on PATH/);
    } finally {
      fs.renameSync(aside, platformDir);
    }
  });
});

describe('package metadata', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

  it('has one npm/<platform> package per napi target, each pinned exactly as an optional dependency', () => {
    const dirs = fs.readdirSync(path.join(ROOT, 'npm'), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
    assert.equal(dirs.length, pkg.napi.targets.length);
    assert.deepEqual(Object.keys(pkg.optionalDependencies).sort(), dirs.map((d) => `${pkg.name}-${d}`).sort());
    for (const dir of dirs) {
      const sub = JSON.parse(fs.readFileSync(path.join(ROOT, 'npm', dir, 'package.json'), 'utf8'));
      assert.equal(sub.name, `${pkg.name}-${dir}`);
      assert.equal(sub.version, pkg.version, `${dir} version`);
      assert.equal(pkg.optionalDependencies[sub.name], pkg.version, `${sub.name} pin`);
      assert.deepEqual(sub.files, [`skiff.${dir}.node`]);
      assert.ok(sub.os && sub.cpu, `${dir} os/cpu`);
      if (dir.startsWith('linux-')) assert.deepEqual(sub.libc, [dir.endsWith('-musl') ? 'musl' : 'glibc']);
      assert.equal(sub.engines.node, pkg.engines.node, `${dir} engines`);
    }
  });

  it('agrees with the README on the Node floor', () => {
    assert.equal(pkg.engines.node, '^18.17.0 || >=20.3.0');
    assert.ok(fs.readFileSync(README, 'utf8').includes(`\`engines\`: \`${pkg.engines.node}\``));
  });
});
