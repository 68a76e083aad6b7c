// Types of `require('skiff-rs/metrics')`: a Prometheus collector for a node (lib/metrics.js).
import Skiff = require('../index');

/**
 * Adds `node`'s metrics (read from `node.stats()` at each scrape, labelled `node`) to `registry`,
 * prom-client's default registry when none is given. Throws `ENOPROMCLIENT` when prom-client is
 * needed and not installed.
 */
declare function collect(node: Skiff.Node, registry?: collect.Registry): collect.Collector;

declare namespace collect {
  /** Any prom-client Registry (prom-client is an optional peer dependency). */
  interface Registry {
    registerMetric(metric: any): void;
    metrics(): Promise<string>;
    readonly contentType: string;
  }
  interface Collector {
    readonly registry: Registry;
    /** Takes the node out of the registry's output. */
    remove(): void;
  }
  /** The same function. */
  function collect(node: Skiff.Node, registry?: Registry): Collector;
}

export = collect;
