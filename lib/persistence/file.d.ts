// Types of `require('skiff-rs/lib/persistence/file')`: the package entry's `createFilePersistence`
// (a FilePersistence: the persistence contract and the incremental extension, saveLog and
// applyCommands).
import Skiff = require('../../index');

declare const createFilePersistence: Skiff.CreateFilePersistence;
export = createFilePersistence;
