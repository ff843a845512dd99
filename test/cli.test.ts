import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ProxyAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, peakRss, startCli, writeSetup } from './helpers/cli.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { cleanEnv, run } from './helpers/run.js';

let origin: Origin;
beforeAll(async () => {
  origin = await startOrigin({
    streaming: true,
    handler: (req, res) => {
      if (req.url === '/slow') {
        setTimeout(() => res.end('slow done'), 800);
        return;
      }
      if (req.url === '/download') {
        const block = Buffer.alloc(1 << 20, 'd');
        let left = 1024;
        res.writeHead(200, { 'content-length': String(1024 << 20) });
        const pump = (): void => {
          while (left > 0) {
            left--;
            if (!res.write(block)) return void res.once('drain', pump);
          }
          res.end();
        };
        return pump();
      }
      let n = 0;
      req.on('data', (c: Buffer) => { n += c.length; });
      req.on('end', () => res.end(String(n)));
    },
  });
});
afterAll(() => origin.close());

describe('egress-proxy CLI', () => {
  it('has --help on the program and each subcommand', async () => {
    for (const args of [['--help'], ['start', '--help'], ['doctor', '--help'], ['policy', '--help'], ['policy', 'explain', '--help'], ['ca', 'init', '--help'], ['schema', '--help']]) {
      const r = await run(process.execPath, [CLI, ...args]);
      expect(r.code, args.join(' ')).toBe(0);
      expect(r.stdout).toMatch(/Usage: egress-proxy/);
    }
    const start = await run(process.execPath, [CLI, 'start', '--help']);
    for (const opt of ['--config', '--policies', '--listen', '--admin', '--allow-range', 'EGRESS_LISTEN']) expect(start.stdout).toContain(opt);
  });

  it('refuses to start on a bad config, naming file, line and field', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'egress-bad-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'listen: 127.0.0.1:0\nadmn: 127.0.0.1:0\n');
    const r = await run(process.execPath, [CLI, 'start', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${file}:2:1 admn: unknown field; did you mean "admin"?`);
  });

  it('refuses to start on a broken policy file', async () => {
    const cfg = writeSetup({}, { default: 'maybe' });
    const r = await run(process.execPath, [CLI, 'start', '--config', cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/p\.yaml:\d+:\d+ default: /);
  });

  it('dev mode creates the CA, prints how to try it and serves health on the admin listener', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'egress-dev-'));
    const p = await startCli(['--dev', '--policies', join(import.meta.dirname, '..', 'policies')],
      { EGRESS_LISTEN: '127.0.0.1:0', EGRESS_ADMIN: '127.0.0.1:0', EGRESS_CONFIG: '' }, cwd);
    try {
      await new Promise((r) => setTimeout(r, 100));
      expect(p.stderr()).toContain(`curl --cacert ${join(cwd, 'certs', 'ca.pem')} -x http://ci-runner:$TOKEN@127.0.0.1:${p.port} https://example.com`);
      expect(statSync(join(cwd, 'certs', 'ca-key.pem')).mode & 0o777).toBe(0o600);
      expect(p.stdout()).toContain('created a new interception CA');
      expect(p.stderr()).toContain(`export HTTPS_PROXY=http://ci-runner:$TOKEN@127.0.0.1:${p.port}`);
      const health = await request(`http://127.0.0.1:${p.adminPort}/healthz`);
      expect(await health.body.json()).toMatchObject({ status: 'ok' });
      const ready = await request(`http://127.0.0.1:${p.adminPort}/readyz`);
      expect(ready.statusCode).toBe(200);
      // The shipped policy wants an identity: anonymous clients are asked for one...
      const anon = await run('curl', ['-sS', '-i', '-x', p.url, 'http://127.0.0.2/'], { env: cleanEnv() });
      expect(anon.stdout).toMatch(/^HTTP\/1\.1 407/);
      expect(anon.stdout).toMatch(/x-egress-reason: auth_required/i);
      expect(anon.stdout).toMatch(/proxy-authenticate: Basic realm="egress-proxy"/i);
      // ...and the token dev mode prints works (the dev identity provider is real), and the
      // shipped policy still denies loopback destinations.
      const token = /export TOKEN=([\w.-]+)\n/.exec(p.stderr())?.[1];
      expect(token).toBeDefined();
      const proxyWithToken = `http://ci-runner:${token}@127.0.0.1:${p.port}`;
      const r = await run('curl', ['-sS', '-i', '-x', proxyWithToken!, 'http://127.0.0.2/'], { env: cleanEnv() });
      expect(r.stdout).toMatch(/x-egress-reason: dest_private_address/i);
      const found = (): string | undefined => p.stdout().split('\n').find((l) => l.includes('"type":"access"') && l.includes('dest_private_address'));
      for (let i = 0; i < 40 && !found(); i++) await new Promise((r) => setTimeout(r, 50)); // lines are flushed every 250 ms
      expect(JSON.parse(found()!)).toMatchObject({ auth: 'token', service: 'ci-runner' });
      expect(p.stdout()).not.toContain(token!);
    } finally {
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
    }
  });

  it('drains on SIGTERM: the in-flight request finishes, new connections are refused, exit 0, line logged', async () => {
    const p = await startCli(['--config', writeSetup()]);
    const agent = new ProxyAgent({ uri: p.url, proxyTunnel: false });
    const inflight = request(`${origin.url}/slow`, { dispatcher: agent });
    await new Promise((r) => setTimeout(r, 250));
    p.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 150));
    const late = await run('curl', ['-sS', '-x', p.url, `${origin.url}/late`], { env: cleanEnv() });
    expect(late.code).not.toBe(0);
    const res = await inflight;
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe('slow done');
    expect(await p.exited).toBe(0);
    await agent.close();
    const lines = p.stdout().split('\n').filter((l) => l.includes('"type":"access"')).map((l) => JSON.parse(l));
    expect(lines.filter((l) => String(l.url).endsWith('/slow'))).toHaveLength(1);
    expect(p.stdout()).toContain('"msg":"stopped"');
  });

  it('streams 1 GiB up and 1 GiB down with bounded memory', async () => {
    const p = await startCli(['--config', writeSetup()]);
    const agent = new ProxyAgent({ uri: p.url, proxyTunnel: false });
    try {
      // What the process holds once started (code and its libraries): the 2 GiB must add little to it.
      const atStart = peakRss(p.child.pid!);
      const block = Buffer.alloc(1 << 20, 'u');
      let left = 1024;
      const body = new Readable({ read() { this.push(left-- > 0 ? block : null); } });
      const up = await request(`${origin.url}/upload`, { method: 'POST', body, dispatcher: agent });
      expect(await up.body.text()).toBe(String(1024 << 20));
      const down = await request(`${origin.url}/download`, { dispatcher: agent });
      let n = 0;
      for await (const c of down.body) n += (c as Buffer).length;
      expect(n).toBe(1024 << 20);
      const peak = peakRss(p.child.pid!);
      expect(atStart).toBeGreaterThan(0);
      expect(peak - atStart).toBeLessThan(96 << 20);
      expect(peak).toBeLessThan(256 << 20);
    } finally {
      await agent.close();
      p.child.kill('SIGTERM');
      await p.exited;
    }
  }, 60_000);
});

