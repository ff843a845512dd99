import cluster, { type Worker } from 'node:cluster';
import type { AddressInfo } from 'node:net';
import { relaySessionSync } from './identity/session-sync.js';
import { serveClusterLive } from './logging/live-cluster.js';
import { serveClusterMetrics } from './logging/metrics-cluster.js';

/** What the supervisor reports once the first worker listens (for the dev-mode banner). */
export type OnListening = (address: AddressInfo) => void;

const RESTART_WINDOW_MS = 30_000;
const MAX_RESTARTS = 5;

/**
 * Runs `count` proxy workers under node:cluster (they share the listening sockets) and keeps
 * them alive: a worker that dies is replaced, unless workers die faster than five in thirty
 * seconds (a crash loop), which stops the supervisor with exit 1. SIGTERM/SIGINT are passed
 * on; each worker drains by itself, and the supervisor exits 0 once all have.
 */
export function superviseWorkers(count: number, onFirstListening?: OnListening): void {
  let stopping = false;
  const restarts: number[] = [];
  let announced = false;
  const say = (msg: string, extra: Record<string, unknown> = {}): void => {
    process.stdout.write(JSON.stringify({ level: 'info', time: new Date().toISOString(), msg, ...extra }) + '\n');
  };
  const fork = (): Worker => {
    const w = cluster.fork();
    alive++;
    w.on('listening', (address: AddressInfo) => {
      if (!announced && onFirstListening) {
        announced = true;
        onFirstListening(address);
      }
    });
    return w;
  };
  let alive = 0;
  cluster.on('exit', (worker, code, signal) => {
    alive--;
    if (stopping) {
      if (alive === 0) {
        say('all workers stopped');
        process.exit(0);
      }
      return;
    }
    const now = Date.now();
    restarts.push(now);
    while (restarts.length > 0 && restarts[0]! < now - RESTART_WINDOW_MS) restarts.shift();
    process.stderr.write(`egress-proxy: worker ${worker.process.pid} exited (code ${code}, signal ${signal})\n`);
    if (restarts.length > MAX_RESTARTS) {
      process.stderr.write('egress-proxy: workers keep dying; stopping\n');
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM');
      process.exitCode = 1;
      setTimeout(() => process.exit(1), 5000).unref();
      return;
    }
    fork();
  });
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`egress-proxy: ${signal} received, draining ${count} workers\n`);
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
  };
  // Each worker reloads its own policy; SIGHUP to the supervisor reaches them all.
  process.on('SIGHUP', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  relaySessionSync();
  serveClusterMetrics();
  serveClusterLive();
  for (let i = 0; i < count; i++) fork();
  say('supervisor started', { workers: count });
}
