'use strict';

// Temp folders for a test file: `const tmpDir = tmpDirs('prefix-')`, then `tmpDir()` makes one;
// all are removed once the file's tests are done.

const test = require('node:test');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

function tmpDirs(prefix) {
  const roots = [];
  test.after(() => {
    for (const dir of roots) fs.rmSync(dir, { recursive: true, force: true });
  });
  return () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    roots.push(dir);
    return dir;
  };
}

module.exports = { tmpDirs };
