'use strict';

// A built checkout of another commit, for `npm run bench:compare` (compare.js): the commit's tree
// extracted with `git archive` into a folder of the OS temp dir named by its full hash, its
// node_modules a symlink to this checkout's, and its addon built there with `npm run build`. A later
// comparison against the same commit reuses the folder as it is (a commit's tree never changes).
//
// `git archive` rather than `git worktree add`: it leaves no registration in this repository to
// clean up, also when the build fails or the process is killed.
//
// The build uses this checkout's target dir, in a subfolder of its own (target/bench-compare), so
// that it neither overwrites this checkout's addon build nor starts from nothing: the first time
// the subfolder is seeded with a copy of this checkout's release builds (target/release and
// target/<triple>: the dependencies, whose fingerprints do not depend on the source folder, are then
// reused), and every later build is incremental.

const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
/** Written into a checkout once its addon is built; a folder without it is rebuilt from scratch. */
const READY = '.bench-compare-ready';

function git(args) {
  const res = spawnSync('git', args, { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 20 });
  if (res.error) throw res.error;
  if (res.status !== 0) throw new Error(`git ${args.join(' ')} failed: ${res.stderr.trim()}`);
  return res.stdout.trim();
}

/** The full hash of `rev` (any git revision), or an Error naming it when git does not know it. */
function resolveCommit(rev) {
  return git(['rev-parse', '--verify', '--quiet', `${rev}^{commit}`]);
}

/** Whether `commit` has the same tree as this checkout's HEAD (then its code is this checkout's). */
function sameTreeAsHead(commit) {
  return git(['rev-parse', `${commit}^{tree}`]) === git(['rev-parse', 'HEAD^{tree}']);
}

/** Where the built checkout of `commit` lives. */
function checkoutDir(commit) {
  return path.join(os.tmpdir(), 'skiff-rs-bench-compare', commit);
}

function run(cmd, args, options) {
  // the build's output goes to stderr: stdout carries only the comparison's table
  const res = spawnSync(cmd, args, { stdio: ['ignore', process.stderr, process.stderr], ...options });
  if (res.error) throw res.error;
  if (res.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${res.status ?? res.signal}`);
}

/** What the seeding leaves out: the folder itself, and the test profile (not used by the build). */
const NOT_SEEDED = new Set(['bench-compare', 'ci']);

/** target/bench-compare, seeded from this checkout's target the first time (see the file's comment). */
function targetDir() {
  const target = path.join(ROOT, 'target');
  const dir = path.join(target, 'bench-compare');
  if (!fs.existsSync(dir)) {
    const seeding = `${dir}.seeding`;
    fs.rmSync(seeding, { recursive: true, force: true });
    fs.mkdirSync(seeding, { recursive: true });
    const entries = fs.existsSync(target) ? fs.readdirSync(target).filter((e) => !NOT_SEEDED.has(e) &&
      !e.startsWith('bench-compare')) : [];
    // -a keeps the modification times that cargo's fingerprints compare
    if (entries.length) run('cp', ['-a', ...entries.map((e) => path.join(target, e)), seeding]);
    fs.renameSync(seeding, dir);
  }
  return dir;
}

/** Points `dir`'s node_modules at this checkout's (the cache outlives the checkout that made it). */
function linkModules(dir) {
  const link = path.join(dir, 'node_modules');
  fs.rmSync(link, { recursive: true, force: true });
  fs.symlinkSync(path.join(ROOT, 'node_modules'), link, 'dir');
}

/**
 * The folder of a built checkout of `commit` (a full hash), made and built unless a finished one is
 * there already. Progress goes to stderr.
 */
function builtCheckout(commit) {
  const dir = checkoutDir(commit);
  if (fs.existsSync(path.join(dir, READY))) {
    linkModules(dir); // the checkout that made the cache may be gone: use this one's node_modules
    return dir;
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  process.stderr.write(`bench:compare: checking out ${commit.slice(0, 12)} into ${dir}\n`);
  const tar = spawnSync('git', ['archive', '--format=tar', commit], { cwd: ROOT, maxBuffer: 1 << 30 });
  if (tar.error) throw tar.error;
  if (tar.status !== 0) throw new Error(`git archive ${commit} failed: ${tar.stderr.toString().trim()}`);
  const untar = spawnSync('tar', ['-x', '-C', dir], { input: tar.stdout });
  if (untar.error) throw untar.error;
  if (untar.status !== 0) throw new Error(`tar -x into ${dir} failed: ${untar.stderr.toString().trim()}`);
  linkModules(dir);
  process.stderr.write(`bench:compare: building its addon (npm run build, CARGO_TARGET_DIR=target/bench-compare)\n`);
  run('npm', ['run', 'build'], { cwd: dir, env: { ...process.env, CARGO_TARGET_DIR: targetDir() } });
  fs.writeFileSync(path.join(dir, READY), `${commit}\n`);
  return dir;
}

/**
 * The rows `dir`'s own bench knows (its ALL_ROWS, in bench/workload.js or, before that file, in
 * bench/run.js), so that a row the other commit has no workload for (for example the incremental
 * rows before the extension existed) is left out rather than run as something else. Read as text:
 * loading an older run.js would start its bench.
 */
function knownRows(dir) {
  for (const file of ['workload.js', 'run.js']) {
    const where = path.join(dir, 'bench', file);
    if (!fs.existsSync(where)) continue;
    const m = /const ALL_ROWS = \[([^\]]*)\]/.exec(fs.readFileSync(where, 'utf8'));
    if (m) return [...m[1].matchAll(/'([^']+)'/g)].map((x) => x[1]);
  }
  return [];
}

module.exports = { ROOT, git, resolveCommit, sameTreeAsHead, builtCheckout, knownRows };
