import { connect, type Socket } from 'node:net';
import { upstreamReason } from '../errors/proxy-error.js';
import { rejectSocket } from '../errors/reject.js';
import type { AccessRecord } from '../logging/access-record.js';
import type { ProxyRuntime } from '../runtime.js';
import { DownstreamRelay } from './relay.js';

const ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection established\r\n\r\n');

/**
 * Opens a CONNECT tunnel to `ip`:`port` and relays raw bytes both ways. Half-close is passed
 * through (one side's FIN ends only that direction); an error or idle timeout on either side
 * ends both. The access-log line is written once both sockets have closed.
 */
export function openTunnel(
  rt: ProxyRuntime, record: AccessRecord, client: Socket, head: Buffer, ip: string, port: number, done: () => void, answer = true,
): void {
  const { limits } = rt.config;
  const relay = new DownstreamRelay(client);
  const up = connect({ host: ip, port, allowHalfOpen: true, noDelay: true, onread: relay.onread() });
  relay.attach(up);
  let connected = false;
  let open = 2;
  const closed = (): void => {
    if (--open > 0) return;
    record.bytes_in = up.bytesWritten;
    record.bytes_out = up.bytesRead;
    relay.release();
    rt.tunnels.delete(client);
    done();
  };
  rt.tunnels.add(client);
  up.setTimeout(limits.upstream_connect_timeout_ms);
  up.once('timeout', () => {
    if (!connected) {
      record.reason = 'upstream_connect_timeout';
      record.status = 504;
      record.decision = 'error';
      rejectSocket(client, 'upstream_connect_timeout');
    } else {
      client.destroy();
    }
    up.destroy();
  });
  up.once('connect', () => {
    connected = true;
    up.setTimeout(limits.idle_timeout_ms);
    client.setTimeout(limits.idle_timeout_ms);
    client.once('timeout', () => { client.destroy(); up.destroy(); });
    record.status = 200;
    record.firstByte();
    record.egress_node = rt.config.node_id;
    record.egress_ip = up.localAddress;
    // Already answered when the tunnel was opened to read the ClientHello first (inspection).
    if (answer) client.write(ESTABLISHED);
    if (head.length > 0) up.write(head);
    client.pipe(up);
    up.on('end', () => client.end());
  });
  up.on('error', (err) => {
    if (!connected) {
      record.reason = upstreamReason(err);
      record.status = 502;
      record.decision = 'error';
      rejectSocket(client, record.reason);
    } else {
      client.destroy();
    }
  });
  client.on('error', () => up.destroy());
  up.once('close', () => {
    if (connected) client.destroySoon();
    closed();
  });
  client.once('close', () => {
    if (!connected) up.destroy();
    else up.destroySoon();
    closed();
  });
}
