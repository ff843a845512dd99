import { isIP, type Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { openTunnel } from '../egress/tunnel.js';
import type { Target } from '../egress/target.js';
import { listenerOf, type AccessRecord, type ListenerName } from '../logging/access-record.js';
import { markSocket } from '../identity/authenticate.js';
import type { Asked } from '../identity/principal.js';
import { decide } from '../policy/decide.js';
import type { ProxyRuntime } from '../runtime.js';
import { peekClientHello } from './client-hello.js';

/** Marks a decrypted client connection with the tunnel it came from. */
export const kIntercepted = Symbol('egress.intercepted');

/** What an intercepted connection knows about its tunnel. */
export interface InterceptedTunnel {
  /** The TLS server name (or the CONNECT host when the client sent none). */
  host: string;
  port: number;
  /** The client's own address, not the TLS wrapper's. */
  clientIp: string | undefined;
  /** The listener the tunnel came in through. */
  listener: ListenerName;
}

const ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection established\r\n\r\n');
const MAX_HELLO = 16 * 1024 + 5;

/**
 * A CONNECT that policy wants inspected: answer 200, read the ClientHello, decide from its server
 * name (policy again, the auto-bypass list) whether to tunnel untouched or to terminate TLS with
 * a minted certificate, and in the latter case hand the decrypted connection to the inner HTTP
 * server, where each request goes through the same pipeline as plain HTTP. The tunnel's own log
 * line is written when the client connection closes.
 */
export function interceptTunnel(rt: ProxyRuntime, rec: AccessRecord, client: Socket, head: Buffer, target: Target, ip: string, done: () => void, asked: Asked): void {
  const inspection = rt.inspection!;
  client.write(ESTABLISHED);
  rec.status = 200;
  let buf = head;
  const fail = (reason: AccessRecord['reason']): void => {
    rec.reason = reason;
    rec.decision = 'deny';
    client.destroy();
    done();
  };
  const timer = setTimeout(() => fail('request_timeout'), rt.config.limits.headers_timeout_ms);
  const examine = (): void => {
    const peek = peekClientHello(buf);
    if (peek.kind === 'need-more') {
      if (buf.length > MAX_HELLO) fail('bad_request');
      return;
    }
    clearTimeout(timer);
    client.off('data', onData);
    client.off('end', onEnd);
    if (peek.kind === 'not-tls') return fail('not_tls');
    const host = peek.sni ?? target.host;
    // Decided from the server name before any certificate is shown.
    const d = decide(rt.current.policy, {
      kind: 'connect', host, port: target.port, scheme: 'https', source: client.remoteAddress, identity: asked.principal, device: asked.attributes,
    });
    // An anonymous browser awaiting sign-in is always terminated (never bypassed): inside, it is sent to sign in.
    if (rec.signInPending) return terminate(rt, rec, client, buf, { host, port: target.port, clientIp: client.remoteAddress, listener: listenerOf(client) }, done, asked);
    if (d.action === 'deny') {
      rec.rule = d.rule;
      return fail(d.reason);
    }
    if (d.modifiers.inspect !== true || inspection.autoBypass.has(host)) {
      rec.rule = d.rule;
      openTunnel(rt, rec, client, buf, ip, target.port, done, false);
      return;
    }
    // The destination's handshake overlaps the client's: a new site's first request waits for one, not both.
    if (rt.config.inspection.preconnect && host.toLowerCase() === target.host) rt.upstream.preconnect(ip, target.port, isIP(host) === 0 ? host : undefined);
    terminate(rt, rec, client, buf, { host, port: target.port, clientIp: client.remoteAddress, listener: listenerOf(client) }, done, asked);
  };
  const onData = (d: Buffer): void => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    examine();
  };
  const onEnd = (): void => fail('bad_request');
  client.on('data', onData);
  client.once('end', onEnd);
  if (buf.length > 0) examine();
}

/** Did the client hang up on our certificate (an alert about it, or a reset right after it)? */
function refusedCertificate(err: Error & { code?: string }): boolean {
  return err.code === 'ECONNRESET' || /alert (bad certificate|unknown ca|certificate unknown|certificate unsupported|certificate required|decrypt error)/i.test(err.message);
}

function terminate(rt: ProxyRuntime, rec: AccessRecord, client: Socket, hello: Buffer, tunnel: InterceptedTunnel, done: () => void, asked: Asked): void {
  const inspection = rt.inspection!;
  // Paused, so the replayed bytes stay buffered (a flowing socket would emit them to no one);
  // TLSSocket reads them first, then takes over the handle. Resuming the plain socket would stall it.
  client.pause();
  client.unshift(hello);
  const context = inspection.minter.contextFor(tunnel.host);
  const tls = new TLSSocket(client, {
    isServer: true,
    secureContext: context,
    ALPNProtocols: ['http/1.1'],
  });
  rec.inspected = true;
  let secure = false;
  tls.once('secure', () => {
    secure = true;
    (tls as TLSSocket & { [kIntercepted]?: InterceptedTunnel })[kIntercepted] = tunnel;
    markSocket(tls, asked.principal, asked.device);
    inspection.server.emit('connection', tls);
  });
  tls.on('error', (err: Error) => {
    if (!secure && !refusedCertificate(err)) {
      // Version or cipher mismatch, plain HTTP to a TLS port...: not about our certificate.
      rec.reason = 'bad_request';
      rec.decision = 'deny';
    } else if (!secure) {
      // The client hung up on our certificate: pinning, or a client that does not trust the CA.
      const n = (inspection.refusals.get(tunnel.host) ?? 0) + 1;
      inspection.refusals.set(tunnel.host, n);
      const limit = rt.config.inspection.auto_bypass_after;
      if (limit > 0 && n >= limit && !inspection.autoBypass.has(tunnel.host)) {
        inspection.autoBypass.add(tunnel.host);
        rt.logger.log.warn({ host: tunnel.host, refusals: n }, 'clients keep refusing the interception certificate; host now bypassed');
      }
      rec.reason = 'client_tls_refused';
      rec.decision = 'error';
      rt.logger.log.info({ host: tunnel.host, err: err.message, refusals: n }, 'client refused the interception certificate');
    }
    tls.destroy();
  });
  // Cut with the other tunnels when the drain time runs out.
  rt.tunnels.add(client);
  client.once('close', () => {
    rt.tunnels.delete(client);
    rec.bytes_in = client.bytesRead;
    rec.bytes_out = client.bytesWritten;
    done();
  });
}
