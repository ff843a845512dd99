import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { ProxyRuntime } from '../runtime.js';

/**
 * A reserved name (.invalid never resolves, RFC 2606) that the proxy answers itself, so
 * `egress-proxy doctor` can prove a client's traffic really passes through this proxy.
 */
export const PROBE_HOST = 'egress-proxy.invalid';

function probeBody(rt: ProxyRuntime, clientIp: string | undefined, kind: string): string {
  return JSON.stringify({ proxy: 'egress-proxy', node: rt.config.node_id, client_ip: clientIp, via: kind }) + '\n';
}

/** Answers a plain-HTTP probe request. */
export function answerProbe(rt: ProxyRuntime, res: ServerResponse, clientIp: string | undefined): void {
  const body = probeBody(rt, clientIp, 'http');
  res.writeHead(200, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-egress-node': rt.config.node_id,
  });
  res.end(body);
}

/** Answers a CONNECT probe: a 200 naming the node, then closes (there is nothing to tunnel to). */
export function answerConnectProbe(rt: ProxyRuntime, socket: Socket): void {
  socket.end(`HTTP/1.1 200 Connection established\r\nX-Egress-Node: ${rt.config.node_id}\r\n\r\n`);
}
