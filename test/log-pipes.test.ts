import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProxyAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { FdOutput, PIPE_BLOCK } from '../src/logging/fd-output.js';
import { createLogger } from '../src/logging/logger.js';
import { LineSink } from '../src/logging/sink.js';
import { CLI, writeSetup } from './helpers/cli.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { run } from './helpers/run.js';

let origin: Origin;
beforeAll(async () => {
  origin = await startOrigin({ handler: (_req, res) => res.end('ok') });
});
afterAll(() => origin.close());

describe('a pipe that stops taking lines', () => {
  it('is tried again after 1 ms, then less often, up to every 15 ms; caught up, the next stall starts at 1 ms again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'egress-retry-'));
    const fifo = join(dir, 'log.fifo');
    expect((await run('mkfifo', [fifo])).code).toBe(0);
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    const drain = (): number => {
      const b = Buffer.alloc(1 << 16);
      let n = 0;
      for (;;) {
        try {
          const k = readSync(reader, b);
          if (k <= 0) return n;
          n += k;
        } catch {
          return n; // EAGAIN: empty
        }
      }
    };
    vi.useFakeTimers();
    try {
      const out = new FdOutput(writer, 'fifo', PIPE_BLOCK);
      const sink = new LineSink({ outputs: [out], bufferBytes: 1 << 20, whenFull: 'fail_closed', tamperEvident: false, alert: () => undefined });
      const pumps = vi.spyOn(out, 'pump');
      const line = `${'x'.repeat(99)}\n`;
      const fill = (): void => {
        for (let i = 0; out.stalled === undefined && i < 10_000; i++) sink.write(line);
        expect(out.stalled).toBe('EAGAIN');
      };
      fill();
      // The reader stays away: tries at 1, 3, 7 and 15 ms, then every 15 ms.
      const tries = [1, 2, 4, 8, 15, 15, 15];
      for (const [i, ms] of tries.entries()) {
        vi.advanceTimersByTime(ms - 1);
        expect(pumps, `try ${i + 1} not before ${ms} ms`).toHaveBeenCalledTimes(i);
        vi.advanceTimersByTime(1);
        expect(pumps, `try ${i + 1} after ${ms} ms`).toHaveBeenCalledTimes(i + 1);
      }
      // It reads again: caught up at the next try, all lines there.
      let got = drain();
      vi.advanceTimersByTime(15);
      got += drain();
      expect(out.stalled).toBeUndefined();
      expect(out.queued).toBe(0);
      expect(got % line.length).toBe(0);
      // A new stall is tried again after 1 ms.
      pumps.mockClear();
      fill();
      drain();
      vi.advanceTimersByTime(1);
      expect(pumps).toHaveBeenCalledTimes(1);
      expect(out.stalled).toBeUndefined();
      sink.close();
    } finally {
      vi.useRealTimers();
      closeSync(reader);
      closeSync(writer);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a small buffer', () => {
  it('never looks backlogged while its destination takes every block (a file, buffer_bytes at its 16 KiB minimum)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'egress-smallbuf-'));
    const path = join(dir, 'access.log');
    const lg = createLogger({ level: 'info', nodeId: 'small', stdout: false, file: { path, rotate_bytes: 0 }, buffer_bytes: 16_384 });
    try {
      const pad = 'x'.repeat(400);
      for (let n = 0; n < 2000; n++) {
        expect(lg.refuseNew(), `line ${n}`).toBe(false);
        lg.writeAccess(`${lg.accessPrefix()},"kind":"http","n":${n},"pad":"${pad}"}\n`);
      }
      lg.flush();
      expect(lg.stats()).toMatchObject({ backlog_episodes: 0, refused_requests: 0, dropped_lines: 0, buffered_bytes: 0 });
      const ns = readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { n?: number }).filter((l) => l.n !== undefined).map((l) => l.n);
      expect(ns).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    } finally {
      lg.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * Starts the CLI with stdout on a FIFO that this test reads a little at a time (`trickle` bytes
 * every millisecond), as a slow log shipper would: writes then often find the pipe part full.
 */
async function startOnSlowPipe(config: string, trickle: number): Promise<{ child: ChildProcess; port: number; text(): string; stop(): Promise<number | null> }> {
  const dir = mkdtempSync(join(tmpdir(), 'egress-slowpipe-'));
  const fifo = join(dir, 'stdout.fifo');
  expect((await run('mkfifo', [fifo])).code).toBe(0);
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writer = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  const child = spawn(process.execPath, [CLI, 'start', '--config', config], { stdio: ['ignore', writer, 'ignore'] });
  closeSync(writer);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const chunk = Buffer.alloc(trickle);
  let out = '';
  const take = (): number => {
    try {
      const n = readSync(reader, chunk, 0, trickle, null);
      out += chunk.toString('latin1', 0, n);
      return n;
    } catch {
      return 0; // EAGAIN: nothing there yet
    }
  };
  const timer = setInterval(take, 1);
  let stopped = false;
  const stop = async (): Promise<number | null> => {
    child.kill('SIGTERM');
    const code = await exited;
    if (!stopped) {
      stopped = true;
      clearInterval(timer);
      while (take() > 0);
      closeSync(reader);
      rmSync(dir, { recursive: true, force: true });
    }
    return code;
  };
  const ready = (): string[] => out.split('\n').filter((l) => l.includes('"egress-proxy ready"'));
  try {
    await vi.waitFor(() => expect(ready()).toHaveLength(2), { timeout: 15_000, interval: 20 });
  } catch (err) {
    child.kill('SIGKILL');
    await stop();
    throw err;
  }
  const { listen } = JSON.parse(ready()[0]!) as { listen: { port: number } };
  return { child, port: listen.port, text: () => Buffer.from(out, 'latin1').toString('utf8'), stop };
}

describe('stdout shared by workers', () => {
  it('lines of two workers never interleave on one pipe that a slow reader keeps part full', async () => {
    const p = await startOnSlowPipe(writeSetup({ workers: 2, log: { buffer_bytes: 8 << 20 } }), 2048);
    const agent = new ProxyAgent({ uri: `http://127.0.0.1:${p.port}`, proxyTunnel: false });
    let ok = 0;
    try {
      const one = async (n: number): Promise<void> => {
        const r = await request(`${origin.url}/w${n}`, { dispatcher: agent });
        await r.body.text();
        if (r.statusCode === 200) ok++;
      };
      for (let n = 0; n < 2400; n += 40) await Promise.all(Array.from({ length: 40 }, (_, i) => one(n + i)));
      expect(await p.stop()).toBe(0);
      const lines = p.text().split('\n').filter(Boolean);
      const bad = lines.filter((l) => {
        try {
          JSON.parse(l);
          return false;
        } catch {
          return true;
        }
      });
      expect(bad.slice(0, 3), 'lines that are not whole JSON').toEqual([]);
      const access = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.type === 'access');
      expect(ok).toBe(2400);
      expect(access).toHaveLength(2400);
      expect(new Set(access.map((l) => l.worker))).toEqual(new Set([1, 2]));
    } finally {
      await agent.close();
      p.child.kill('SIGKILL');
      await p.stop();
    }
  }, 60_000);
});
