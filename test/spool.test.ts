import { chmodSync, cpSync, fstatSync, mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeldBody } from '../src/inspection/held-body.js';
import { SpoolDir } from '../src/inspection/spool.js';
import { startCli, writeSetup } from './helpers/cli.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { startTestProxy, type TestProxy } from './helpers/proxy.js';
import { openSocket } from './helpers/raw.js';
import { cleanEnv, run } from './helpers/run.js';

const CARD = '4111 1111 1111 1111';
const base = mkdtempSync(join(tmpdir(), 'egress-spool-'));
let n = 0;
const freshDir = (): string => join(base, `d${++n}`);

/** A process's (this one's by default) open descriptors whose file was in `dir` (a spool file shows as `… (deleted)`). */
function openIn(dir: string, pid: number | 'self' = 'self'): Array<{ fd: number; target: string }> {
  const out: Array<{ fd: number; target: string }> = [];
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${name}`);
    } catch {
      continue; // closed meanwhile
    }
    if (target.startsWith(`${dir}/`)) out.push({ fd: Number(name), target });
  }
  return out;
}

async function waitUntil(cond: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); await new Promise((r) => setTimeout(r, 20))) {
    if (Date.now() > end) throw new Error('timed out waiting');
  }
}

const collect = async (it: AsyncIterable<Buffer>): Promise<Buffer> => {
  const parts: Buffer[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
};

describe('the spool directory', () => {
  it('keeps a body encrypted, in a private file already unlinked, and gives it back byte for byte', async () => {
    const dir = freshDir();
    const spool = new SpoolDir(dir, 1 << 30);
    const file = (await spool.open(0))!;
    const body = Buffer.from(`lorem ipsum card ${CARD} `.repeat(40_000)); // about 1 MiB, in uneven pieces
    for (let o = 0; o < body.length; o += 77_777) await file.write(body.subarray(o, o + 77_777));
    expect(readdirSync(dir)).toEqual([]); // unlinked: nothing to find, nothing left by a crash
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const [open] = openIn(dir);
    expect(open?.target).toMatch(/\/body-[0-9a-f]{24} \(deleted\)$/);
    const fd = openSync(`/proc/self/fd/${open!.fd}`, 'r');
    expect(fstatSync(fd).mode & 0o777).toBe(0o600);
    closeSync(fd);
    expect(spool.used).toBe(body.length);
    expect((await collect(file.read())).equals(body)).toBe(true);
    // All of it on disk by now (writes are gathered by the megabyte), none of it in clear.
    const onDisk = readFileSync(`/proc/self/fd/${open!.fd}`);
    expect(onDisk.length).toBe(body.length);
    expect(onDisk.includes('lorem')).toBe(false);
    expect(onDisk.includes(CARD)).toBe(false);
    await file.close();
    await file.close();
    expect(spool.used).toBe(0);
    expect(openIn(dir)).toEqual([]);
  });

  it('counts every body against its total: no file past it, and a closed body frees its share', async () => {
    const spool = new SpoolDir(freshDir(), 100_000);
    const a = (await spool.open(50_000))!;
    await a.write(Buffer.alloc(60_000));
    expect(a.fits(40_000)).toBe(true);
    expect(a.fits(40_001)).toBe(false);
    expect(await spool.open(50_000)).toBeUndefined();
    await a.close();
    expect(spool.used).toBe(0);
    const b = await spool.open(50_000);
    expect(b).toBeDefined();
    await b!.close();
  });

  it('refuses a directory that is not its own private one', async () => {
    const open = join(base, 'shared');
    mkdirSync(open, { mode: 0o755 });
    chmodSync(open, 0o755);
    await expect(new SpoolDir(open, 1 << 20).open(0)).rejects.toThrow(/mode 0700/);
    const link = join(base, 'link');
    mkdirSync(join(base, 'real'), { mode: 0o700 });
    symlinkSync(join(base, 'real'), link);
    await expect(new SpoolDir(link, 1 << 20).open(0)).rejects.toThrow(/mode 0700/);
  });
});

describe('a held body', () => {
  it('lets bytes out in order, from disk and then from memory, never past where it is allowed to', async () => {
    const spool = new SpoolDir(freshDir(), 1 << 30);
    const piece = (ch: string): Buffer => Buffer.alloc(200_000, ch);
    const held = new HeldBody();
    await held.add(piece('a'));
    await held.add(piece('b'));
    await held.spill((await spool.open(held.size))!);
    await held.add(piece('c'));
    held.stopSpooling();
    await held.add(piece('d')); // in memory, after what is on disk
    expect(held.size).toBe(800_000);
    expect(spool.used).toBe(600_000);
    const first = await collect(held.letOut(300_000));
    expect(first.length).toBeLessThanOrEqual(300_000);
    expect(first.length).toBeGreaterThan(0);
    const rest = await collect(held.letOut(Infinity));
    expect(Buffer.concat([first, rest]).equals(Buffer.concat(['a', 'b', 'c', 'd'].map(piece)))).toBe(true);
    expect(spool.used).toBe(0); // the file went once read through
  });

  it('once let go, frees its file and takes no more bytes', async () => {
    const spool = new SpoolDir(freshDir(), 1 << 30);
    const held = new HeldBody();
    await held.add(Buffer.alloc(1000));
    await held.spill((await spool.open(held.size))!);
    await held.close();
    expect(spool.used).toBe(0);
    await expect(held.add(Buffer.alloc(10))).rejects.toThrow(/let go/);
  });
});

describe('uploads held on disk through the proxy', () => {
  let origin: Origin;
  let proxy: TestProxy;
  let badProxy: TestProxy;
  /** A spool of 1 MiB in all: larger uploads start on disk and stream on once it is full. */
  let smallSpool: TestProxy;
  const spoolDir = freshDir();

  /** The shipped default DLP profile on every request. */
  async function withDlp(p: TestProxy): Promise<void> {
    mkdirSync(join(p.dir, 'policies', 'dlp'));
    cpSync(join(import.meta.dirname, '..', 'policies', 'dlp', 'default.yaml'), join(p.dir, 'policies', 'dlp', 'default.yaml'));
    writeFileSync(join(p.dir, 'policies', 'rules.yaml'), stringify({ version: 'v1', rules: [{ id: 'dlp-everything', action: 'allow', dlp: ['default'] }] }));
    expect(await p.running.reload()).toBe(true);
  }

  beforeAll(async () => {
    origin = await startOrigin();
    proxy = await startTestProxy({ inspection: { enabled: false, hold_bytes: 65_536, spool_dir: spoolDir } });
    await withDlp(proxy);
    const shared = join(base, 'not-private');
    mkdirSync(shared, { mode: 0o755 });
    chmodSync(shared, 0o755);
    badProxy = await startTestProxy({ inspection: { enabled: false, hold_bytes: 65_536, spool_dir: shared } });
    await withDlp(badProxy);
    smallSpool = await startTestProxy({ inspection: { enabled: false, hold_bytes: 65_536, spool_dir: freshDir(), spool_total_bytes: 1 << 20 } });
    await withDlp(smallSpool);
  });
  afterAll(async () => {
    await proxy?.close();
    await badProxy?.close();
    await smallSpool?.close();
    await origin?.close();
  });

  const post = (p: TestProxy, path: string, file: string) =>
    run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '20', '-x', p.url, '-H', 'Content-Type: text/plain', '--data-binary', `@${file}`, `${origin.url}${path}`], { env: cleanEnv() });

  /** Uploads `text` through `p` and checks that the destination got all of it, in order (it keeps the first MiB). */
  async function expectPassedWhole(p: TestProxy, path: string, text: Buffer): Promise<void> {
    const file = join(base, `${path.slice(1)}.txt`);
    writeFileSync(file, text);
    expect((await post(p, path, file)).stdout).toBe('200');
    const seen = origin.seen.find((s) => s.url === path);
    expect(seen?.bodyBytes).toBe(text.length);
    expect(seen?.body?.equals(text.subarray(0, seen.body.length))).toBe(true);
  }

  it('sends a blocked upload larger than hold_bytes nothing at all, and a clean one whole', async () => {
    const text = Buffer.alloc(3 << 20, 'lorem ipsum dolor sit amet 0123456789 ');
    const dirty = join(base, 'dirty.txt');
    writeFileSync(dirty, Buffer.concat([text, Buffer.from(` card ${CARD} `), text.subarray(0, 1 << 20)]));
    expect((await post(proxy, '/held-dirty', dirty)).stdout).toBe('403');
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/held-dirty'))).toMatchObject({ reason: 'dlp_match' });
    // Held until the verdict: the destination was never even asked.
    expect(origin.seen.find((s) => s.url === '/held-dirty')).toBeUndefined();

    await expectPassedWhole(proxy, '/held-clean', text);
    expect(openIn(spoolDir)).toEqual([]); // each body's file went with it
    expect(readdirSync(spoolDir)).toEqual([]);
  }, 30_000);

  it('lets go of a body held on disk when its client goes away half-way, and blames no disk', async () => {
    const sock = await openSocket(proxy.port);
    sock.on('error', () => { /* the proxy may reset it */ });
    sock.write(`POST ${origin.url}/gone HTTP/1.1\r\nHost: ${new URL(origin.url).host}\r\nContent-Type: text/plain\r\nContent-Length: ${4 << 20}\r\n\r\n`);
    sock.write(Buffer.alloc(1 << 20, 'lorem ipsum ')); // past hold_bytes: on disk by now
    await waitUntil(() => openIn(spoolDir).length === 1);
    sock.destroy();
    await waitUntil(() => openIn(spoolDir).length === 0);
    expect(await proxy.waitForAccess((l) => String(l.url).endsWith('/gone'))).toMatchObject({ reason: 'client_aborted', status: 499, decision: 'error' });
    expect(proxy.lines().some((l) => String(l.msg).startsWith('cannot hold an upload on disk'))).toBe(false);
    expect(origin.seen.find((s) => s.url === '/gone')).toBeUndefined();
  }, 30_000);

  it('streams on when the spool is full: the part on disk first, then the rest, whole; a secret past it is still cut', async () => {
    const text = Buffer.alloc(4 << 20);
    for (let i = 0; i < text.length; i++) text[i] = 97 + ((i * 7 + (i >> 12)) % 26); // letters, no card
    await expectPassedWhole(smallSpool, '/full-clean', text);
    const dirty = join(base, 'dirty-full.txt');
    writeFileSync(dirty, Buffer.concat([text.subarray(0, 3 << 20), Buffer.from(` card ${CARD} `), text.subarray(0, 1 << 20)]));
    expect((await post(smallSpool, '/full-dirty', dirty)).stdout).not.toBe('200');
    expect(await smallSpool.waitForAccess((l) => String(l.url).endsWith('/full-dirty'))).toMatchObject({ reason: 'dlp_match' });
    expect(origin.seen.find((s) => s.url === '/full-dirty')?.bodyBytes ?? 0).toBeLessThanOrEqual(3 << 20);
    const metrics = await (await fetch(`${smallSpool.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/^egress_proxy_upload_spooled_total 2$/m);
    expect(metrics).toMatch(/^egress_proxy_upload_spool_full_total 2$/m);
    expect(metrics).toMatch(/^egress_proxy_upload_spool_bytes 0$/m);
  }, 30_000);

  it('drains on SIGTERM: an upload waiting on disk finishes whole, then the proxy exits 0 and leaves no file', async () => {
    const dir = freshDir();
    const config = writeSetup({ inspection: { enabled: false, hold_bytes: 65_536, spool_dir: dir } }, { rules: [{ id: 'dlp-everything', action: 'allow', dlp: ['default'] }] });
    mkdirSync(join(config, '..', 'policies', 'dlp'));
    cpSync(join(import.meta.dirname, '..', 'policies', 'dlp', 'default.yaml'), join(config, '..', 'policies', 'dlp', 'default.yaml'));
    const p = await startCli(['--config', config]);
    const sock = await openSocket(p.port);
    let answer = '';
    sock.on('data', (d: Buffer) => { answer += d.toString('latin1'); });
    const text = Buffer.alloc(3 << 20, 'lorem ipsum dolor sit amet ');
    sock.write(`POST ${origin.url}/drained HTTP/1.1\r\nHost: ${new URL(origin.url).host}\r\nContent-Type: text/plain\r\nContent-Length: ${text.length}\r\nConnection: close\r\n\r\n`);
    sock.write(text.subarray(0, 1 << 20));
    await waitUntil(() => openIn(dir, p.child.pid!).length === 1); // on disk
    p.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 200));
    sock.write(text.subarray(1 << 20)); // no half-close: Node's server ends the exchange on one
    expect(await p.exited).toBe(0);
    expect(answer).toMatch(/^HTTP\/1\.1 200 /);
    expect(origin.seen.find((s) => s.url === '/drained')?.bodyBytes).toBe(text.length);
    expect(readdirSync(dir)).toEqual([]);
    expect(p.stdout()).toContain('"msg":"stopped"');
  }, 30_000);

  it('refuses (503 dlp_error) a large upload it cannot hold safely, and still passes small ones', async () => {
    const big = join(base, 'big.txt');
    writeFileSync(big, Buffer.alloc(1 << 20, 'lorem ipsum '));
    expect((await post(badProxy, '/unsafe-spool', big)).stdout).toBe('503');
    expect(await badProxy.waitForAccess((l) => String(l.url).endsWith('/unsafe-spool'))).toMatchObject({ reason: 'dlp_error' });
    expect(origin.seen.find((s) => s.url === '/unsafe-spool')).toBeUndefined();
    expect(badProxy.lines().some((l) => l.msg === 'cannot hold an upload on disk; it was refused (dlp_error)')).toBe(true);
    // Said at start too, before any upload came.
    const said = badProxy.lines().map((l) => String(l.msg));
    expect(said.indexOf('uploads past inspection.hold_bytes cannot be held on disk; DLP will refuse them (dlp_error)')).toBeLessThan(said.indexOf('egress-proxy ready'));
    expect(said).toContain('uploads past inspection.hold_bytes cannot be held on disk; DLP will refuse them (dlp_error)');
    const small = join(base, 'small.txt');
    writeFileSync(small, 'hello');
    expect((await post(badProxy, '/small-upload', small)).stdout).toBe('200');
  }, 30_000);
});