describe('egress-proxy doctor', () => {
  it('passes when the environment points at the proxy, and says why not when it does not', async () => {
    const p = await startCli(['--config', writeSetup()]);
    try {
      const upper = await run(process.execPath, [CLI, 'doctor'], { env: cleanEnv({ HTTPS_PROXY: p.url, HTTP_PROXY: p.url, NODE_USE_ENV_PROXY: '1' }) });
      expect(upper.stdout).toMatch(/^warn HTTP_PROXY is set but http_proxy is not/m);
      expect(upper.stdout).toMatch(/^FAIL curl, with this environment, does not go through egress-proxy/m);
      const good = await run(process.execPath, [CLI, 'doctor'], { env: cleanEnv({ HTTPS_PROXY: p.url, http_proxy: p.url, NODE_USE_ENV_PROXY: '1' }) });
      expect(good.code, good.stdout).toBe(0);
      expect(good.stdout).toMatch(/^ok {3}plain HTTP through .* reaches egress-proxy node cli-node/m);
      expect(good.stdout).toMatch(/^ok {3}CONNECT \(HTTPS\) tunnels are accepted/m);
      expect(good.stdout).toMatch(/^ok {3}curl, with this environment, goes through egress-proxy/m);
      const bad = await run(process.execPath, [CLI, 'doctor'], { env: cleanEnv() });
      expect(bad.code).toBe(1);
      expect(bad.stdout).toMatch(/^FAIL HTTPS_PROXY is not set/m);
      expect(bad.stdout).toMatch(/^warn NODE_USE_ENV_PROXY is not 1/m);
      const bypass = await run(process.execPath, [CLI, 'doctor'], { env: cleanEnv({ HTTPS_PROXY: p.url, HTTP_PROXY: p.url, NO_PROXY: '*' }) });
      expect(bypass.code).toBe(1);
      expect(bypass.stdout).toMatch(/^FAIL NO_PROXY=\* sends everything direct/m);
      const wrong = await run(process.execPath, [CLI, 'doctor', '--proxy', `http://127.0.0.1:${p.adminPort}`], { env: cleanEnv() });
      expect(wrong.code).toBe(1);
      expect(wrong.stdout).toMatch(/FAIL .*is not an egress-proxy/);
    } finally {
      p.child.kill('SIGTERM');
      await p.exited;
    }
  });
});

