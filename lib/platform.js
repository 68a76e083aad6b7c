'use strict';

// Which prebuilt native addon this process needs, and a clear error when there is none.
//
// The names follow napi-rs (`napi build --platform`, the generated binding.js and the per-platform
// packages under npm/): the addon of this machine is `skiff.<tag>.node`, shipped in the package
// `skiff-rs-<tag>`, where <tag> is e.g. `linux-x64-gnu`, `linux-arm64-musl`, `darwin-arm64` or
// `win32-x64-msvc`. scripts/install.js and scripts/build.js name the file they build the same way
// as binding.js looks for it; index.js explains a missing addon with `noBindingError`.

const PACKAGE_NAME = 'skiff-rs';
const BINARY_NAME = 'skiff';
// The platforms with a prebuilt package: the optionalDependencies skiff-rs-<tag> (one per
// `napi.targets` entry, each a folder under npm/).
const PREBUILT = new Set(Object.keys(require('../package.json').optionalDependencies || {})
  .filter((name) => name.startsWith(`${PACKAGE_NAME}-`))
  .map((name) => name.slice(PACKAGE_NAME.length + 1)));

/** 'glibc' or 'musl' on Linux, else null. A glibc build of Node reports its glibc version. */
function libc() {
  if (process.platform !== 'linux') return null;
  const report = process.report;
  if (!report || typeof report.getReport !== 'function') return 'glibc'; // as the napi loader assumes
  const excludeNetwork = report.excludeNetwork;
  try {
    report.excludeNetwork = true; // the report's network section can take seconds
    return report.getReport().header.glibcVersionRuntime ? 'glibc' : 'musl';
  } catch (_) {
    return 'glibc';
  } finally {
    report.excludeNetwork = excludeNetwork;
  }
}

/** The napi-rs platform tag of this process, e.g. `linux-x64-gnu` (the loader's naming). */
function platformTag() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const musl = libc() === 'musl';
    if (arch === 'arm') return musl ? 'linux-arm-musleabihf' : 'linux-arm-gnueabihf';
    if (arch === 'ppc64' || arch === 's390x') return `linux-${arch}-gnu`;
    return `linux-${arch}-${musl ? 'musl' : 'gnu'}`;
  }
  if (platform === 'win32') {
    const vars = (process.config && process.config.variables) || {};
    const gnu = arch === 'x64' && (vars.shlib_suffix === 'dll.a' || vars.node_target_type === 'shared_library');
    return `win32-${arch}-${gnu ? 'gnu' : 'msvc'}`;
  }
  if (platform === 'android' && arch === 'arm') return 'android-arm-eabi';
  return `${platform}-${arch}`;
}

/** The file name binding.js loads from the package folder for this process. */
function localBinaryName() {
  return `${BINARY_NAME}.${platformTag()}.node`;
}

/** e.g. `linux x64 (glibc)`, `darwin arm64`. */
function describePlatform() {
  const c = libc();
  return `${process.platform} ${process.arch}${c ? ` (${c})` : ''}`;
}

/**
 * The first error in the loader's chain (binding.js links each candidate's failure through `cause`)
 * that is not a plain "not found": e.g. an addon built for a newer glibc. Null when all were missing.
 */
function loadFailure(err) {
  for (let e = err, depth = 0; e && depth < 32; e = e.cause, depth++) {
    const message = typeof e.message === 'string' ? e.message : '';
    if (message && e.code !== 'MODULE_NOT_FOUND' && !/^Cannot find (module|native binding)/.test(message)) {
      return message.split('\n')[0];
    }
  }
  return null;
}

/**
 * The error of a `Node()` that finds no native addon: which platform it looked for, and how to get
 * one. `cause` is the loader's own error (kept for debugging, not shown first: its advice about
 * npm's optional-dependency bug is often not the reason).
 */
function noBindingError(cause) {
  const tag = platformTag();
  const pkg = `${PACKAGE_NAME}-${tag}`;
  const how = PREBUILT.has(tag)
    ? `Its prebuilt package is ${pkg}, an optional dependency of ${PACKAGE_NAME}: it is missing when ` +
      'optional dependencies were skipped (--omit=optional, --no-optional), when node_modules was ' +
      'copied from another platform or libc (e.g. from macOS or glibc into an Alpine image), or when ' +
      `the lockfile was made without it. Reinstall on this machine (\`npm install ${PACKAGE_NAME}\`), or ` +
      `add ${pkg} explicitly, or build from source: with a Rust toolchain (https://rustup.rs), run ` +
      `\`npm rebuild ${PACKAGE_NAME}\` (or set SKIFF_BUILD_FROM_SOURCE=1 during the install).`
    : `No prebuilt package exists for ${tag}; build from source: install a Rust toolchain ` +
      `(https://rustup.rs), then run \`npm rebuild ${PACKAGE_NAME}\` (the install script compiles ` +
      'the addon when cargo is on PATH).';
  const failed = loadFailure(cause);
  const err = new Error(
    `skiff-rs: no native addon was found for ${describePlatform()} ` +
      `(neither ${localBinaryName()} in the package nor the package ${pkg}). ${how}` +
      (failed ? ` (An addon was found but did not load: ${failed})` : ''),
    cause === undefined ? undefined : { cause },
  );
  err.code = 'ENOBINDING';
  err.platform = tag;
  return err;
}

module.exports = {
  PACKAGE_NAME,
  BINARY_NAME,
  PREBUILT,
  libc,
  platformTag,
  localBinaryName,
  describePlatform,
  noBindingError,
};
