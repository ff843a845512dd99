import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/logging/logger.js';
import { startProxy, type RunningProxy } from '../../src/proxy.js';

/** One access-log line as parsed JSON. */
export type LogLine = Record<string, unknown> & { type?: string; reason?: string; status?: number };

/** A proxy running in this process on ephemeral loopback ports, logging to a temp file. */
export interface TestProxy {
  running: RunningProxy;
  /** http://127.0.0.1:PORT, for curl -x and ProxyAgent. */
  url: string;
  host: string;
  port: number;
  adminUrl: string;
  dir: string;
  /** Every log line written so far (flushes first). */
  lines(): LogLine[];
  /** Access-log lines only. */
  access(): LogLine[];
  /** Waits until an access-log line matching `pred` appears (lines are written when a request ends). */
  waitForAccess(pred: (l: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  close(): Promise<void>;
}

/** Policy options for a test; default: allow, origin ranges 127.0.0.2-127.0.0.15 reachable, any port. */
export interface TestPolicy {
  default?: 'allow' | 'deny';
  allow_ranges?: string[];
  connect_ports?: Array<number | string>;
  http_ports?: Array<number | string>;
}

/** Starts a proxy with the given config overrides (merged into the YAML config) and policy. */
export async function startTestProxy(config: Record<string, unknown> = {}, policy: TestPolicy = {}): Promise<TestProxy> {
  const dir = mkdtempSync(join(tmpdir(), 'egress-test-'));
  const policiesDir = join(dir, 'policies');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(policiesDir);
  writeFileSync(
    join(policiesDir, 'test.yaml'),
    stringify({
      version: 'v1',
      default: policy.default ?? 'allow',
      network: {
        allow_ranges: policy.allow_ranges ?? ['127.0.0.2/31', '127.0.0.4/30', '127.0.0.8/29'],
        connect_ports: policy.connect_ports ?? ['1-65535'],
        http_ports: policy.http_ports ?? ['1-65535'],
      },
    }),
  );
  const configFile = join(dir, 'config.yaml');
  writeFileSync(configFile, stringify({ listen: '127.0.0.1:0', admin: '127.0.0.1:0', node_id: 'test-node', policies: 'policies', inspection: { enabled: false }, ...config }));
  const loaded = loadConfig({ config: configFile }, {});
  const logFile = join(dir, 'proxy.log');
  const logger = createLogger({ level: 'info', nodeId: loaded.node_id, destination: logFile });
  const running = await startProxy(loaded, logger);
  const lines = (): LogLine[] => {
    logger.flush();
    let text = '';
    try {
      text = readFileSync(logFile, 'utf8');
    } catch {
      return [];
    }
    return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLine);
  };
  const access = (): LogLine[] => lines().filter((l) => l.type === 'access');
  return {
    running,
    url: `http://127.0.0.1:${running.proxyAddress.port}`,
    host: '127.0.0.1',
    port: running.proxyAddress.port,
    adminUrl: `http://127.0.0.1:${running.adminAddress.port}`,
    dir,
    lines,
    access,
    waitForAccess: async (pred, timeoutMs = 5000) => {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const hit = access().find(pred);
        if (hit) return hit;
        if (Date.now() > end) throw new Error(`no matching access-log line; have:\n${access().map((l) => JSON.stringify(l)).join('\n')}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    close: () => running.drain(),
  };
}
