import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { freePort } from './ports.js';

const INSTALL = 'apt-get install -y c-icap libc-icap-mod-contentfiltering';

/** A real c-icap server on loopback with an `echo` and a `filter` (srv_content_filtering) service. */
export interface CIcap {
  port: number;
  dir: string;
  /** icap://127.0.0.1:port/<service> */
  url(service: string): string;
  /** c-icap's access log (one line per ICAP request: method, service, status). */
  accessLog(): string;
  stop(): Promise<void>;
}

function findBinary(): string {
  for (const d of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(d, 'c-icap');
    try { accessSync(p, constants.X_OK); return p; } catch { /* next */ }
  }
  throw new Error(`c-icap is not installed (no c-icap on PATH); install it with: ${INSTALL}`);
}

function findServicesDir(): string {
  const candidates = ['/usr/lib/c_icap', '/usr/local/lib/c_icap', '/usr/lib64/c_icap'];
  if (existsSync('/usr/lib')) for (const d of readdirSync('/usr/lib')) candidates.push(join('/usr/lib', d, 'c_icap'));
  const dir = candidates.find((d) => existsSync(join(d, 'srv_echo.so')));
  if (!dir) throw new Error(`c-icap's srv_echo.so was not found; install it with: ${INSTALL}`);
  if (!existsSync(join(dir, 'srv_content_filtering.so'))) throw new Error(`srv_content_filtering.so is missing in ${dir}; install it with: ${INSTALL}`);
  return dir;
}

/** Sends OPTIONS for `echo`; resolves true once c-icap answers 200. */
function probe(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    let data = '';
    const done = (ok: boolean): void => { clearTimeout(t); s.destroy(); resolve(ok); };
    const t = setTimeout(() => done(false), 1000);
    s.on('connect', () => s.write(`OPTIONS icap://127.0.0.1:${port}/echo ICAP/1.0\r\nHost: 127.0.0.1\r\nEncapsulated: null-body=0\r\n\r\n`));
    s.on('data', (d) => { data += d.toString('latin1'); if (data.includes('\r\n\r\n')) done(data.startsWith('ICAP/1.0 200')); });
    s.on('error', () => done(false));
    s.on('close', () => done(false));
  });
}

/**
 * Starts c-icap in the foreground (-N) with a temp config: its own port, logs, pid file, command
 * socket and tmp dir, nothing under /etc or /var. `filterRules` are srv_content_filtering lines.
 * Throws (never skips) when c-icap or the content-filtering module is not installed.
 */
export async function startCIcap(opts: { filterRules?: string[]; extraConfig?: string[] } = {}): Promise<CIcap> {
  const bin = findBinary();
  const servicesDir = findServicesDir();
  let lastError = '';
  // The free port can be taken between probing and c-icap's bind; a few tries cover that race.
  for (let attempt = 0; attempt < 3; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), 'c-icap-'));
    const port = await freePort();
    const conf = [
      `Port 127.0.0.1:${port}`,
      `PidFile ${dir}/c-icap.pid`,
      `CommandsSocket ${dir}/c-icap.ctl`,
      `ServerLog ${dir}/server.log`,
      `AccessLog ${dir}/access.log`,
      `TmpDir ${dir}`,
      // One process with enough threads: c-icap holds a thread per open (keep-alive) connection.
      'StartServers 1', 'MaxServers 1', 'ThreadsPerChild 64', 'MinSpareThreads 1', 'MaxSpareThreads 64',
      'Timeout 30', 'KeepAliveTimeout 60', 'MaxKeepAliveRequests 1000', 'DebugLevel 1',
      `ModulesDir ${servicesDir}`,
      `ServicesDir ${servicesDir}`,
      'TemplateDir /usr/share/c_icap/templates/',
      'TemplateDefaultLanguage en',
      ...(existsSync('/etc/c-icap/c-icap.magic') ? ['LoadMagicFile /etc/c-icap/c-icap.magic'] : []),
      'Service echo srv_echo.so',
      'Service filter srv_content_filtering.so',
      ...(opts.filterRules ?? []),
      ...(opts.extraConfig ?? []),
    ];
    writeFileSync(join(dir, 'c-icap.conf'), conf.join('\n') + '\n');
    let output = '';
    const child: ChildProcess = spawn(bin, ['-N', '-f', join(dir, 'c-icap.conf')], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child.stdout!.on('data', (d: Buffer) => { output += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { output += d.toString(); });
    let exited = false;
    child.once('exit', () => { exited = true; });
    let ready = false;
    for (let i = 0; i < 100 && !exited && !ready; i++) {
      ready = await probe(port);
      if (!ready) await new Promise((r) => setTimeout(r, 100));
    }
    const log = (): string => { try { return readFileSync(join(dir, 'server.log'), 'utf8'); } catch { return ''; } };
    if (ready) {
      return {
        port,
        dir,
        url: (service) => `icap://127.0.0.1:${port}/${service}`,
        accessLog: () => { try { return readFileSync(join(dir, 'access.log'), 'utf8'); } catch { return ''; } },
        stop: () => stopChild(child).then(() => rmSync(dir, { recursive: true, force: true })),
      };
    }
    lastError = `${output}\n${log()}`.trim().slice(-2000);
    await stopChild(child);
    rmSync(dir, { recursive: true, force: true });
  }
  throw new Error(`c-icap did not start: ${lastError}`);
}

