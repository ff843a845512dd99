import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type Socket } from 'node:net';
import { upstreamReason } from '../errors/proxy-error.js';
import { rejectSocket } from '../errors/reject.js';
import type { AccessRecord } from '../logging/access-record.js';
import type { Target } from './target.js';
import type { ProxyRuntime } from '../runtime.js';
import { downstreamHeaders, upstreamHeaders } from './headers.js';

const STATUS_LINE = (code: number, msg: string | undefined): string => `HTTP/1.1 ${code} ${msg ?? ''}\r\n`;

function rawHead(code: number, msg: string | undefined, headers: string[]): string {
  let s = STATUS_LINE(code, msg);
  for (let i = 0; i < headers.length; i += 2) s += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${s}\r\n`;
}

/**
 * Relays a WebSocket handshake to the destination. The client connection becomes a byte tunnel
 * only after the origin really answers 101 with `Upgrade: websocket`; any other answer is passed
 * back as an ordinary response and the connection is closed.
 */
export function forwardWebSocket(
  rt: ProxyRuntime, record: AccessRecord, req: IncomingMessage, client: Socket, head: Buffer,
  target: Target, ip: string, done: () => void,
): void {
  const tls = target.scheme === 'wss' || target.scheme === 'https';
  const via = rt.config.forwarding.via ? rt.via : undefined;
  const headers = upstreamHeaders(req.rawHeaders, req.headers.connection, {
    host: target.hostHeader, via, forwardedFor: rt.config.forwarding.x_forwarded_for ? client.remoteAddress : undefined,
    keepUpgrade: true,
  });
  const upReq = (tls ? httpsRequest : httpRequest)({
    host: ip,
    port: target.port,
    method: 'GET',
    path: target.path,
    headers,
    setHost: false,
    agent: false,
    servername: tls && isIP(target.host) === 0 ? target.host : undefined,
    ...(tls ? { secureContext: rt.upstreamTls, minVersion: 'TLSv1.2' as const, rejectUnauthorized: true } : {}),
    timeout: rt.config.limits.upstream_connect_timeout_ms,
  });
  let finished = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    rt.tunnels.delete(client);
    done();
  };
  rt.tunnels.add(client);
  client.once('close', () => {
    upReq.destroy();
    finish();
  });
  client.on('error', () => upReq.destroy());
  upReq.once('timeout', () => upReq.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
  upReq.once('error', (err) => {
    if (record.status === 0) {
      record.reason = upstreamReason(err);
      record.status = 502;
      record.decision = 'error';
      rejectSocket(client, record.reason);
    } else client.destroy();
  });
  upReq.once('upgrade', (res: IncomingMessage, up: Socket, upHead: Buffer) => {
    if (res.statusCode !== 101 || String(res.headers.upgrade).toLowerCase() !== 'websocket') {
      up.destroy();
      record.reason = 'upstream_bad_response';
      record.status = 502;
      record.decision = 'error';
      rejectSocket(client, 'upstream_bad_response');
      return;
    }
    record.status = 101;
    record.firstByte();
    record.egress_node = rt.config.node_id;
    record.egress_ip = up.localAddress;
    record.decision = 'allow';
    record.reason = 'allowed';
    const out = downstreamHeaders(res.headers, via);
    out.push('connection', 'Upgrade', 'upgrade', 'websocket');
    client.write(rawHead(101, res.statusMessage, out));
    if (upHead.length > 0) client.write(upHead);
    if (head.length > 0) up.write(head);
    const idle = rt.config.limits.idle_timeout_ms;
    up.setTimeout(idle, () => { up.destroy(); client.destroy(); });
    client.setTimeout(idle, () => { up.destroy(); client.destroy(); });
    up.on('error', () => client.destroy());
    up.once('close', () => {
      record.bytes_in = up.bytesWritten;
      record.bytes_out = up.bytesRead;
      client.destroySoon();
    });
    client.pipe(up);
    up.pipe(client);
  });
  upReq.once('response', (res: IncomingMessage) => {
    // The origin declined the upgrade: relay its answer, delimited by closing the connection.
    record.status = res.statusCode ?? 502;
    record.decision = 'allow';
    record.reason = 'allowed';
    const out = downstreamHeaders(res.headers, via);
    const pairs: string[] = [];
    for (let i = 0; i < out.length; i += 2) if (out[i] !== 'content-length') pairs.push(out[i]!, out[i + 1]!);
    pairs.push('connection', 'close');
    client.write(rawHead(record.status, res.statusMessage, pairs));
    res.pipe(client);
  });
  upReq.end();
}
