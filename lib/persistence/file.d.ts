// Types of `require('skiff-rs/lib/persistence/file')`: the package entry's `createFilePersistence`.
import Skiff = require('../../index');

declare const createFilePersistence: Skiff.CreateFilePersistence;
export = createFilePersistence;
