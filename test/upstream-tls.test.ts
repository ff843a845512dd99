import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCli, writeSetup, type CliProxy } from './helpers/cli.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { makeCa, makeLeaf } from './helpers/pki.js';
import { rawExchange } from './helpers/raw.js';

// Absolute-form https:// requests make the proxy itself speak TLS to the origin: it must verify.
let proxy: CliProxy;
let trusted: Origin;
let untrusted: Origin;
let wrongName: Origin;

beforeAll(async () => {
  const ca = makeCa('trusted test CA');
  const rogue = makeCa('rogue CA');
  const dir = mkdtempSync(join(tmpdir(), 'egress-tls-'));
  writeFileSync(join(dir, 'ca.pem'), ca.cert);
  trusted = await startOrigin({ host: '127.0.0.3', tls: makeLeaf(ca, ['origin.test'], ['127.0.0.3']) });
  untrusted = await startOrigin({ host: '127.0.0.4', tls: makeLeaf(rogue, ['origin.test'], ['127.0.0.4']) });
  wrongName = await startOrigin({ host: '127.0.0.5', tls: makeLeaf(ca, ['other.test'], ['127.0.0.99']) });
  // The proxy trusts the system store plus this CA (Node reads NODE_EXTRA_CA_CERTS at start).
  proxy = await startCli(['--config', writeSetup()], { NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') });
});

afterAll(async () => {
  proxy.child.kill('SIGTERM');
  await proxy.exited;
  await Promise.all([trusted.close(), untrusted.close(), wrongName.close()]);
});

const get = (url: string): Promise<string> =>
  rawExchange(proxy.port, `GET ${url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, { waitMs: 5000 });

describe('upstream TLS for absolute-form https:// requests', () => {
  it('verifies and forwards to an origin with a trusted certificate', async () => {
    const res = await get(`${trusted.url}/ok`);
    expect(res).toMatch(/^HTTP\/1\.1 200/);
    expect(res).toContain('"url":"/ok"');
  });

  it('refuses an origin whose certificate is from an unknown CA (502 upstream_cert_untrusted)', async () => {
    const res = await get(`${untrusted.url}/x`);
    expect(res).toMatch(/^HTTP\/1\.1 502/);
    expect(res).toMatch(/x-egress-reason: upstream_cert_untrusted/i);
    expect(untrusted.seen).toHaveLength(0);
  });

  it('refuses an origin whose certificate names another host', async () => {
    const res = await get(`${wrongName.url}/x`);
    expect(res).toMatch(/^HTTP\/1\.1 502/);
    expect(res).toMatch(/x-egress-reason: upstream_cert_name_mismatch/i);
    expect(wrongName.seen).toHaveLength(0);
  });
});
