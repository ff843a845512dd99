import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';

/** The built CLI (npm test builds it first). */
export const CLI = join(import.meta.dirname, '..', '..', 'dist', 'cli.js');

/** A proxy started through the real CLI in its own process. */
export interface CliProxy {
  child: ChildProcess;
  port: number;
  adminPort: number;
  url: string;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

/** Writes a config + policy dir for a CLI run and returns the config path. */
export function writeSetup(config: Record<string, unknown> = {}, policy: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'egress-cli-'));
  mkdirSync(join(dir, 'policies'));
  writeFileSync(join(dir, 'policies', 'p.yaml'), stringify({
    version: 'v1', default: 'allow',
    network: { allow_ranges: ['127.0.0.2/31', '127.0.0.4/30'], connect_ports: ['1-65535'], http_ports: ['1-65535'] },
    ...policy,
  }));
  const file = join(dir, 'config.yaml');
  writeFileSync(file, stringify({ listen: '127.0.0.1:0', admin: '127.0.0.1:0', node_id: 'cli-node', inspection: { enabled: false }, ...config }));
  return file;
}

/** Starts `egress-proxy start` with the given args and waits for its ready line. */
export async function startCli(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Promise<CliProxy> {
  const child = spawn(process.execPath, [CLI, 'start', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], cwd });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = await new Promise<{ listen: { port: number }; admin: { port: number } }>((resolve, reject) => {
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`not ready: ${out}\n${err}`));
    }, 10_000);
    const check = (): void => {
      const line = out.split('\n').find((l) => l.includes('"egress-proxy ready"'));
      if (line) { clearTimeout(t); resolve(JSON.parse(line)); }
    };
    child.stdout!.on('data', check);
    void exited.then((code) => { clearTimeout(t); reject(new Error(`exited ${code}: ${out}\n${err}`)); });
  });
  return {
    child, port: ready.listen.port, adminPort: ready.admin.port, url: `http://127.0.0.1:${ready.listen.port}`,
    stdout: () => out, stderr: () => err, exited,
  };
}

/** Peak resident memory of a process, in bytes, from /proc. */
export function peakRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}
