// Types of `require('skiff-rs/lib/transport/tcp')`: the package entry's `createTcpTransport`.
import Skiff = require('../../index');

declare const createTcpTransport: Skiff.CreateTcpTransport;
export = createTcpTransport;
