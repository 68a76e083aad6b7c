'use strict';

// Number and table formatting for the bench's Markdown output (run.js, compare.js).

const os = require('os');

function fmt(n, digits = 0) {
  if (!Number.isFinite(n)) return '–';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ms(n) {
  if (!Number.isFinite(n)) return '–';
  return n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0);
}

function ratio(a, b) {
  if (!Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '–';
  const r = a / b;
  return `${r < 10 ? r.toFixed(2) : r.toFixed(1)}×`;
}

function line(cells) {
  console.log(`| ${cells.join(' | ')} |`);
}

function mb(bytes) {
  return (bytes / (1024 * 1024)).toFixed(0);
}

/** The machine in one line: CPU model, cores, memory, OS. */
function machine() {
  const cpus = os.cpus();
  const model = cpus.length ? cpus[0].model.trim() : 'unknown CPU';
  return `${model}, ${cpus.length} cores, ${fmt(os.totalmem() / 2 ** 30, 0)} GB, ` +
    `${os.platform()} ${os.release()} ${os.arch()}`;
}

/** The load average (1, 5, 15 minutes), two decimals each. */
function loadAverage() {
  return os.loadavg().map((l) => l.toFixed(2)).join(' ');
}

module.exports = { fmt, ms, ratio, line, mb, machine, loadAverage };
