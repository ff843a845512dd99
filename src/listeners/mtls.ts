import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import { hostname } from 'node:os';
import { isIP, type AddressInfo, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { createServer, type SecureContextOptions, type TLSSocket } from 'node:tls';
import { parseHostPort } from '../config/fields.js';
import { markSocket } from '../identity/authenticate.js';
import { markListener } from '../logging/access-record.js';
import { deviceCaFiles, ensureDeviceCa } from '../identity/device-ca.js';
import { deviceFromCertificate, FileDeviceDirectory, type CrlFeed } from '../identity/devices.js';
import { ANONYMOUS } from '../identity/principal.js';
import { signCertificate, subjectName } from '../inspection/x509.js';
import type { ProxyRuntime } from '../runtime.js';
import { createExplicitServer } from './explicit.js';

/** The dev-mode address of the device listener. */
export const DEV_DEVICE_LISTEN = '127.0.0.1:3129';

/** A running device (mTLS) listener. */
export interface DeviceListener {
  address: AddressInfo;
  /** Stops accepting new connections (drain). */
  stopAccepting(): void;
  closeIdle(): void;
  /** Ends every connection, mid-handshake or not, and stops timers. */
  closeAll(): void;
}

/** Why a presented certificate was refused: the reason id logged for OpenSSL's verify error. */
function refusalReason(code: string | undefined): 'device_cert_expired' | 'device_revoked' | 'device_cert_untrusted' {
  if (code === 'CERT_HAS_EXPIRED') return 'device_cert_expired';
  if (code === 'CERT_REVOKED') return 'device_revoked';
  return 'device_cert_untrusted';
}

/** OpenSSL's verify error code on a server-side socket (typed as an Error, set as a string). */
function authError(sock: TLSSocket): string | undefined {
  const e = sock.authorizationError as unknown;
  if (e === undefined || e === null) return undefined;
  return typeof e === 'string' ? e : (e as Error).message;
}

interface ServerCert {
  cert: string;
  key: string;
  /** Re-minted when this returns true (minted leaves expire; configured files are the admin's). */
  stale(): boolean;
  renew(): void;
}

/** The listener's own certificate: the configured files, else a leaf from the interception CA. */
function serverCertificate(rt: ProxyRuntime, host: string): ServerCert | undefined {
  const cfg = rt.config.devices;
  if ((cfg.server_cert_file === undefined) !== (cfg.server_key_file === undefined)) {
    throw new Error('devices.server_cert_file and devices.server_key_file go together');
  }
  if (cfg.server_cert_file !== undefined && cfg.server_key_file !== undefined) {
    return {
      cert: readFileSync(resolve(rt.config.baseDir, cfg.server_cert_file), 'utf8'),
      key: readFileSync(resolve(rt.config.baseDir, cfg.server_key_file), 'utf8'),
      stale: () => false, renew: () => undefined,
    };
  }
  const inspection = rt.inspection;
  if (!inspection) return undefined;
  const hours = rt.config.inspection.leaf_validity_hours;
  // A wildcard address has no name of its own: the names clients are likely to use.
  const names = host === '0.0.0.0' || host === '::' ? ['localhost', '127.0.0.1', '::1', hostname()] : [host];
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const issuer = subjectName(inspection.ca.certPem);
  let mintedAt = 0;
  const mint = (): string => {
    mintedAt = Date.now();
    return signCertificate({
      subject: [{ name: 'commonName', value: names[0]!.slice(0, 64) }],
      issuer,
      publicKey: privateKey,
      notBefore: new Date(mintedAt - 3_600_000),
      notAfter: new Date(mintedAt + hours * 3_600_000),
      extensions: [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        { name: 'subjectAltName', altNames: names.map((n) => (isIP(n) ? { type: 7, ip: n } : { type: 2, value: n })) },
      ],
    }, inspection.ca.key);
  };
  // An intermediate interception CA must be sent along; a root is in the clients' stores already.
  const chain = inspection.ca.cert.issuer === inspection.ca.cert.subject ? '' : inspection.ca.certPem;
  const sc: ServerCert = {
    cert: mint() + chain, key: keyPem,
    stale: () => Date.now() - mintedAt > (hours * 3_600_000) / 2,
    renew: () => { sc.cert = mint() + chain; },
  };
  return sc;
}

/**
 * Starts the HTTPS proxy listener that asks clients for a device certificate (mTLS), when
 * `devices.listen` is set (dev mode: 127.0.0.1:3129 with a dev device CA, skipped if the port is
 * taken). Verified connections are marked with their device and handed to an explicit-proxy
 * server, so absolute-form HTTP, CONNECT and WebSocket work as on the plain listener. A presented
 * certificate that fails verification (expired, other CA, revoked) is always refused; a client
 * without one is device "unknown" unless `devices.require_certificate`.
 */
export async function startDeviceListener(rt: ProxyRuntime, o: { dev: boolean }): Promise<DeviceListener | undefined> {
  const cfg = rt.config.devices;
  const listen = cfg.listen ?? (o.dev ? DEV_DEVICE_LISTEN : undefined);
  if (listen === undefined) return undefined;
  const { host, port } = parseHostPort(listen)!;
  const log = rt.logger.log;
  const directory = rt.identity.devices instanceof FileDeviceDirectory ? rt.identity.devices : undefined;
  let caPem: string;
  if (cfg.ca_file !== undefined) {
    caPem = readFileSync(resolve(rt.config.baseDir, cfg.ca_file), 'utf8');
  } else if (o.dev) {
    const devDir = join(rt.config.caDir, 'devices');
    const { ca, created } = ensureDeviceCa(devDir);
    if (created) log.info({ ca: ca.certFile }, 'created a dev device CA; issue device certificates with `egress-proxy devices issue`');
    caPem = ca.certPem;
    if (cfg.crl_file === undefined) directory?.useCrl(deviceCaFiles(devDir).crl, caPem, true);
  } else {
    throw new Error('devices.listen needs devices.ca_file (the CA bundle device certificates chain to)');
  }
  const server = serverCertificate(rt, host);
  if (!server) {
    const msg = 'devices.listen needs a server certificate: set devices.server_cert_file and devices.server_key_file, or enable inspection (its CA mints one)';
    if (cfg.listen !== undefined) throw new Error(msg);
    log.warn(msg);
    return undefined;
  }
  const feed: CrlFeed | undefined = directory;
  const contextOptions = (): SecureContextOptions => {
    const crl = feed?.crlPems();
    return { cert: server.cert, key: server.key, ca: caPem, minVersion: 'TLSv1.2', ...(crl ? { crl } : {}) };
  };
  const tls = createServer({
    ...contextOptions(),
    requestCert: true,
    // Required: OpenSSL refuses a client without a certificate with a "certificate required" alert.
    rejectUnauthorized: cfg.require_certificate,
    ALPNProtocols: ['http/1.1'],
    handshakeTimeout: rt.config.limits.headers_timeout_ms,
  });
  const refresh = (why: string): void => {
    try {
      tls.setSecureContext(contextOptions());
    } catch (err) {
      log.error({ err: (err as Error).message, why }, 'device listener TLS settings not updated; keeping the previous ones');
    }
  };
  feed?.onCrlChange(() => refresh('crl'));
  const renewal = setInterval(() => {
    if (server.stale()) {
      server.renew();
      refresh('server certificate renewed');
    }
  }, Math.min(3_600_000, (rt.config.inspection.leaf_validity_hours * 3_600_000) / 4));
  renewal.unref();
  const inner: HttpServer = createExplicitServer(rt);
  const open = new Set<Socket>();
  tls.on('connection', (raw: Socket) => {
    open.add(raw);
    raw.once('close', () => open.delete(raw));
  });
  const refuse = (sock: TLSSocket, reason: string, detail: Record<string, unknown>): void => {
    log.info({ reason, client_ip: sock.remoteAddress, ...detail }, 'device connection refused');
    sock.destroy();
  };
  tls.on('secureConnection', (sock: TLSSocket) => {
    const cert = sock.getPeerX509Certificate();
    if (cert) {
      const device = deviceFromCertificate(cert);
      const code = authError(sock);
      if (!sock.authorized) return refuse(sock, refusalReason(code), { device_id: device?.id, serial: cert.serialNumber, error: code });
      if (!device) return refuse(sock, 'device_cert_untrusted', { serial: cert.serialNumber, error: 'the certificate names no device (no URI SAN, no CN)' });
      if (rt.identity.devices?.isRevoked(device.serial)) return refuse(sock, 'device_revoked', { device_id: device.id, serial: device.serial });
      markSocket(sock, ANONYMOUS, device);
      // Tracked from the handshake on, so a revocation ends it even before its first request.
      rt.identity.admitted.track(sock, ANONYMOUS, device);
    }
    markListener(sock, 'devices');
    inner.emit('connection', sock);
  });
  tls.on('tlsClientError', (err: Error, sock: TLSSocket) => {
    // With require_certificate, Node ends a failed verification itself; the certificate is gone by now.
    const code = authError(sock);
    if (code) log.info({ reason: refusalReason(code), client_ip: sock.remoteAddress, error: code }, 'device connection refused');
    else if (/did not return a certificate/.test(err.message)) log.info({ reason: 'device_required', client_ip: sock.remoteAddress }, 'device connection refused');
    else log.debug({ client_ip: sock.remoteAddress, err: err.message }, 'device listener handshake failed');
  });
  tls.listen({ host, port, backlog: 2048 });
  try {
    await once(tls, 'listening');
  } catch (err) {
    clearInterval(renewal);
    if (cfg.listen === undefined && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      log.warn({ listen }, 'dev device listener not started: the port is in use');
      return undefined;
    }
    throw err;
  }
  const address = tls.address() as AddressInfo;
  log.info({ devices: address, require_certificate: cfg.require_certificate }, 'device (mTLS) listener ready');
  return {
    address,
    stopAccepting: () => tls.close(),
    closeIdle: () => inner.closeIdleConnections(),
    closeAll: () => {
      clearInterval(renewal);
      inner.closeAllConnections();
      for (const s of open) s.destroy();
    },
  };
}
