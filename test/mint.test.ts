import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect as tcpConnect, isIP, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, TLSSocket, type PeerCertificate } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initCa, type CertAuthority } from '../src/inspection/ca.js';
import { LeafMinter } from '../src/inspection/mint.js';

// Real handshakes on loopback: a first visit borrows the shared context, so what matters is the
// certificate each client actually receives when first visits interleave.
let dir: string;
let ca: CertAuthority;
let server: Server;
const arrived: Socket[] = [];
const waiters: (() => void)[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mint-'));
  ca = initCa(join(dir, 'ca'));
  server = createServer((s) => { arrived.push(s); waiters.shift()?.(); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
});
afterAll(() => {
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Opens `n` TCP connections and waits until the server holds all of them. */
async function accept(n: number): Promise<{ client: Socket; server: Socket }[]> {
  const { port } = server.address() as { port: number };
  const clients: Socket[] = [];
  for (let i = 0; i < n; i++) {
    const got = new Promise<void>((r) => waiters.push(r));
    const c = tcpConnect(port, '127.0.0.1');
    await once(c, 'connect');
    await got;
    clients.push(c);
  }
  return clients.map((client) => ({ client, server: arrived.shift()! }));
}

/** The client half of a handshake asking for `host`, verified against the interception CA. */
async function handshake(raw: Socket, host: string): Promise<PeerCertificate> {
  // An IP address is checked against the certificate but never sent as SNI (RFC 6066).
  const tls = tlsConnect({ socket: raw, host, ...(isIP(host) ? {} : { servername: host }), ca: ca.certPem });
  try {
    await once(tls, 'secureConnect');
    return tls.getPeerCertificate();
  } finally {
    tls.destroy();
  }
}

const serve = (sock: Socket, minter: LeafMinter, host: string): TLSSocket => {
  const tls = new TLSSocket(sock, { isServer: true, secureContext: minter.contextFor(host) });
  tls.on('error', () => { /* the client's destroy ends it */ });
  return tls;
};

describe('leaf minting', () => {
  it('interleaved first visits each see their own certificate', async () => {
    const minter = new LeafMinter(ca, { validityHours: 24, cacheSize: 100 });
    const hosts = ['a.example.test', 'b.example.test', '10.1.2.3'];
    const pairs = await accept(hosts.length);
    // Every server socket is made before any handshake runs: each must keep the certificate it was made with.
    const servers = pairs.map((p, i) => serve(p.server, minter, hosts[i]!));
    const certs = await Promise.all(pairs.map((p, i) => handshake(p.client, hosts[i]!)));
    expect(certs.map((c) => c.subjectaltname)).toEqual(['DNS:a.example.test', 'DNS:b.example.test', 'IP Address:10.1.2.3']);
    expect(certs.map((c) => c.raw.equals(new X509Certificate(minter.certificate(hosts[certs.indexOf(c)]!)).raw))).toEqual([true, true, true]);
    expect(minter.minted).toBe(3);
    servers.forEach((s) => s.destroy());
  });

  it('a host that comes back gets a context of its own, reused after that', async () => {
    const minter = new LeafMinter(ca, { validityHours: 24, cacheSize: 100 });
    const first = minter.contextFor('Back.Example.test');
    const second = minter.contextFor('back.example.test');
    const other = minter.contextFor('other.example.test');
    expect(second).not.toBe(first);
    expect(minter.contextFor('back.example.test')).toBe(second);
    // The shared context moved on to another host; the returning one still shows its own name.
    expect(other).toBe(first);
    const [pair] = await accept(1);
    const tls = new TLSSocket(pair!.server, { isServer: true, secureContext: minter.contextFor('back.example.test') });
    tls.on('error', () => { /* ended by the client */ });
    const cert = await handshake(pair!.client, 'back.example.test');
    expect(cert.subjectaltname).toBe('DNS:back.example.test');
    expect(minter.minted).toBe(2);
    expect(minter.hits).toBe(3);
    tls.destroy();
  });

  it('the certificate for tools is the one clients are shown, minted once', async () => {
    const minter = new LeafMinter(ca, { validityHours: 2, cacheSize: 100 });
    const pem = minter.certificate('tool.example.test');
    const [pair] = await accept(1);
    const tls = serve(pair!.server, minter, 'tool.example.test');
    const cert = await handshake(pair!.client, 'tool.example.test');
    expect(cert.raw.equals(new X509Certificate(pem).raw)).toBe(true);
    const x = new X509Certificate(pem);
    expect(x.checkIssued(ca.cert)).toBe(true);
    expect(Date.parse(x.validTo) - Date.now()).toBeLessThanOrEqual(2 * 3_600_000);
    expect(minter.minted).toBe(1);
    tls.destroy();
  });
});
