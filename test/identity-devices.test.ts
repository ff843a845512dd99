import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { buildCrl, parseCrlPem } from '../src/identity/crl.js';
import { deviceCaFiles, ensureDeviceCa, issueDeviceCert, loadDeviceCa, type DeviceCa } from '../src/identity/device-ca.js';
import { deviceFromCertificate } from '../src/identity/devices.js';
import { signCertificate } from '../src/inspection/x509.js';
import { createLogger } from '../src/logging/logger.js';
import { startProxy } from '../src/proxy.js';
import { CLI } from './helpers/cli.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { makeCa, makeLeaf } from './helpers/pki.js';
import { startTestProxy, type LogLine, type TestProxy } from './helpers/proxy.js';
import { cleanEnv, run } from './helpers/run.js';

let dir: string;
let caDir: string;
let ca: DeviceCa;
let proxyCaFile: string;
let serverCert: string;
let serverKey: string;
let origin: Origin;
let proxy: TestProxy;
let cliIssue: { code: number; stdout: string; stderr: string };

/** Certificate and key files of a device, by name. */
const certs = new Map<string, { cert: string; key: string }>();

function writeDevice(name: string, issued: { certPem: string; keyPem: string }): void {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}-key.pem`);
  writeFileSync(cert, issued.certPem);
  writeFileSync(key, issued.keyPem, { mode: 0o600 });
  certs.set(name, { cert, key });
}

const POLICY = (extraRules: object[] = []): string => stringify({
  version: 'v1',
  default: 'deny',
  network: { allow_ranges: ['127.0.0.2/31'], connect_ports: ['1-65535'], http_ports: ['1-65535'] },
  devices: { managed: { managed: true } },
  rules: [...extraRules, { id: 'managed-devices', action: 'allow', when: { devices: ['managed'] } }],
});

const INVENTORY = stringify({
  version: 'v1',
  devices: {
    'laptop-7': { managed: true, os: 'macos', os_version: '14.5', owner: 'alice' },
    'laptop-8': { managed: true, os: 'linux' },
  },
});

/** curl through the HTTPS (device) listener of `port`, with the named device's certificate if any. */
function curlDevice(port: number, device: string | undefined, url: string, extra: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  const c = device ? certs.get(device)! : undefined;
  return run('curl', [
    '-sS', '--max-time', '10', '--proxy', `https://127.0.0.1:${port}`, '--proxy-cacert', proxyCaFile,
    ...(c ? ['--proxy-cert', c.cert, '--proxy-key', c.key] : []), '-o', '-', '-w', '\n%{http_code}', ...extra, url,
  ], { env: cleanEnv() });
}

