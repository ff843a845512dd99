import { createServer, type Server } from 'node:http';
import type { ProxyRuntime } from '../runtime.js';
import { renderPac } from './pac.js';

/**
 * The admin listener: health for orchestrators, and the PAC file for browsers. Kept on its own
 * port so the proxy port never serves anything but proxied traffic.
 */
export function createAdminServer(rt: ProxyRuntime): Server {
  let pac: string | undefined;
  return createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string): void => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    // The sign-in portal lives on this origin (its own methods and cookies).
    if (path?.startsWith('/auth/') && rt.identity.portal) return rt.identity.portal.handle(req, res);
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'method not allowed\n');
    switch (path) {
      case '/healthz':
        return send(200, 'application/json', JSON.stringify({ status: 'ok', node: rt.config.node_id, pid: process.pid }) + '\n');
      case '/readyz': {
        const ready = !rt.draining;
        return send(ready ? 200 : 503, 'application/json',
          JSON.stringify({ status: ready ? 'ready' : 'draining', policy_version: rt.current.policy.version, active: rt.active }) + '\n');
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
      case '/proxy.pac':
      case '/wpad.dat':
        return send(200, 'application/x-ns-proxy-autoconfig', (pac ??= renderPac(rt.config, rt.listenAddress)));
      default:
        return send(404, 'text/plain', 'not found\n');
    }
  });
}
