import { spawn } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, readFileSync, renameSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { ProxyAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { FileValidationError } from '../src/config/validate.js';
import { createLogger, workerLogPath } from '../src/logging/logger.js';
import { CLI, startCli, writeSetup, type CliProxy } from './helpers/cli.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { run } from './helpers/run.js';

let origin: Origin;
beforeAll(async () => {
  origin = await startOrigin({ handler: (_req, res) => res.end('ok') });
});
afterAll(() => origin.close());

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
type Line = Record<string, unknown>;
const parse = (text: string): Line[] => text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);
const access = (text: string): Line[] => parse(text).filter((l) => l.type === 'access');

/** The lines of a rotated log, oldest file first, checking that no file passed `maxSize`. */
function rotated(path: string, keep: number, maxSize: number): { files: number; lines: Line[] } {
  const files = [...Array.from({ length: keep }, (_, i) => `${path}.${keep - i}`).filter((f) => existsSync(f)), path];
  const lines: Line[] = [];
  for (const f of files) {
    expect(statSync(f).size).toBeLessThanOrEqual(maxSize);
    lines.push(...parse(readFileSync(f, 'utf8')));
  }
  return { files: files.length, lines };
}

async function readyz(p: CliProxy): Promise<{ status: number; body: { status: string; log: Record<string, number> } }> {
  const r = await request(`http://127.0.0.1:${p.adminPort}/readyz`);
  return { status: r.statusCode, body: (await r.body.json()) as { status: string; log: Record<string, number> } };
}

/** Sends requests for /<tag><n>, `parallel` at a time, recording each outcome (status and reason). */
function client(p: CliProxy, tag: string): { send(count: number, parallel?: number): Promise<Array<[string, number, string]>>; seen: Array<[string, number, string]>; close(): Promise<void> } {
  const agent = new ProxyAgent({ uri: p.url, proxyTunnel: false });
  const seen: Array<[string, number, string]> = [];
  let n = 0;
  const one = async (): Promise<[string, number, string]> => {
    const path = `/${tag}${n++}`;
    const r = await request(`${origin.url}${path}`, { dispatcher: agent });
    await r.body.text();
    const out: [string, number, string] = [path, r.statusCode, String(r.headers['x-egress-reason'] ?? '')];
    seen.push(out);
    return out;
  };
  return {
    seen,
    send: async (count, parallel = 16) => {
      const got: Array<[string, number, string]> = [];
      for (let i = 0; i < count; i += parallel) got.push(...(await Promise.all(Array.from({ length: Math.min(parallel, count - i) }, one))));
      return got;
    },
    close: () => agent.close(),
  };
}

