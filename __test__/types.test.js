'use strict';

// The TypeScript definitions (index.d.ts): `tsc --strict --noEmit` must accept
// __test__/types/usage.ts (the whole API used as documented) and __test__/types/errors.ts (misuses,
// each marked `// @ts-expect-error`, so a directive that is no longer needed — types too loose —
// fails). With the directives stripped, each marked line must be an error, and no other line.

const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFile } = require('node:child_process');

const ROOT = path.join(__dirname, '..');
const TSC = path.join(ROOT, 'node_modules', '.bin', process.platform === 'win32' ? 'tsc.cmd' : 'tsc');
const TYPES = path.join(__dirname, 'types');
// The same settings as tsconfig.json, given on the command line (with files named, tsc 6 wants
// --ignoreConfig).
const FLAGS = ['--strict', '--noEmit', '--module', 'nodenext', '--moduleResolution', 'nodenext',
  '--target', 'es2022', '--types', 'node', '--typeRoots', path.join(ROOT, 'node_modules', '@types'),
  '--pretty', 'false', '--ignoreConfig'];

function tsc(files) {
  return new Promise((resolve) => {
    execFile(TSC, [...FLAGS, ...files], { cwd: ROOT, timeout: 120000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

describe('TypeScript definitions', { concurrency: true }, () => {
  it('usage.ts (the whole API) compiles with --strict', async () => {
    assert.ok(fs.existsSync(TSC), `typescript is a devDependency: ${TSC} is missing, run npm install`);
    const r = await tsc([path.join(TYPES, 'usage.ts')]);
    assert.equal(r.code, 0, `tsc failed on usage.ts:\n${r.out}`);
  });

  it('errors.ts: every @ts-expect-error is needed', async () => {
    const r = await tsc([path.join(TYPES, 'errors.ts')]);
    assert.equal(r.code, 0, `tsc failed on errors.ts (an unused directive means the types are too loose):\n${r.out}`);
  });

  it('errors.ts without the directives: exactly the marked lines are errors', async (t) => {
    const source = fs.readFileSync(path.join(TYPES, 'errors.ts'), 'utf8');
    const lines = source.split('\n');
    const expected = new Set();
    const stripped = lines.map((line, i) => {
      if (/^\s*\/\/ @ts-expect-error/.test(line)) {
        expected.add(i + 2); // 1-based number of the next line
        return '//';
      }
      return line;
    });
    assert.ok(expected.size >= 30, `errors.ts has ${expected.size} directives`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'skiff-types-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'errors-stripped.ts');
    const index = path.join(ROOT, 'index').split(path.sep).join('/');
    fs.writeFileSync(file, stripped.join('\n').replace("require('../../index')", `require(${JSON.stringify(index)})`));
    const r = await tsc([file]);
    assert.notEqual(r.code, 0, 'the stripped file must not compile');
    const got = new Set();
    for (const m of r.out.matchAll(/errors-stripped\.ts\((\d+),\d+\): error TS\d+/g)) got.add(Number(m[1]));
    const missing = [...expected].filter((n) => !got.has(n));
    const extra = [...got].filter((n) => !expected.has(n));
    assert.deepEqual(missing, [], `marked lines that are not errors: ${missing.map((n) => `${n}: ${lines[n - 1].trim()}`).join('\n')}`);
    assert.deepEqual(extra, [], `unexpected errors:\n${r.out}`);
  });
});
