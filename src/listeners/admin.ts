import cluster from 'node:cluster';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { clusterSnapshot } from '../logging/live-cluster.js';
import { clusterMetricsText } from '../logging/metrics-cluster.js';
import type { ProxyRuntime } from '../runtime.js';
import { createDashboard } from './dashboard.js';
import { renderPac } from './pac.js';

/**
 * The admin listener: health for orchestrators, and the PAC file for browsers. Kept on its own
 * port so the proxy port never serves anything but proxied traffic.
 */
export function createAdminServer(rt: ProxyRuntime): Server {
  let pac: string | undefined;
  // With workers, the page shows the whole node: the supervisor merges every worker's view.
  const ui = createDashboard(rt, cluster.isWorker ? { snapshot: clusterSnapshot } : {});
  return createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string): void => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    // The sign-in portal lives on this origin (its own methods and cookies).
    if (path?.startsWith('/auth/') && rt.identity.portal) return rt.identity.portal.handle(req, res);
    // The admin dashboard checks the signed-in user itself, and answers other methods with its own refusal.
    if (path === '/ui' || path?.startsWith('/ui/')) return ui(req, res);
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/healthz':
        return send(200, 'application/json', JSON.stringify({ status: 'ok', node: rt.config.node_id, pid: process.pid }) + '\n');
      case '/readyz': {
        const status = rt.draining ? 'draining' : rt.logger.backlogged ? 'log_backlog' : 'ready';
        return send(status === 'ready' ? 200 : 503, 'application/json',
          JSON.stringify({ status, policy_version: rt.current.policy.version, active: rt.active, log: rt.logger.stats() }) + '\n');
      }
      case '/policy/status': {
        const st = rt.policyStatus;
        return send(200, 'application/json', JSON.stringify(st ?? {}, null, 2) + '\n');
      }
      case '/inspection/status': {
        const i = rt.inspection;
        const body = i
          ? {
              enabled: true, ca: i.ca.certFile, ca_fingerprint_sha256: i.ca.cert.fingerprint256, ca_valid_to: i.ca.cert.validTo,
              leaves_minted: i.minter.minted,
              // Hosts whose clients refused the interception certificate: candidates for a bypass rule.
              refusals: Object.fromEntries([...i.refusals].sort((a, b) => b[1] - a[1]).slice(0, 1000)),
              auto_bypassed: [...i.autoBypass],
            }
          : { enabled: false };
        return send(200, 'application/json', JSON.stringify(body, null, 2) + '\n');
      }
      case '/metrics':
        return void metrics(rt, res, req.method === 'HEAD');
      case '/proxy.pac':
      case '/wpad.dat':
        return send(200, 'application/x-ns-proxy-autoconfig', (pac ??= renderPac(rt.config, rt.listenAddress)));
      default:
        return send(404, 'text/plain', 'not found\n');
    }
  });
}

/** Prometheus exposition: this process's registry, or every worker's through the supervisor. */
async function metrics(rt: ProxyRuntime, res: ServerResponse, head: boolean): Promise<void> {
  const m = rt.metrics;
  if (!m) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('metrics are off (metrics.enabled: false)\n');
    return;
  }
  let text: string;
  try {
    text = cluster.isWorker ? await clusterMetricsText() : await m.text();
  } catch (err) {
    rt.logger.log.warn({ err: String(err) }, 'metrics could not be collected');
    res.writeHead(503, { 'content-type': 'text/plain' }).end('metrics could not be collected; see the proxy log\n');
    return;
  }
  res.writeHead(200, { 'content-type': m.registry.contentType, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(head ? undefined : text);
}
