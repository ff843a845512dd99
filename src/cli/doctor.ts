import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import type { Command } from 'commander';
import { ProxyAgent, request } from 'undici';
import { PROBE_HOST } from '../listeners/probe.js';

type Level = 'ok' | 'warn' | 'FAIL';
interface Check { level: Level; what: string; detail?: string }

function envOf(env: NodeJS.ProcessEnv, name: string): string | undefined {
  return env[name] ?? env[name.toLowerCase()];
}

async function probeHttp(proxy: string): Promise<Check> {
  const agent = new ProxyAgent({ uri: proxy, proxyTunnel: false });
  try {
    const res = await request(`http://${PROBE_HOST}/`, { dispatcher: agent, headersTimeout: 5000, bodyTimeout: 5000 });
    const body = await res.body.text();
    const node = res.headers['x-egress-node'];
    if (res.statusCode === 200 && node) return { level: 'ok', what: `plain HTTP through ${proxy} reaches egress-proxy node ${String(node)}`, detail: body.trim() };
    return { level: 'FAIL', what: `${proxy} answered ${res.statusCode} but is not an egress-proxy` };
  } catch (err) {
    return { level: 'FAIL', what: `cannot reach the proxy at ${proxy}`, detail: (err as Error).message };
  } finally {
    await agent.close();
  }
}

function probeConnect(proxy: string): Promise<Check> {
  const u = new URL(proxy);
  return new Promise((resolve) => {
    const s = connect({ host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 80) });
    let data = '';
    const t = setTimeout(() => { s.destroy(); resolve({ level: 'FAIL', what: 'CONNECT probe timed out' }); }, 5000);
    s.on('connect', () => s.write(`CONNECT ${PROBE_HOST}:443 HTTP/1.1\r\nHost: ${PROBE_HOST}:443\r\n\r\n`));
    s.on('data', (d) => { data += d.toString('latin1'); });
    s.on('close', () => {
      clearTimeout(t);
      if (/^HTTP\/1\.1 200/.test(data) && /x-egress-node:/i.test(data)) resolve({ level: 'ok', what: 'CONNECT (HTTPS) tunnels are accepted by the proxy' });
      else resolve({ level: 'FAIL', what: 'CONNECT probe got no egress-proxy answer', detail: data.split('\r\n')[0] });
    });
    s.on('error', (err) => { clearTimeout(t); resolve({ level: 'FAIL', what: 'CONNECT probe failed', detail: err.message }); });
  });
}

function probeCurl(env: NodeJS.ProcessEnv): Promise<Check> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '5', `http://${PROBE_HOST}/`], { env }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') return resolve({ level: 'warn', what: 'curl not installed; skipped the curl check' });
      if (stdout.includes('"proxy":"egress-proxy"')) return resolve({ level: 'ok', what: 'curl, with this environment, goes through egress-proxy' });
      resolve({ level: 'FAIL', what: 'curl, with this environment, does not go through egress-proxy', detail: (stderr || stdout).trim() });
    });
  });
}

/** Runs every check for the given environment; exported for tests. */
export async function runDoctor(env: NodeJS.ProcessEnv, proxyOpt?: string): Promise<Check[]> {
  const checks: Check[] = [];
  const https = envOf(env, 'HTTPS_PROXY');
  const http = envOf(env, 'HTTP_PROXY');
  const noProxy = envOf(env, 'NO_PROXY');
  checks.push(https ? { level: 'ok', what: `HTTPS_PROXY=${redact(https)}` } : { level: proxyOpt ? 'warn' : 'FAIL', what: 'HTTPS_PROXY is not set: HTTPS traffic of curl, git, npm, pip, Go goes direct' });
  checks.push(http ? { level: 'ok', what: `HTTP_PROXY=${redact(http)}` } : { level: 'warn', what: 'HTTP_PROXY is not set: plain-HTTP traffic goes direct' });
  if (env.HTTP_PROXY && !env.http_proxy) {
    checks.push({ level: 'warn', what: 'HTTP_PROXY is set but http_proxy is not: curl and wget read only the lower-case name for plain HTTP' });
  }
  if (noProxy) {
    const entries = noProxy.split(',').map((s) => s.trim()).filter(Boolean);
    if (entries.includes('*')) checks.push({ level: 'FAIL', what: 'NO_PROXY=* sends everything direct' });
    else checks.push({ level: 'ok', what: `NO_PROXY has ${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}: ${entries.join(',')}` });
  }
  if (env.NODE_USE_ENV_PROXY !== '1') {
    checks.push({ level: 'warn', what: "NODE_USE_ENV_PROXY is not 1: Node's fetch ignores HTTPS_PROXY (set it, or use undici's EnvHttpProxyAgent)" });
  }
  const proxy = proxyOpt ?? https ?? http;
  if (!proxy) return checks;
  checks.push(await probeHttp(proxy));
  checks.push(await probeConnect(proxy));
  if (!proxyOpt) checks.push(await probeCurl(env));
  return checks;
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '****';
    return u.toString();
  } catch {
    return url;
  }
}

/** `egress-proxy doctor`: checks, from a client machine, that traffic really goes through the proxy. */
export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('Check that this machine\'s environment sends traffic through egress-proxy.')
    .option('--proxy <url>', 'probe this proxy instead of the one HTTPS_PROXY / HTTP_PROXY name')
    .option('--json', 'print the checks as JSON')
    .action(async (opts: { proxy?: string; json?: boolean }) => {
      const checks = await runDoctor(process.env, opts.proxy);
      if (opts.json) process.stdout.write(JSON.stringify(checks, null, 2) + '\n');
      else for (const c of checks) process.stdout.write(`${c.level.padEnd(4)} ${c.what}${c.detail ? `\n     ${c.detail}` : ''}\n`);
      process.exitCode = checks.some((c) => c.level === 'FAIL') ? 1 : 0;
    });
}
