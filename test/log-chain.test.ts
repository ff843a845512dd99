import { copyFileSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ProxyAgent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHAIN_START, chainLine, lineHash } from '../src/logging/chain.js';
import { CLI, startCli, writeSetup } from './helpers/cli.js';
import { startOrigin, type Origin } from './helpers/origin.js';
import { run } from './helpers/run.js';

let origin: Origin;
/** The files of one tamper-evident run, oldest first, and what stdout got. */
let files: string[];
let stdout: string;

const verify = (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => run(process.execPath, [CLI, 'logs', 'verify', ...args]);
const lines = (f: string): string[] => readFileSync(f, 'utf8').split('\n').slice(0, -1);
/** A copy of the run's files in a fresh directory, with `change` applied to the lines of the middle one. */
function tampered(change: (ls: string[]) => string[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'egress-chain-'));
  return files.map((f, i) => {
    const to = join(dir, f.split('/').pop()!);
    if (i === 1) writeFileSync(to, change(lines(f)).join('\n') + '\n');
    else copyFileSync(f, to);
    return to;
  });
}

beforeAll(async () => {
  origin = await startOrigin({ handler: (_req, res) => res.end('ok') });
  const config = writeSetup({ log: { tamper_evident: true, file: { path: 'logs/access.log', rotate_bytes: 16_384, keep: 10 } } });
  const p = await startCli(['--config', config]);
  const agent = new ProxyAgent({ uri: p.url, proxyTunnel: false });
  for (let i = 0; i < 100; i += 10) {
    await Promise.all(Array.from({ length: 10 }, async (_, j) => (await request(`${origin.url}/c${i + j}`, { dispatcher: agent })).body.text()));
  }
  await agent.close();
  p.child.kill('SIGTERM');
  expect(await p.exited).toBe(0);
  stdout = p.stdout();
  const f = join(dirname(config), 'logs', 'access.log');
  files = [];
  for (let k = 10; k >= 1; k--) if (existsSync(`${f}.${k}`)) files.push(`${f}.${k}`);
  files.push(f);
}, 30_000);
afterAll(() => origin.close());

describe('tamper-evident lines', () => {
  it('insert the previous line\'s hash first; the first line of a chain has 64 zeros', () => {
    expect(chainLine('{"a":1}\n', CHAIN_START)).toEqual({ line: `{"prev":"${CHAIN_START}","a":1}\n`, hash: lineHash(`{"prev":"${CHAIN_START}","a":1}`) });
    expect(chainLine('{}\n', 'ab'.repeat(32)).line).toBe(`{"prev":"${'ab'.repeat(32)}"}\n`);
    const all = files.flatMap(lines);
    expect(all[0]!.startsWith(`{"prev":"${CHAIN_START}","level":"info"`)).toBe(true);
    // Process and access lines alike, each naming the one before, across the rotated files.
    for (let i = 1; i < all.length; i++) expect(all[i]!.slice(0, 75)).toBe(`{"prev":"${lineHash(all[i - 1]!)}",`);
    expect(all.some((l) => l.includes('"type":"access"')) && all.some((l) => l.includes('"msg":"egress-proxy ready"'))).toBe(true);
    for (const l of all) expect(() => JSON.parse(l) as unknown).not.toThrow();
  });
});

describe('egress-proxy logs verify', () => {
  it('accepts an intact chain across rotated files, and one that starts mid-chain as an anchor', async () => {
    expect(files.length).toBeGreaterThanOrEqual(3);
    const all = files.flatMap(lines);
    const r = await verify(...files);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`ok: ${all.length} lines, last hash ${lineHash(all.at(-1)!)}\n`);
    const tail = await verify(...files.slice(1));
    expect(tail.code).toBe(0);
    expect(tail.stdout).toMatch(/^note: .*access\.log\.\d+ line 1 continues an earlier chain \(prev [0-9a-f]{64}\); accepted as the anchor\nok: /);
    // stdout got the same chained lines.
    expect(stdout).toBe(all.join('\n') + '\n');
  });

  it('reports one edited character at the line after it', async () => {
    const bad = tampered((ls) => ls.map((l, i) => (i === 4 ? l.replace('"status":200', '"status":201') : l)));
    expect(readFileSync(bad[1]!, 'utf8')).toContain('"status":201');
    const r = await verify(...bad);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`broken: ${bad[1]} line 6: prev is ${lineHash(lines(files[1]!)[4]!)}, expected ${lineHash(lines(bad[1]!)[4]!)} (the hash of line 5 of ${bad[1]})`);
  });

  it('reports a deleted line and two reordered lines where they were', async () => {
    const del = tampered((ls) => ls.filter((_, i) => i !== 4));
    const r1 = await verify(...del);
    expect(r1.code).toBe(1);
    expect(r1.stdout).toMatch(new RegExp(`^broken: ${del[1]} line 5: .*between line 4 of .* and this line`));
    const swapped = tampered((ls) => [...ls.slice(0, 4), ls[5]!, ls[4]!, ...ls.slice(6)]);
    const r2 = await verify(...swapped);
    expect(r2.code).toBe(1);
    expect(r2.stdout).toMatch(new RegExp(`^broken: ${swapped[1]} line 5: `));
    // Files given out of order break at the first line of the misplaced one.
    const r3 = await verify(files[1]!, files[0]!);
    expect(r3.code).toBe(1);
    expect(r3.stdout).toMatch(new RegExp(`^broken: ${files[0]} line 1: .*the last line of the previous file`));
  });

  it('goes on across a restart: the new process chains from the last line of the file', async () => {
    const config = writeSetup({ log: { tamper_evident: true, file: { path: 'chain.log' } } });
    for (let i = 0; i < 2; i++) {
      const p = await startCli(['--config', config]);
      // The start command installs its SIGTERM handler just after the ready line: do not race it.
      await new Promise((r) => setTimeout(r, 200));
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
    }
    const f = join(dirname(config), 'chain.log');
    expect(lines(f).filter((l) => l.includes('"msg":"egress-proxy ready"'))).toHaveLength(2);
    const r = await verify(f);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`ok: ${lines(f).length} lines, last hash ${lineHash(lines(f).at(-1)!)}\n`);
  });

  it('says clearly what is wrong with bad input, without a stack trace', async () => {
    const missing = await verify(files[0]!, '/nonexistent/access.log');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toBe('egress-proxy logs verify: cannot read /nonexistent/access.log: no such file\n');
    const notJson = tampered((ls) => [...ls.slice(0, 2), 'garbage {', ...ls.slice(2)]);
    const r = await verify(...notJson);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`^broken: ${notJson[1]} line 3: the line is not JSON`));
    const dir = mkdtempSync(join(tmpdir(), 'egress-chain-'));
    writeFileSync(join(dir, 'plain.log'), '{"level":"info","msg":"x"}\n');
    const plain = await verify(join(dir, 'plain.log'));
    expect(plain.code).toBe(1);
    expect(plain.stdout).toContain('line 1: the line has no "prev" field first: not written with log.tamper_evident');
    const help = await run(process.execPath, [CLI, 'logs', 'verify', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('oldest first');
    for (const o of [missing, r, plain]) expect(o.stderr).not.toMatch(/\n\s+at /);
  });
});
