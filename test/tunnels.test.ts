import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { ProxyAgent, request } from 'undici';
import { WebSocketServer } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOrigin, type Origin } from './helpers/origin.js';
import { makeCa, makeLeaf } from './helpers/pki.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { openSocket, rawExchange, readUntil } from './helpers/raw.js';
import { cleanEnv, run } from './helpers/run.js';

let proxy: TestProxy;
let httpsOrigin: Origin;
let caFile: string;
let ca: ReturnType<typeof makeCa>;

beforeAll(async () => {
  ca = makeCa();
  const dir = mkdtempSync(join(tmpdir(), 'egress-ca-'));
  caFile = join(dir, 'ca.pem');
  writeFileSync(caFile, ca.cert);
  httpsOrigin = await startOrigin({ host: '127.0.0.3', tls: makeLeaf(ca, ['origin.test'], ['127.0.0.3']) });
  proxy = await startTestProxy({}, { connect_ports: ['1024-65535'] });
});

afterAll(async () => {
  await httpsOrigin.close();
  await proxy.close();
});

describe('CONNECT tunnels', () => {
  it('tunnels HTTPS with curl -x, end-to-end TLS to the origin (its own certificate)', async () => {
    const r = await run('curl', ['-sS', '--cacert', caFile, '-x', proxy.url, '-w', '\n%{http_code} %{ssl_verify_result}', `${httpsOrigin.url}/tls`], { env: cleanEnv() });
    expect(r.code, r.stderr).toBe(0);
    const [body, status] = r.stdout.split('\n');
    expect(JSON.parse(body!)).toMatchObject({ url: '/tls' });
    expect(status).toBe('200 0');
    const line = await proxy.waitForAccess((l) => l.kind === 'connect' && l.port === httpsOrigin.port);
    expect(line).toMatchObject({ method: 'CONNECT', status: 200, decision: 'allow', host: '127.0.0.3', resolved_ip: '127.0.0.3' });
    expect(line.bytes_in as number).toBeGreaterThan(100);
    expect(line.bytes_out as number).toBeGreaterThan(500);
  });

  it('tunnels with HTTPS_PROXY from the environment and with undici ProxyAgent', async () => {
    const r = await run('curl', ['-sS', '--cacert', caFile, `${httpsOrigin.url}/env`], { env: cleanEnv({ HTTPS_PROXY: proxy.url }) });
    expect(JSON.parse(r.stdout).url).toBe('/env');
    const agent = new ProxyAgent({ uri: proxy.url, requestTls: { ca: ca.cert } });
    try {
      const res = await request(`${httpsOrigin.url}/undici`, { dispatcher: agent });
      expect(await res.body.json()).toMatchObject({ url: '/undici' });
    } finally {
      await agent.close();
    }
  });

  it('refuses ports outside connect_ports with 403 port_not_allowed', async () => {
    const res = await rawExchange(proxy.port, 'CONNECT 127.0.0.3:443 HTTP/1.1\r\nHost: 127.0.0.3:443\r\n\r\n');
    expect(res).toMatch(/^HTTP\/1\.1 403/);
    expect(res).toMatch(/x-egress-reason: port_not_allowed/i);
    await proxy.waitForAccess((l) => l.kind === 'connect' && l.reason === 'port_not_allowed' && l.rule === 'network.connect_ports');
  });

  it('refuses a malformed CONNECT target', async () => {
    for (const target of ['127.0.0.3', 'http://127.0.0.3:443/', 'user@127.0.0.3:443', '127.0.0.3:99999']) {
      const res = await rawExchange(proxy.port, `CONNECT ${target} HTTP/1.1\r\nHost: x\r\n\r\n`);
      expect(res, target).toMatch(/^HTTP\/1\.1 400/);
      expect(res, target).toMatch(/x-egress-reason: bad_target/i);
    }
  });

  it('passes half-close through: the client FIN reaches the origin, the reply still comes back', async () => {
    const server: Server = createServer({ allowHalfOpen: true }, (s) => {
      const chunks: Buffer[] = [];
      s.on('data', (d) => chunks.push(d));
      s.on('end', () => s.end(`got:${Buffer.concat(chunks).toString()}`));
    });
    server.listen(0, '127.0.0.4');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    try {
      const s = await openSocket(proxy.port);
      s.write(`CONNECT 127.0.0.4:${port} HTTP/1.1\r\nHost: 127.0.0.4:${port}\r\n\r\n`);
      await readUntil(s, '\r\n\r\n');
      s.write('hello');
      s.end(); // half-close: we will still read
      const rest = await readUntil(s, 'got:hello');
      expect(rest).toContain('got:hello');
      s.destroy();
    } finally {
      server.close();
    }
  });

  it('relays a large download byte-exact to a slow reader (backpressure through the reused read buffer)', async () => {
    const { createHash, randomBytes } = await import('node:crypto');
    const data = randomBytes(24 << 20);
    const server = createServer((s) => s.end(data));
    server.listen(0, '127.0.0.4');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    try {
      const s = await openSocket(proxy.port);
      s.write(`CONNECT 127.0.0.4:${port} HTTP/1.1\r\nHost: x\r\n\r\n`);
      const hash = createHash('sha256');
      let headDone = false;
      let pending = Buffer.alloc(0);
      let n = 0;
      let reads = 0;
      s.on('data', (d: Buffer) => {
        if (!headDone) {
          pending = Buffer.concat([pending, d]);
          const i = pending.indexOf('\r\n\r\n');
          if (i === -1) return;
          headDone = true;
          d = pending.subarray(i + 4);
        }
        hash.update(d);
        n += d.length;
        // Stall now and then so the proxy's writes queue up and it must pause reading.
        if (++reads % 8 === 0) {
          s.pause();
          setTimeout(() => s.resume(), 5);
        }
      });
      await once(s, 'end');
      expect(n).toBe(data.length);
      expect(hash.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
      s.destroy();
    } finally {
      server.close();
    }
  });

  it('keeps an idle tunnel open only up to idle_timeout_ms', async () => {
    const short = await startTestProxy({ limits: { idle_timeout_ms: 300 } }, {});
    const server = createServer(() => undefined);
    server.listen(0, '127.0.0.4');
    await once(server, 'listening');
    const port = (server.address() as { port: number }).port;
    try {
      const s = await openSocket(short.port);
      s.write(`CONNECT 127.0.0.4:${port} HTTP/1.1\r\nHost: x\r\n\r\n`);
      await readUntil(s, '\r\n\r\n');
      const started = Date.now();
      await once(s, 'close');
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      server.close();
      await short.close();
    }
  });
});

function wsFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]);
}