/** SIGTERM to c-icap (it stops its own children); SIGKILL to the process group it leads if it lingers. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const t = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* already gone */ } }, 5000);
  await gone;
  clearTimeout(t);
}

/** What a fake server does with one complete ICAP request. */
export type FakeAction = { send: string | Buffer; close?: boolean } | 'hang' | 'close';

/** A raw TCP "ICAP server" for the misbehaviours c-icap does not do: garbage, silence, cut answers. */
export interface FakeIcap { port: number; url: string; requests: Buffer[]; connections: number; close(): Promise<void> }

function completeRequest(buf: Buffer): number {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return -1;
  const head = buf.subarray(0, headEnd).toString('latin1');
  const encap = /^Encapsulated:\s*(.*)$/im.exec(head)?.[1] ?? 'null-body=0';
  const entries = encap.split(',').map((p) => p.trim().split('='));
  const last = entries[entries.length - 1]!;
  const bodyStart = headEnd + 4 + Number(last[1]);
  if (buf.length < bodyStart) return -1;
  if (last[0] === 'null-body') return bodyStart;
  // Test bodies never contain a line "0"; the first zero chunk ends the (preview) body.
  const m = /(^|\r\n)0(; ieof)?\r\n\r\n/.exec(buf.subarray(bodyStart).toString('latin1'));
  return m ? bodyStart + m.index + m[0].length : -1;
}

/** Starts a fake ICAP server; `script(request, n)` decides the answer to the n-th request (0-based). */
export async function startFakeIcap(script: (req: Buffer, n: number) => FakeAction): Promise<FakeIcap> {
  const sockets = new Set<Socket>();
  const fake: FakeIcap = { port: 0, url: '', requests: [], connections: 0, close: async () => undefined };
  const server: Server = createServer((s) => {
    fake.connections += 1;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (let end = completeRequest(buf); end >= 0; end = completeRequest(buf)) {
        const req = buf.subarray(0, end);
        buf = buf.subarray(end);
        fake.requests.push(req);
        const action = script(req, fake.requests.length - 1);
        if (action === 'hang') continue;
        if (action === 'close') { s.destroy(); return; }
        s.write(action.send);
        if (action.close) { s.end(); return; }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  fake.port = (server.address() as { port: number }).port;
  fake.url = `icap://127.0.0.1:${fake.port}/svc`;
  fake.close = () => new Promise<void>((r) => { for (const s of sockets) s.destroy(); server.close(() => r()); });
  return fake;
}

/** A TCP relay in front of a server that counts connections and can cut them all (an idle-timeout stand-in). */
export async function startRelay(port: number): Promise<{ port: number; connections: number; dropAll(): void; close(): Promise<void> }> {
  const pairs = new Set<Socket>();
  const relay = { port: 0, connections: 0, dropAll: () => { for (const s of pairs) s.destroy(); }, close: async () => undefined as void };
  const server = createServer((client) => {
    relay.connections += 1;
    const upstream = connect({ host: '127.0.0.1', port });
    pairs.add(client);
    pairs.add(upstream);
    client.pipe(upstream).pipe(client);
    const end = (): void => { client.destroy(); upstream.destroy(); pairs.delete(client); pairs.delete(upstream); };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  relay.port = (server.address() as { port: number }).port;
  relay.close = () => new Promise<void>((r) => { relay.dropAll(); server.close(() => r()); });
  return relay;
}