describe('egress-proxy ca', () => {
  it('init writes the certificate and a 0600 key, refuses to overwrite, export prints PEM and install steps', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'egress-ca-')), 'certs');
    const init = await run(process.execPath, [CLI, 'ca', 'init', '--dir', dir, '--permit', 'corp.example,example.com']);
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toMatch(/fingerprint SHA-256 [0-9A-F:]{95}/);
    expect(statSync(join(dir, 'ca-key.pem')).mode & 0o777).toBe(0o600);
    const again = await run(process.execPath, [CLI, 'ca', 'init', '--dir', dir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('a CA already exists');
    const exp = await run(process.execPath, [CLI, 'ca', 'export', '--dir', dir]);
    expect(exp.code).toBe(0);
    expect(exp.stdout).toMatch(/^-----BEGIN CERTIFICATE-----/);
    for (const platform of ['macOS', 'Windows', 'Debian/Ubuntu', 'NSS', 'Firefox']) expect(exp.stderr).toContain(platform);
    const text = await run('openssl', ['x509', '-noout', '-text', '-in', join(dir, 'ca.pem')]);
    expect(text.stdout).toMatch(/Name Constraints: critical[\s\S]*DNS:corp\.example[\s\S]*DNS:example\.com/);
    expect(text.stdout).toMatch(/CA:TRUE, pathlen:0/);
    // ECDSA P-256 by default (a cheap signature per minted leaf), self-signed correctly; RSA on request.
    expect(text.stdout).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    expect(text.stdout).toMatch(/Public Key Algorithm: id-ecPublicKey/);
    expect((await run('openssl', ['verify', '-CAfile', join(dir, 'ca.pem'), join(dir, 'ca.pem')])).stdout).toContain(': OK');
    const rsaDir = join(dir, '..', 'rsa');
    expect((await run(process.execPath, [CLI, 'ca', 'init', '--dir', rsaDir, '--key-type', 'rsa'])).code).toBe(0);
    expect((await run('openssl', ['x509', '-noout', '-text', '-in', join(rsaDir, 'ca.pem')])).stdout).toMatch(/Signature Algorithm: sha256WithRSAEncryption/);
    const bad = await run(process.execPath, [CLI, 'ca', 'init', '--dir', join(dir, '..', 'dsa'), '--key-type', 'dsa']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--key-type: expected ec or rsa');
    const missing = await run(process.execPath, [CLI, 'ca', 'export', '--dir', join(dir, 'nope')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('egress-proxy ca init');
  });

  it('start refuses to run with interception on and no CA (outside dev mode)', async () => {
    const cfg = writeSetup({ inspection: { enabled: true, ca_dir: 'no-ca-here' } });
    const r = await run(process.execPath, [CLI, 'start', '--config', cfg]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no CA in .*no-ca-here: run `egress-proxy ca init/);
  });
});