async function waitForLine(p: { lines(): LogLine[] }, pred: (l: LogLine) => boolean, timeoutMs = 8000): Promise<LogLine> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const hit = p.lines().find(pred);
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`no matching log line; have:\n${p.lines().map((l) => JSON.stringify(l)).join('\n')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const devicePort = (): number => proxy.running.deviceAddress!.port;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'egress-devices-'));
  caDir = join(dir, 'device-ca');
  // The device CA and the first device come from the real CLI.
  cliIssue = await run(process.execPath, [CLI, 'devices', 'issue', '--id', 'laptop-7', '--dir', caDir, '--out', dir], { env: cleanEnv() });
  expect(cliIssue.stderr).toBe('');
  certs.set('laptop-7', { cert: join(dir, 'laptop-7.pem'), key: join(dir, 'laptop-7-key.pem') });
  ca = loadDeviceCa(caDir);
  const now = Date.now();
  writeDevice('laptop-8', issueDeviceCert(ca, 'laptop-8'));
  writeDevice('stranger', issueDeviceCert(ca, 'stranger'));
  writeDevice('stolen', issueDeviceCert(ca, 'stolen'));
  writeDevice('expired', issueDeviceCert(ca, 'laptop-7', { notBefore: new Date(now - 10 * 86_400_000), notAfter: new Date(now - 86_400_000) }));
  writeDevice('other-ca', issueDeviceCert(ensureDeviceCa(join(dir, 'other-ca')).ca, 'laptop-7'));
  // The CRL in force at start revokes "stolen", through the real CLI.
  const revoke = await run(process.execPath, [CLI, 'devices', 'revoke', '--cert', certs.get('stolen')!.cert, '--dir', caDir], { env: cleanEnv() });
  expect(revoke.code, revoke.stderr).toBe(0);
  // The listener's own certificate, from a CA the clients trust.
  const proxyCa = makeCa('device listener CA');
  const leaf = makeLeaf(proxyCa, ['localhost'], ['127.0.0.1']);
  proxyCaFile = join(dir, 'proxy-ca.pem');
  serverCert = join(dir, 'server.pem');
  serverKey = join(dir, 'server-key.pem');
  writeFileSync(proxyCaFile, proxyCa.cert);
  writeFileSync(serverCert, leaf.cert);
  writeFileSync(serverKey, leaf.key, { mode: 0o600 });
  origin = await startOrigin({ host: '127.0.0.2' });
  proxy = await startTestProxy({
    identity: { revalidate_s: 1 },
    devices: {
      listen: '127.0.0.1:0', ca_file: deviceCaFiles(caDir).cert, crl_file: deviceCaFiles(caDir).crl,
      server_cert_file: serverCert, server_key_file: serverKey,
    },
  });
  writeFileSync(join(proxy.dir, 'policies', 'test.yaml'), POLICY());
  expect(await proxy.running.reload()).toBe(true);
  // Written after start: the directory picks the inventory up when it appears.
  writeFileSync(join(proxy.dir, 'policies', 'devices.yaml'), INVENTORY);
  const end = Date.now() + 8000;
  while (proxy.running.runtime.identity.devices?.attributes('laptop-7') === undefined && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
}, 60_000);

afterAll(async () => {
  await proxy?.close();
  await origin?.close();
});

describe('device (mTLS) listener', () => {
  it('admits a managed device: 200, and the access line names the device and its trust', async () => {
    const r = await curlDevice(devicePort(), 'laptop-7', `${origin.url}/hello`);
    expect(r.stderr).toBe('');
    expect(r.stdout.endsWith('\n200')).toBe(true);
    const line = await proxy.waitForAccess((l) => l.url === `${origin.url}/hello`);
    expect(line).toMatchObject({ decision: 'allow', status: 200, client_ip: '127.0.0.1', device_id: 'laptop-7', device_trust: 'managed', rule: 'managed-devices' });
  });

  it('carries the device into CONNECT tunnels (curl -p)', async () => {
    const r = await curlDevice(devicePort(), 'laptop-7', `${origin.url}/tunnelled`, ['-p']);
    expect(r.stdout.endsWith('\n200')).toBe(true);
    const line = await proxy.waitForAccess((l) => l.type === 'access' && l.host === '127.0.0.2' && l.url === undefined && l.device_id === 'laptop-7');
    expect(line).toMatchObject({ decision: 'allow', device_trust: 'managed' });
    expect(origin.seen.some((s) => s.url === '/tunnelled')).toBe(true);
  });

  it('serves Node clients too: undici ProxyAgent with proxyTls client certificate', async () => {
    const { fetch, ProxyAgent } = await import('undici');
    const c = certs.get('laptop-7')!;
    const tunnels = (): number => proxy.access().filter((l) => l.kind === 'connect' && l.device_id === 'laptop-7').length;
    const before = tunnels();
    const dispatcher = new ProxyAgent({
      uri: `https://127.0.0.1:${devicePort()}`,
      proxyTls: { ca: readFileSync(proxyCaFile, 'utf8'), cert: readFileSync(c.cert, 'utf8'), key: readFileSync(c.key, 'utf8'), servername: 'localhost' },
    });
    try {
      const res = await fetch(`${origin.url}/undici`, { dispatcher });
      expect(res.status).toBe(200);
      await res.text();
    } finally {
      await dispatcher.close();
    }
    expect(origin.seen.some((r) => r.url === '/undici')).toBe(true);
    // undici tunnels every request (CONNECT); the tunnel's line is written when it closes.
    const end = Date.now() + 5000;
    while (tunnels() === before && Date.now() < end) await new Promise((r) => setTimeout(r, 25));
    expect(tunnels()).toBe(before + 1);
  });

  it('carries WebSocket upgrades (absolute-form) with the device', async () => {
    const { WebSocketServer } = await import('ws');
    const wss = new WebSocketServer({ host: '127.0.0.2', port: 0 });
    await once(wss, 'listening');
    const port = (wss.address() as { port: number }).port;
    const c = certs.get('laptop-7')!;
    const sock: TLSSocket = connect({ host: '127.0.0.1', port: devicePort(), servername: 'localhost', ca: readFileSync(proxyCaFile), cert: readFileSync(c.cert), key: readFileSync(c.key) });
    try {
      await once(sock, 'secureConnect');
      let got = '';
      sock.on('data', (d: Buffer) => { got += d.toString('latin1'); });
      sock.write(`GET http://127.0.0.2:${port}/live HTTP/1.1\r\nHost: 127.0.0.2:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
      const end = Date.now() + 5000;
      while (!got.includes('\r\n\r\n') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(got).toMatch(/^HTTP\/1\.1 101 /);
      expect(got).toMatch(/sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i);
    } finally {
      sock.destroy();
      wss.close();
    }
    const line = await proxy.waitForAccess((l) => l.kind === 'websocket' && String(l.url).includes('/live'));
    expect(line).toMatchObject({ status: 101, device_id: 'laptop-7', device_trust: 'managed' });
  });

  it('denies a valid device that is not in the inventory (no trust level)', async () => {
    const r = await curlDevice(devicePort(), 'stranger', `${origin.url}/stranger`);
    expect(r.stdout.endsWith('\n403')).toBe(true);
    const line = await proxy.waitForAccess((l) => l.url === `${origin.url}/stranger`);
    expect(line).toMatchObject({ decision: 'deny', rule: 'default', device_id: 'stranger' });
    expect(origin.seen.some((s) => s.url === '/stranger')).toBe(false);
  });

  it('refuses an expired certificate at the TLS layer and logs device_cert_expired', async () => {
    const r = await curlDevice(devicePort(), 'expired', `${origin.url}/expired`);
    expect(r.code).not.toBe(0);
    const line = await waitForLine(proxy, (l) => l.msg === 'device connection refused' && l.reason === 'device_cert_expired');
    expect(line).toMatchObject({ device_id: 'laptop-7', error: 'CERT_HAS_EXPIRED' });
    expect(origin.seen.some((s) => s.url === '/expired')).toBe(false);
  });

  it('refuses a certificate from another CA (device_cert_untrusted)', async () => {
    const r = await curlDevice(devicePort(), 'other-ca', `${origin.url}/other`);
    expect(r.code).not.toBe(0);
    await waitForLine(proxy, (l) => l.msg === 'device connection refused' && l.reason === 'device_cert_untrusted');
    expect(origin.seen.some((s) => s.url === '/other')).toBe(false);
  });

  it('refuses a revoked certificate (CRL) with device_revoked', async () => {
    const r = await curlDevice(devicePort(), 'stolen', `${origin.url}/stolen`);
    expect(r.code).not.toBe(0);
    const line = await waitForLine(proxy, (l) => l.msg === 'device connection refused' && l.reason === 'device_revoked' && l.device_id === 'stolen');
    expect(line.error).toBe('CERT_REVOKED');
    expect(origin.seen.some((s) => s.url === '/stolen')).toBe(false);
  });

  it('completes the handshake with openssl s_client and a valid certificate', async () => {
    const c = certs.get('laptop-7')!;
    const req = `GET ${origin.url}/s_client HTTP/1.1\r\nHost: 127.0.0.2:${origin.port}\r\nConnection: close\r\n\r\n`;
    const r = await run('openssl', ['s_client', '-connect', `127.0.0.1:${devicePort()}`, '-CAfile', proxyCaFile, '-cert', c.cert, '-key', c.key,
      '-verify_return_error', '-brief', '-ign_eof'], { input: req });
    expect(r.stderr).toContain('CONNECTION ESTABLISHED');
    expect(r.stdout).toContain('HTTP/1.1 200 OK');
  });

  it('treats a client without a certificate as device "unknown": policy can deny or allow it', async () => {
    const denyUnknown = { id: 'no-unknown-devices', action: 'deny', when: { devices: ['unknown'] } };
    writeFileSync(join(proxy.dir, 'policies', 'test.yaml'), POLICY([denyUnknown]));
    expect(await proxy.running.reload()).toBe(true);
    const denied = await curlDevice(devicePort(), undefined, `${origin.url}/anon-1`);
    expect(denied.stdout.endsWith('\n403')).toBe(true);
    expect(await proxy.waitForAccess((l) => l.url === `${origin.url}/anon-1`)).toMatchObject({ decision: 'deny', rule: 'no-unknown-devices' });
    writeFileSync(join(proxy.dir, 'policies', 'test.yaml'), POLICY([{ ...denyUnknown, id: 'unknown-ok', action: 'allow' }]));
    expect(await proxy.running.reload()).toBe(true);
    const allowed = await curlDevice(devicePort(), undefined, `${origin.url}/anon-2`);
    expect(allowed.stdout.endsWith('\n200')).toBe(true);
    const line = await proxy.waitForAccess((l) => l.url === `${origin.url}/anon-2`);
    expect(line).toMatchObject({ decision: 'allow', rule: 'unknown-ok' });
    expect(line.device_id).toBeUndefined();
    writeFileSync(join(proxy.dir, 'policies', 'test.yaml'), POLICY());
    expect(await proxy.running.reload()).toBe(true);
  });

  it('keeps the last good inventory when the file breaks, and logs where', async () => {
    const file = join(proxy.dir, 'policies', 'devices.yaml');
    writeFileSync(file, 'version: v1\ndevices:\n  laptop-7: [not, a, map]\n');
    const err = await waitForLine(proxy, (l) => l.msg === 'device inventory invalid; keeping the last good one');
    expect(String((err.errors as string[])[0])).toMatch(/devices\.yaml:3:\d+ /);
    expect(proxy.running.runtime.identity.devices?.attributes('laptop-7')).toMatchObject({ managed: true });
    writeFileSync(file, INVENTORY);
  });

  it('ends an open CONNECT tunnel within revalidate_s once the CRL revokes its device', async () => {
    const c = certs.get('laptop-8')!;
    const sock: TLSSocket = connect({ host: '127.0.0.1', port: devicePort(), ca: readFileSync(proxyCaFile), cert: readFileSync(c.cert), key: readFileSync(c.key) });
    await once(sock, 'secureConnect');
    let got = '';
    sock.on('data', (d: Buffer) => { got += d.toString(); });
    const closed = once(sock, 'close');
    sock.write(`CONNECT 127.0.0.2:${origin.port} HTTP/1.1\r\nHost: 127.0.0.2:${origin.port}\r\n\r\n`);
    const until = async (text: string): Promise<void> => {
      const end = Date.now() + 5000;
      while (!got.includes(text) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(got).toContain(text);
    };
    await until('200 Connection established');
    sock.write(`GET /in-tunnel HTTP/1.1\r\nHost: 127.0.0.2:${origin.port}\r\n\r\n`);
    await until('"url":"/in-tunnel"');
    const revoke = await run(process.execPath, [CLI, 'devices', 'revoke', '--cert', c.cert, '--dir', caDir], { env: cleanEnv() });
    expect(revoke.code, revoke.stderr).toBe(0);
    const timeout = new Promise<'open'>((r) => setTimeout(() => r('open'), 10_000).unref());
    expect(await Promise.race([closed.then(() => 'closed' as const), timeout])).toBe('closed');
    await waitForLine(proxy, (l) => l.msg === 'device CRL reloaded');
    const again = await curlDevice(devicePort(), 'laptop-8', `${origin.url}/after-revoke`);
    expect(again.code).not.toBe(0);
    await waitForLine(proxy, (l) => l.msg === 'device connection refused' && l.device_id === 'laptop-8' && l.reason === 'device_revoked');
  });

  it('keeps the last good CRL when the file breaks', async () => {
    const crlFile = deviceCaFiles(caDir).crl;
    const good = readFileSync(crlFile, 'utf8');
    writeFileSync(crlFile, '-----BEGIN X509 CRL-----\nbm90IGEgY3Js\n-----END X509 CRL-----\n');
    await waitForLine(proxy, (l) => l.msg === 'device CRL not reloaded; keeping the last good one');
    expect(proxy.running.runtime.identity.devices?.isRevoked(new X509Certificate(readFileSync(certs.get('stolen')!.cert)).serialNumber)).toBe(true);
    const r = await curlDevice(devicePort(), 'laptop-7', `${origin.url}/after-broken-crl`);
    expect(r.stdout.endsWith('\n200')).toBe(true);
    writeFileSync(crlFile, good);
  });
});

describe('devices.require_certificate', () => {
  it('refuses a client without a certificate at the handshake (device_required), and still refuses bad ones', async () => {
    const strict = await startTestProxy({
      devices: { listen: '127.0.0.1:0', ca_file: deviceCaFiles(caDir).cert, require_certificate: true, server_cert_file: serverCert, server_key_file: serverKey },
    });
    try {
      const port = strict.running.deviceAddress!.port;
      const none = await curlDevice(port, undefined, `${origin.url}/none`);
      expect(none.code).not.toBe(0);
      expect(none.stderr).toMatch(/certificate required/);
      await waitForLine(strict, (l) => l.msg === 'device connection refused' && l.reason === 'device_required');
      const expired = await curlDevice(port, 'expired', `${origin.url}/expired-strict`);
      expect(expired.code).not.toBe(0);
      await waitForLine(strict, (l) => l.msg === 'device connection refused' && l.reason === 'device_cert_expired');
      const ok = await curlDevice(port, 'laptop-7', `${origin.url}/strict-ok`);
      expect(ok.stdout.endsWith('\n200')).toBe(true);
    } finally {
      await strict.close();
    }
  });

  it('refuses to start a device listener without a device CA or a server certificate', async () => {
    await expect(startTestProxy({ devices: { listen: '127.0.0.1:0', server_cert_file: serverCert, server_key_file: serverKey } })).rejects.toThrow(/devices\.ca_file/);
    await expect(startTestProxy({ devices: { listen: '127.0.0.1:0', ca_file: deviceCaFiles(caDir).cert } })).rejects.toThrow(/server certificate/);
  });
});

describe('devices CLI', () => {
  it('`devices issue` writes a certificate the CA vouches for and a 0600 key, and prints the curl line', () => {
    expect(cliIssue.code).toBe(0);
    expect(cliIssue.stdout).toContain('--proxy-cert');
    expect(statSync(certs.get('laptop-7')!.key).mode & 0o777).toBe(0o600);
    expect(statSync(deviceCaFiles(caDir).key).mode & 0o777).toBe(0o600);
    const cert = new X509Certificate(readFileSync(certs.get('laptop-7')!.cert));
    expect(cert.verify(ca.cert.publicKey)).toBe(true);
    expect(cert.subjectAltName).toBe('URI:spiffe://egress-proxy.dev/device/laptop-7');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
  });

  it('rejects bad input with a clear message', async () => {
    const badId = await run(process.execPath, [CLI, 'devices', 'issue', '--id', '../x', '--dir', caDir, '--out', dir], { env: cleanEnv() });
    expect(badId.code).not.toBe(0);
    expect(badId.stderr).toContain('device id');
    const again = await run(process.execPath, [CLI, 'devices', 'issue', '--id', 'laptop-7', '--dir', caDir, '--out', dir], { env: cleanEnv() });
    expect(again.stderr).toContain('--force');
    const both = await run(process.execPath, [CLI, 'devices', 'revoke', '--dir', caDir], { env: cleanEnv() });
    expect(both.code).toBe(2);
    const badSerial = await run(process.execPath, [CLI, 'devices', 'revoke', '--serial', 'xyz', '--dir', caDir], { env: cleanEnv() });
    expect(badSerial.stderr).toContain('not a hexadecimal serial');
    const help = await run(process.execPath, [CLI, 'devices', 'issue', '--help'], { env: cleanEnv() });
    expect(help.stdout).toContain('--days');
  });

  it('writes a CRL that OpenSSL reads and enforces', async () => {
    const f = deviceCaFiles(caDir);
    const check = await run('openssl', ['verify', '-crl_check', '-CAfile', f.cert, '-CRLfile', f.crl, certs.get('stolen')!.cert]);
    expect(check.stdout + check.stderr).toContain('certificate revoked');
    const fine = await run('openssl', ['verify', '-crl_check', '-CAfile', f.cert, '-CRLfile', f.crl, certs.get('laptop-7')!.cert]);
    expect(fine.stdout).toContain(': OK');
  });
});

describe('device identity', () => {
  const withSan = (altNames: object[], cn = 'cn-name'): X509Certificate => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    return new X509Certificate(signCertificate({
      subject: [{ name: 'commonName', value: cn }], issuer: [{ name: 'commonName', value: 'x' }], publicKey: privateKey,
      notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 60_000),
      extensions: altNames.length ? [{ name: 'subjectAltName', altNames }] : [],
    }, ca.key));
  };

  it('takes <name> of spiffe://<domain>/device/<name>, else the whole URI, else the CN', () => {
    expect(deviceFromCertificate(withSan([{ type: 6, value: 'spiffe://acme/device/laptop-7' }]))?.id).toBe('laptop-7');
    expect(deviceFromCertificate(withSan([{ type: 6, value: 'spiffe://acme/workload/api' }]))?.id).toBe('spiffe://acme/workload/api');
    expect(deviceFromCertificate(withSan([{ type: 2, value: 'host.example' }]))?.id).toBe('cn-name');
    const d = deviceFromCertificate(withSan([]))!;
    expect(d.id).toBe('cn-name');
    expect(d.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(d.serial).toMatch(/^[0-9A-F]+$/);
    expect(d.notAfter).toBeGreaterThan(Date.now());
  });

  it('rejects a CRL that no device CA signed', () => {
    const other = ensureDeviceCa(join(dir, 'other-ca')).ca;
    const pem = buildCrl(other.cert, other.key, { revoked: new Map([['0A', new Date()]]), number: 1n, thisUpdate: new Date(), nextUpdate: new Date(Date.now() + 86_400_000) });
    expect(() => parseCrlPem(pem, [ca.cert])).toThrow(/not signed/);
    expect(parseCrlPem(pem, [other.cert])[0]!.revoked.has('0A')).toBe(true);
    expect(() => parseCrlPem('nothing here', [ca.cert])).toThrow(/no "-----BEGIN X509 CRL-----"/);
  });
});

describe('dev mode', () => {
  it('listens on 127.0.0.1:3129 with a dev device CA, and skips with a warning when the port is taken', async () => {
    const base = mkdtempSync(join(tmpdir(), 'egress-devices-dev-'));
    mkdirSync(join(base, 'policies'));
    writeFileSync(join(base, 'policies', 'p.yaml'), stringify({ version: 'v1', default: 'allow', network: { allow_ranges: ['127.0.0.2/31'], http_ports: ['1-65535'], connect_ports: ['1-65535'] } }));
    const configFile = join(base, 'config.yaml');
    writeFileSync(configFile, stringify({ listen: '127.0.0.1:0', admin: '127.0.0.1:0', policies: 'policies', inspection: { ca_dir: 'certs' } }));
    const start = async (): Promise<{ running: Awaited<ReturnType<typeof startProxy>>; lines(): LogLine[] }> => {
      const logFile = join(base, `proxy-${Date.now()}.log`);
      const logger = createLogger({ level: 'info', nodeId: 'dev', destination: logFile });
      const running = await startProxy(loadConfig({ config: configFile }, {}), logger, { dev: true });
      return { running, lines: () => { logger.flush(); return readFileSync(logFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLine); } };
    };
    // Taken by someone else: the proxy starts without its device listener.
    const blocker: Server = createServer();
    blocker.listen(3129, '127.0.0.1');
    await once(blocker, 'listening');
    const skipped = await start();
    try {
      expect(skipped.running.deviceAddress).toBeUndefined();
      await waitForLine(skipped, (l) => l.msg === 'dev device listener not started: the port is in use');
    } finally {
      await skipped.running.drain();
      blocker.close();
      await once(blocker, 'close');
    }
    const dev = await start();
    try {
      expect(dev.running.deviceAddress?.port).toBe(3129);
      const files = deviceCaFiles(join(base, 'certs', 'devices'));
      expect(statSync(files.key).mode & 0o777).toBe(0o600);
      const issued = await run(process.execPath, [CLI, 'devices', 'issue', '--id', 'dev-laptop', '--dir', join(base, 'certs', 'devices'), '--out', base], { env: cleanEnv() });
      expect(issued.code, issued.stderr).toBe(0);
      // The listener's certificate comes from the dev interception CA (certs/ca.pem).
      const r = await run('curl', ['-sS', '--max-time', '10', '--proxy', 'https://127.0.0.1:3129', '--proxy-cacert', join(base, 'certs', 'ca.pem'),
        '--proxy-cert', join(base, 'dev-laptop.pem'), '--proxy-key', join(base, 'dev-laptop-key.pem'), '-o', '/dev/null', '-w', '%{http_code}', `${origin.url}/dev`], { env: cleanEnv() });
      expect(r.stdout).toBe('200');
      const line = await waitForLine(dev, (l) => l.type === 'access' && l.url === `${origin.url}/dev`);
      expect(line.device_id).toBe('dev-laptop');
    } finally {
      await dev.running.drain();
    }
  }, 30_000);
});
