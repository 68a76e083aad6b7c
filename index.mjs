// skiff-rs for ES modules: `import Node, { createKvStore } from 'skiff-rs'`.
//
// The same objects as `require('skiff-rs')` (this file re-exports the CommonJS entry, index.js),
// so a program that mixes `import` and `require` gets one Node class, one set of codes, and so on.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const Node = require('./index.js');

export default Node;
export const {
  codes,
  defaults,
  events,
  states,
  MemoryPersistence,
  createTcpTransport,
  createFilePersistence,
  createKvStateMachine,
  createKvStore,
  createKvClient,
  KvStore,
  KvClient,
} = Node;
export { Node };