describe('WebSocket over the explicit proxy', () => {
  let wss: WebSocketServer;
  let wsPort: number;
  beforeAll(async () => {
    wss = new WebSocketServer({ host: '127.0.0.5', port: 0 });
    await once(wss, 'listening');
    wsPort = (wss.address() as { port: number }).port;
    wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo:${m.toString()}`)));
  });
  afterAll(() => new Promise<void>((r) => wss.close(() => r())));

  it('becomes a tunnel after a real 101 and echoes frames', async () => {
    const s = await openSocket(proxy.port);
    s.write(
      `GET ws://127.0.0.5:${wsPort}/chat HTTP/1.1\r\nHost: 127.0.0.5:${wsPort}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    const head = await readUntil(s, '\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 101/);
    expect(head).toMatch(/sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i);
    s.write(wsFrame('ping'));
    const echoed = await readUntil(s, 'echo:ping');
    expect(echoed).toContain('echo:ping');
    s.destroy();
    const line = await proxy.waitForAccess((l) => l.kind === 'websocket' && l.status === 101);
    expect(line).toMatchObject({ decision: 'allow', host: '127.0.0.5', url: `ws://127.0.0.5:${wsPort}/chat` });
  });

  it('relays a refused upgrade as a plain response and does not tunnel', async () => {
    const plain = await startOrigin({ host: '127.0.0.6', handler: (_q, res) => { res.writeHead(426, { 'content-type': 'text/plain' }); res.end('no upgrade here'); } });
    try {
      const res = await rawExchange(
        proxy.port,
        `GET ws://127.0.0.6:${plain.port}/ HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
      expect(res).toMatch(/^HTTP\/1\.1 426/);
      expect(res).toContain('no upgrade here');
    } finally {
      await plain.close();
    }
  });

  it('refuses other upgrades (h2c)', async () => {
    const res = await rawExchange(proxy.port, `GET http://127.0.0.5:${wsPort}/ HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n`);
    expect(res).toMatch(/^HTTP\/1\.1 400/);
    expect(res).toMatch(/x-egress-reason: upgrade_not_supported/i);
  });
});

describe('TLS to the origin is the client\'s own', () => {
  it('shows the origin certificate, not a proxy one, through the tunnel', async () => {
    const s = await openSocket(proxy.port);
    s.write(`CONNECT 127.0.0.3:${httpsOrigin.port} HTTP/1.1\r\nHost: x\r\n\r\n`);
    await readUntil(s, '\r\n\r\n');
    const tls = tlsConnect({ socket: s, servername: 'origin.test', ca: ca.cert });
    await once(tls, 'secureConnect');
    expect(tls.getPeerCertificate().issuer.CN).toBe('egress-proxy test CA');
    tls.destroy();
  });
});
