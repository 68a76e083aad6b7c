// Types of `require('skiff-rs/lib/kv')`: the same functions and classes as the package entry's.
import Skiff = require('../index');

export declare const createKvStore: typeof Skiff.createKvStore;
export declare const createKvClient: typeof Skiff.createKvClient;
export declare const KvStore: typeof Skiff.KvStore;
export declare const KvClient: typeof Skiff.KvClient;
/** The request type a KvClient sends over the TCP transport. */
export declare const REQUEST_TYPE: string;
/** The key of the transport hello that marks a KvClient connection. */
export declare const CLIENT_HELLO: string;
