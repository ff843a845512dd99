import { readdirSync } from 'node:fs';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { Gauge, type Registry } from 'prom-client';
import { scrapedCounter, scrapedGauge } from './tallies.js';

/**
 * Node.js process metrics, read only when scraped. prom-client's collectDefaultMetrics costs
 * about 6 µs per proxied request here (its GC observer and event-loop-delay histogram run all
 * the time; bench/observability.mjs), so this lean set replaces it.
 */
export function processMetrics(registry: Registry): void {
  scrapedCounter(registry, 'egress_proxy_process_cpu_seconds_total', 'User and system CPU time of the process.', () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  });
  scrapedGauge(registry, 'egress_proxy_process_resident_memory_bytes', 'Resident memory of the process.', () => process.memoryUsage.rss());
  scrapedGauge(registry, 'egress_proxy_nodejs_heap_size_used_bytes', 'V8 heap in use.', () => process.memoryUsage().heapUsed);
  scrapedGauge(registry, 'egress_proxy_process_open_fds', 'Open file descriptors (sockets included).', () => {
    try {
      return readdirSync('/proc/self/fd').length - 1; // less the one readdir held
    } catch {
      return undefined;
    }
  });
  const started = Math.round(Date.now() / 1000 - process.uptime());
  scrapedGauge(registry, 'egress_proxy_process_start_time_seconds', 'When the process started (Unix time).', () => started, 'max');
  let elu: EventLoopUtilization | undefined;
  scrapedGauge(registry, 'egress_proxy_nodejs_eventloop_utilization', 'Share of time the event loop was busy since the previous scrape (0 to 1).', () => {
    const now = performance.eventLoopUtilization();
    const u = elu === undefined ? now.utilization : performance.eventLoopUtilization(now, elu).utilization;
    elu = now;
    return u;
  }, 'max');
  new Gauge({
    name: 'egress_proxy_nodejs_eventloop_lag_seconds', help: 'How late a callback queued at scrape time ran.', registers: [registry], aggregator: 'max',
    collect() {
      const t = performance.now();
      return new Promise<void>((resolve) => setImmediate(() => { this.set((performance.now() - t) / 1000); resolve(); }));
    },
  });
}
