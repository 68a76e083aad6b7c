'use strict';

// Command-line flags of the bench scripts (run.js, compare.js, compare-child.js), parsed one way:
// `--name` switches, `--name=value` flags (strings, positive numbers, comma-separated lists) and at
// most one bare argument. A mistake exits with status 2 and says what was wrong; --help prints the
// usage and exits 0.

function fail(message) {
  console.error(message);
  process.exit(2);
}

/**
 * `spec`: { switches, strings, numbers, lists } (flag names), `positional` (the key of the bare
 * argument, or null when none is allowed) and `usage` (a line). Returns an object with a key per
 * name: switches false or true, the others null when absent.
 */
function parseFlags(argv, { switches = [], strings = [], numbers = [], lists = [], positional = null, usage }) {
  const args = {};
  for (const k of switches) args[k] = false;
  for (const k of [...strings, ...numbers, ...lists]) args[k] = null;
  if (positional) args[positional] = null;
  for (const a of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(a);
    if (a === '--help' || a === '-h') {
      console.log(usage);
      process.exit(0);
    } else if (m && m[2] === undefined && switches.includes(m[1])) {
      args[m[1]] = true;
    } else if (m && m[2] !== undefined && strings.includes(m[1])) {
      args[m[1]] = m[2];
    } else if (m && m[2] !== undefined && numbers.includes(m[1])) {
      const n = Number(m[2]);
      if (!(Number.isFinite(n) && n > 0)) fail(`--${m[1]} must be a positive number`);
      args[m[1]] = n;
    } else if (m && m[2] !== undefined && lists.includes(m[1])) {
      args[m[1]] = m[2].split(',').map((s) => s.trim()).filter(Boolean);
    } else if (!a.startsWith('-') && positional && args[positional] === null) {
      args[positional] = a;
    } else {
      fail(`unknown argument ${a}\n${usage}`);
    }
  }
  return args;
}

module.exports = { parseFlags, fail };