/** Sends a CONNECT on a fresh connection and returns the response head. */
function rawConnect(port: number, authority: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port }, () => sock.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`));
    let head = '';
    sock.setTimeout(5000, () => sock.destroy(new Error('no answer to CONNECT')));
    sock.on('data', (d: Buffer) => {
      head += d.toString('latin1');
      if (head.includes('\r\n\r\n')) {
        sock.destroy();
        resolve(head.slice(0, head.indexOf('\r\n\r\n') + 2));
      }
    });
    sock.on('error', reject);
  });
}

/** Sends batches until `until` holds (bounded: 200 batches). */
async function sendUntil(c: ReturnType<typeof client>, until: (batch: Array<[string, number, string]>) => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) if (await until(await c.send(16))) return;
  throw new Error('condition never reached');
}

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

describe('stdout to a pipe whose reader stalls', () => {
  it('fail_closed: refuses new requests with 503 log_backlog, /readyz says so, no admitted line is lost', async () => {
    const p = await startCli(['--config', writeSetup({ log: { buffer_bytes: 65_536 } })]);
    const c = client(p, 'fc');
    try {
      p.child.stdout!.pause();
      await sendUntil(c, (b) => b.some(([, , r]) => r === 'log_backlog'));
      const ready = await readyz(p);
      expect(ready.status).toBe(503);
      expect(ready.body.status).toBe('log_backlog');
      expect(ready.body.log.backlog_episodes).toBe(1);
      expect(ready.body.log.buffered_bytes).toBeGreaterThan(32_768);
      // Still backlogged: every new request is refused, quickly.
      for (const [, status, reason] of await c.send(20)) expect([status, reason]).toEqual([503, 'log_backlog']);
      // A CONNECT too (counted with the others in the summary).
      expect(await rawConnect(p.port, `127.0.0.2:${origin.port}`)).toMatch(/^HTTP\/1\.1 503 [^\r]*\r\n(.*\r\n)*X-Egress-Reason: log_backlog\r\n/i);
      expect(p.stderr()).toMatch(/ALERT access log backlogged: stdout is not taking lines \(EAGAIN\).*log_backlog/);
      expect(p.stderr().match(/ALERT/g)).toHaveLength(1);

      p.child.stdout!.resume();
      await waitFor(async () => (await readyz(p)).status === 200, '/readyz 200');
      const refused = c.seen.filter(([, , r]) => r === 'log_backlog').length + 1;
      await waitFor(() => p.stdout().includes(`"msg":"refused ${refused} requests while the access log was backlogged"`), 'the summary line');
      expect((await c.send(16)).every(([, s]) => s === 200)).toBe(true);

      // A second stall, shorter than the buffer, then SIGTERM: the drain waits for the reader.
      p.child.stdout!.pause();
      await sendUntil(c, async () => (await readyz(p)).body.log.buffered_bytes > 0);
      expect((await readyz(p)).status).toBe(200);
      p.child.kill('SIGTERM');
      await sleep(500);
      p.child.stdout!.resume();
      expect(await p.exited).toBe(0);
      expect(p.stdout()).toContain('"msg":"stopped"');

      const lines = access(p.stdout());
      const count = new Map<string, number>();
      for (const l of lines) count.set(new URL(String(l.url)).pathname, (count.get(new URL(String(l.url)).pathname) ?? 0) + 1);
      for (const [path, , reason] of c.seen) expect([path, count.get(path) ?? 0]).toEqual([path, reason === 'log_backlog' ? 0 : 1]);
      expect(c.seen.filter(([, s]) => s === 200).length).toBeGreaterThan(100);
      expect(refused).toBeGreaterThanOrEqual(21);
      expect(lines).toHaveLength(c.seen.length - (refused - 1));
    } finally {
      await c.close();
      p.child.kill('SIGKILL');
    }
  }, 60_000);

  it('SIGTERM with a reader that never comes back: exits in bounded time and says what was not written', async () => {
    const p = await startCli(['--config', writeSetup({ log: { buffer_bytes: 65_536 }, limits: { drain_timeout_ms: 500 } })]);
    const c = client(p, 'gone');
    try {
      p.child.stdout!.pause();
      await sendUntil(c, (batch) => batch.some(([, , r]) => r === 'log_backlog'));
      const started = Date.now();
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(p.stderr(), p.stderr()).toMatch(/ALERT \d+ bytes of log lines could not be written before exit/);
    } finally {
      await c.close();
      p.child.kill('SIGKILL');
    }
  }, 60_000);

  it('drop: keeps serving, drops lines that do not fit, and says how many', async () => {
    const p = await startCli(['--config', writeSetup({ log: { buffer_bytes: 65_536, when_full: 'drop' } })]);
    const c = client(p, 'dr');
    try {
      p.child.stdout!.pause();
      await sendUntil(c, async () => (await readyz(p)).body.log.dropped_lines > 0);
      await c.send(32);
      const ready = await readyz(p);
      expect(ready.status).toBe(200);
      expect(ready.body.status).toBe('ready');
      const dropped = ready.body.log.dropped_lines;
      expect(dropped).toBeGreaterThan(0);
      expect(ready.body.log.refused_requests).toBe(0);
      expect(c.seen.every(([, s]) => s === 200)).toBe(true);
      expect(p.stderr()).toMatch(/ALERT access log backlogged: stdout is not taking lines .*dropping lines until it drains/);

      p.child.stdout!.resume();
      await waitFor(() => p.stderr().includes(`dropped ${dropped} lines meanwhile`), 'the end of the episode on stderr');
      await waitFor(() => p.stdout().includes(`"msg":"dropped ${dropped} lines while the access log was backlogged"`), 'the summary line');
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
      const paths = access(p.stdout()).map((l) => new URL(String(l.url)).pathname);
      expect(new Set(paths).size).toBe(paths.length);
      expect(paths.length).toBe(c.seen.length - dropped);
    } finally {
      await c.close();
      p.child.kill('SIGKILL');
    }
  }, 60_000);
});

describe('a file destination', () => {
  it('rotates by size (keep 2), loses and splits no line, and stdout gets the same lines', async () => {
    const config = writeSetup({ log: { file: { path: 'logs/access.log', rotate_bytes: 16_384, keep: 2 } } });
    const file = join(dirname(config), 'logs', 'access.log');
    const p = await startCli(['--config', config]);
    const c = client(p, 'rot');
    try {
      await c.send(240, 8);
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
      expect(existsSync(`${file}.1`) && existsSync(`${file}.2`)).toBe(true);
      expect(existsSync(`${file}.3`)).toBe(false); // the oldest were deleted
      const texts = [`${file}.2`, `${file}.1`, file].map((f) => readFileSync(f, 'utf8'));
      for (const [i, f] of [`${file}.2`, `${file}.1`, file].entries()) {
        expect(statSync(f).size).toBeLessThanOrEqual(16_384);
        expect(texts[i]!.endsWith('\n')).toBe(true);
      }
      const kept = texts.join('');
      parse(kept); // every line whole JSON
      // The files hold the last lines stdout got, byte for byte.
      expect(p.stdout().endsWith(kept)).toBe(true);
      expect(kept.length).toBeGreaterThan(30_000);
      const onStdout = access(p.stdout()).map((l) => new URL(String(l.url)).pathname).sort();
      expect(onStdout).toEqual(c.seen.map(([path]) => path).sort());
    } finally {
      await c.close();
      p.child.kill('SIGKILL');
    }
  }, 60_000);

  it('reopens the file on SIGHUP (external logrotate)', async () => {
    const config = writeSetup({ log: { file: { path: 'access.log', rotate_bytes: 0 } } });
    const file = join(dirname(config), 'access.log');
    const p = await startCli(['--config', config]);
    const c = client(p, 'hup');
    try {
      await c.send(5);
      await sleep(300); // the 250 ms flush
      renameSync(file, `${file}.old`); // what logrotate does
      p.child.kill('SIGHUP');
      await waitFor(() => existsSync(file), 'the reopened file');
      await c.send(5);
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
      const paths = (f: string): string[] => access(readFileSync(f, 'utf8')).map((l) => new URL(String(l.url)).pathname);
      expect(paths(`${file}.old`).sort()).toEqual(['/hup0', '/hup1', '/hup2', '/hup3', '/hup4']);
      expect(paths(file).sort()).toEqual(['/hup5', '/hup6', '/hup7', '/hup8', '/hup9']);
    } finally {
      await c.close();
      p.child.kill('SIGKILL');
    }
  }, 30_000);

  it('with stdout: false writes the file only', async () => {
    const config = writeSetup({ log: { stdout: false, file: { path: 'only.log' } } });
    const file = join(dirname(config), 'only.log');
    const child = spawn(process.execPath, [CLI, 'start', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      await waitFor(() => existsSync(file) && readFileSync(file, 'utf8').includes('"egress-proxy ready"'), 'the ready line in the file');
      await sleep(200); // the start command installs its SIGTERM handler just after the ready line
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(readFileSync(file, 'utf8')).toContain('"msg":"stopped"');
      expect(out).toBe('');
    } finally {
      child.kill('SIGKILL');
    }
  }, 30_000);
});

describe('with workers > 1', () => {
  it('names each worker\'s file access-w<id>.log', async () => {
    expect(workerLogPath('/var/log/egress/access.log', 3)).toBe('/var/log/egress/access-w3.log');
    expect(workerLogPath('/var/log/egress/access', 1)).toBe('/var/log/egress/access-w1');
    expect(workerLogPath('/var/log/egress/access.log', undefined)).toBe('/var/log/egress/access.log');
    const config = writeSetup({ workers: 2, log: { file: { path: 'logs/access.log' } } });
    const p = await startCli(['--config', config]);
    try {
      await waitFor(() => p.stdout().split('"egress-proxy ready"').length - 1 === 2, 'both workers');
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
      for (const w of [1, 2]) {
        const lines = parse(readFileSync(join(dirname(config), 'logs', `access-w${w}.log`), 'utf8'));
        expect(lines.some((l) => l.msg === 'egress-proxy ready')).toBe(true);
        expect(lines.every((l) => l.worker === w)).toBe(true);
      }
      expect(existsSync(join(dirname(config), 'logs', 'access.log'))).toBe(false);
    } finally {
      p.child.kill('SIGKILL');
    }
  }, 30_000);
});

describe('a FIFO destination (in process)', () => {
  it('never blocks: lines wait in the buffer, the logger reports backlogged and counts, and all arrive once read', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'egress-fifo-'));
    const fifo = join(dir, 'log.fifo');
    expect((await run('mkfifo', [fifo])).code).toBe(0);
    const lg = createLogger({ level: 'info', nodeId: 'fifo', stdout: false, file: { path: fifo }, buffer_bytes: 16_384 });
    let sent = 0;
    const line = (): string => `${lg.accessPrefix()},"kind":"http","n":${sent++},"pad":"${'x'.repeat(300)}"}\n`;
    // Nobody reads: the pipe (64 KiB) fills, then the buffer; each write returns at once.
    const t0 = performance.now();
    while (!lg.backlogged && sent < 5000) lg.writeAccess(line());
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(lg.backlogged).toBe(true);
    expect(lg.refuseNew()).toBe(true);
    expect(lg.refuseNew()).toBe(true);
    for (let i = 0; i < 10; i++) lg.writeAccess(line()); // lines of admitted requests are kept
    const st = lg.stats();
    expect(st).toMatchObject({ refused_requests: 2, backlog_episodes: 1, dropped_lines: 0 });
    expect(st.buffered_bytes).toBeGreaterThan(16_384);
    expect(st.written_lines).toBeLessThan(sent);

    let got = '';
    const reader = createReadStream(fifo, { encoding: 'utf8' });
    reader.on('data', (d) => { got += String(d); });
    await lg.flushed(5000);
    await waitFor(() => !lg.backlogged && got.split('\n').length - 1 >= sent + 1, 'everything read');
    expect(lg.refuseNew()).toBe(false);
    const lines = parse(got);
    const ns = lines.filter((l) => l.type === 'access').map((l) => l.n);
    expect(ns).toEqual(Array.from({ length: sent }, (_, i) => i));
    expect(lines.find((l) => l.msg === 'refused 2 requests while the access log was backlogged')).toBeDefined();
    expect(lg.stats()).toMatchObject({ buffered_bytes: 0, written_lines: sent + 1 });
    lg.close();
    reader.destroy();
  });

  it('lines longer than a pipe block, and lines of many-byte characters, arrive whole and in order through a stall', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'egress-fifo-'));
    const fifo = join(dir, 'log.fifo');
    expect((await run('mkfifo', [fifo])).code).toBe(0);
    const lg = createLogger({ level: 'info', nodeId: 'fifo', stdout: false, file: { path: fifo }, buffer_bytes: 1 << 20 });
    const sent = 400;
    // Every 7th line is bigger than a 4 KiB pipe block (6,000 bytes in 3,000 characters) and goes as a block of its own.
    const pad = (n: number): string => (n % 7 === 0 ? 'é'.repeat(3000) : n % 3 === 0 ? '日'.repeat(400) : 'x'.repeat(200));
    for (let n = 0; n < sent; n++) lg.writeAccess(`${lg.accessPrefix()},"n":${n},"pad":"${pad(n)}"}\n`);
    // More than the pipe holds: the rest waits.
    expect(lg.stats().written_lines).toBeLessThan(sent);
    let got = '';
    const reader = createReadStream(fifo, { encoding: 'utf8' });
    reader.on('data', (d) => { got += String(d); });
    await lg.flushed(5000);
    await waitFor(() => got.split('\n').length - 1 >= sent, 'everything read');
    const lines = parse(got);
    expect(lines.map((l) => l.n)).toEqual(Array.from({ length: sent }, (_, i) => i));
    expect(lines.every((l) => l.pad === pad(l.n as number))).toBe(true);
    expect(lg.stats()).toMatchObject({ buffered_bytes: 0, written_lines: sent, dropped_lines: 0 });
    lg.close();
    reader.destroy();
  });

  it('a block that would pass the rotation size goes without the line that would pass it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'egress-rot-'));
    const path = join(dir, 'access.log');
    const lg = createLogger({ level: 'info', nodeId: 'rot', stdout: false, file: { path, rotate_bytes: 5000, keep: 20 } });
    const pad = (n: number): string => (n % 2 === 0 ? 'ü'.repeat(150 + n) : 'y'.repeat(100 + n));
    for (let n = 0; n < 120; n++) lg.writeAccess(`${lg.accessPrefix()},"n":${n},"pad":"${pad(n)}"}\n`);
    lg.close();
    const { files, lines } = rotated(path, 20, 5000);
    expect(files).toBeGreaterThan(5);
    expect(lines.map((l) => l.n)).toEqual(Array.from({ length: 120 }, (_, i) => i));
    expect(lines.every((l) => l.pad === pad(l.n as number))).toBe(true);
  });
});

describe('queued access lines (in process)', () => {
  it('are written in order at the end of the event loop turn, or at once on flush; a failing encoder or observer costs no other line', async () => {
    const { AccessRecord, observeAccess } = await import('../src/logging/access-record.js');
    const dir = mkdtempSync(join(tmpdir(), 'egress-queue-'));
    const path = join(dir, 'access.log');
    const lg = createLogger({ level: 'info', nodeId: 'q', stdout: false, file: { path, rotate_bytes: 1 << 20, keep: 1 } });
    const seen: number[] = [];
    observeAccess(lg, (r) => {
      if (r.status === 3) throw new Error('observer bug');
      seen.push(r.status);
    });
    const line = (status: number): void => {
      const rec = new AccessRecord('http', '127.0.0.1', 1000 + status);
      rec.status = status;
      rec.write(lg);
      rec.write(lg); // a second exit path: ignored
    };
    for (let i = 1; i <= 5; i++) {
      line(i);
      if (i === 2) lg.queueAccess({ encode: () => { throw new Error('encoder bug'); }, written: () => undefined });
    }
    expect(seen).toEqual([]); // not yet: the turn has not ended
    await new Promise((r) => setImmediate(r));
    expect(seen).toEqual([1, 2, 4, 5]);
    for (let i = 6; i <= 8; i++) line(i);
    // A line longer than the encoder's buffer (9 KB of escapes) grows it and arrives whole.
    const long = new AccessRecord('http', '127.0.0.1', 999);
    long.url = '\u0001'.repeat(1500);
    long.write(lg);
    lg.flush(); // at once, as on exit
    const lines = access(readFileSync(path, 'utf8'));
    expect(lines.map((l) => [l.status, l.client_port])).toEqual([...Array.from({ length: 8 }, (_, i) => [i + 1, 1001 + i]), [0, 999]]);
    expect(lines[8]!.url).toBe('\u0001'.repeat(1500));
    expect(seen).toEqual([1, 2, 4, 5, 6, 7, 8, 0]);
    const said = parse(readFileSync(path, 'utf8')).filter((l) => l.type !== 'access').map((l) => l.msg);
    expect(said).toEqual(['an access line could not be encoded and is lost', 'an access-line observer failed']);
    lg.close();
  });
});

describe('access lines encoded straight into the block being filled', () => {
  const recordFor = async (n: number, path: string): Promise<import('../src/logging/access-record.js').AccessRecord> => {
    const { AccessRecord } = await import('../src/logging/access-record.js');
    const rec = new AccessRecord('http', '127.0.0.1', n);
    Object.assign(rec, { scheme: 'http', host: 'a.example', port: 80, path, status: 200 });
    return rec;
  };
  // Short, long, escaped and many-byte paths: lines from about 200 bytes to about 5 KB.
  const pathOf = (n: number): string => ['/s', `/${'p'.repeat(n % 1400)}`, `/${'"'.repeat(n % 300)}`, `/${'日'.repeat(n % 500)}`][n % 4]!;
  const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

  it('never pass the rotation size, and interleave with other lines in order, none lost or split', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'egress-place-'));
    const path = join(dir, 'access.log');
    const lg = createLogger({ level: 'info', nodeId: 'place', stdout: false, file: { path, rotate_bytes: 8000, keep: 200 } });
    for (let n = 0; n < 300; n++) {
      (await recordFor(n, pathOf(n))).write(lg);
      if (n % 10 === 0) lg.log.info({ n }, 'between');
      if (n % 7 === 0) await turn();
    }
    lg.close();
    const { files, lines } = rotated(path, 200, 8000);
    expect(files).toBeGreaterThan(20);
    const got = lines.filter((l) => l.type === 'access');
    expect(got.map((l) => l.client_port)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(got.every((l) => l.url === `http://a.example:80${pathOf(l.client_port as number)}`)).toBe(true);
    // Messages go out at once, access lines at the end of the turn: each is in order and whole.
    expect(lines.filter((l) => l.msg === 'between').map((l) => l.n)).toEqual(Array.from({ length: 30 }, (_, i) => 10 * i));
  });

  it('through a stall with a full buffer: lines are whole and in order, and every one is written or counted as dropped', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'egress-place-fifo-'));
    const fifo = join(dir, 'log.fifo');
    expect((await run('mkfifo', [fifo])).code).toBe(0);
    const lg = createLogger({ level: 'info', nodeId: 'place', stdout: false, file: { path: fifo }, buffer_bytes: 32_768, when_full: 'drop' });
    const sent = 600;
    for (let n = 0; n < sent; n++) {
      (await recordFor(n, pathOf(n))).write(lg);
      if (n % 5 === 0) await turn();
    }
    await turn();
    const { dropped_lines: dropped, buffered_bytes: buffered } = lg.stats();
    expect(dropped).toBeGreaterThan(0);
    expect(buffered).toBeLessThanOrEqual(32_768); // the buffer bounds memory: lines that do not fit are dropped
    let text = '';
    const reader = createReadStream(fifo, { encoding: 'utf8' });
    reader.on('data', (d) => { text += String(d); });
    await lg.flushed(5000);
    await waitFor(() => access(text).length >= sent - dropped, 'everything kept read');
    const ports = access(text).map((l) => l.client_port as number);
    expect(ports.length).toBe(sent - dropped);
    expect(ports.every((p, i) => i === 0 || p > ports[i - 1]!)).toBe(true);
    expect(access(text).every((l) => l.url === `http://a.example:80${pathOf(l.client_port as number)}`)).toBe(true);
    lg.close();
    reader.destroy();
  });

  it('an encoder that fails half-way through a placed line leaves none of its bytes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'egress-place-fail-'));
    const path = join(dir, 'access.log');
    const lg = createLogger({ level: 'info', nodeId: 'place', stdout: false, file: { path, rotate_bytes: 1 << 20, keep: 1 } });
    (await recordFor(1, '/one')).write(lg);
    lg.queueAccess({
      encode: (out) => {
        out.start(100);
        out.text('"half-written":');
        throw new Error('encoder bug');
      },
      written: () => undefined,
    });
    (await recordFor(2, '/two')).write(lg);
    lg.flush();
    const text = readFileSync(path, 'utf8');
    expect(text).not.toContain('half-written');
    expect(access(text).map((l) => l.url)).toEqual(['http://a.example:80/one', 'http://a.example:80/two']);
    lg.close();
  });
});

describe('config validation', () => {
  const problems = (log: Record<string, unknown>): string => {
    try {
      loadConfig({ config: writeSetup({ log }) }, {});
    } catch (err) {
      if (err instanceof FileValidationError) return err.message;
      throw err;
    }
    return '';
  };
  it('names the field of a bad value', () => {
    expect(problems({ buffer_bytes: -1 })).toMatch(/log\.buffer_bytes/);
    expect(problems({ when_full: 'maybe' })).toMatch(/log\.when_full/);
    expect(problems({ file: { path: 'a.log', keep: 0 } })).toMatch(/log\.file\.keep/);
    expect(problems({ file: { rotate_bytes: 10 } })).toMatch(/log\.file\.path/);
    expect(problems({ stdout: false })).toMatch(/log\.stdout.*would go nowhere/);
    expect(problems({ buffer_bytes: 65_536, when_full: 'drop', tamper_evident: true, file: { path: 'a.log' } })).toBe('');
  });
});
