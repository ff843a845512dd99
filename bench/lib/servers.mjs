// Starting and stopping the three things under test: the origin, egress-proxy and Squid.
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { collectMessages, freePort, nextMessage, run, start, stop, waitListening } from './proc.mjs';

export const ROOT = resolve(import.meta.dirname, '../..');
export const ORIGIN_HOST = '127.0.0.2'; // the proxy refuses 127.0.0.1 as a destination

/**
 * Open-file limit for children: 10,000 tunnels are 20,000 sockets in a proxy, so ask for 65536,
 * but never more than the hard limit (raising that needs CAP_SYS_RESOURCE, which containers lack).
 */
export async function fdLimit() {
  const r = await run('bash', ['-c', 'ulimit -Hn']);
  const hard = r.stdout.trim();
  return hard === 'unlimited' ? 65536 : Math.min(65536, Number(hard));
}

/**
 * Self-signed P-256 cert for 127.0.0.2, made fresh in the temp dir (keys never land in the repo).
 * `dnsNames` adds DNS SANs (the interception bench reaches the origin as *.bench.test).
 */
export async function makeCert(dir, { dnsNames = [] } = {}) {
  const cert = join(dir, 'origin-cert.pem');
  const key = join(dir, 'origin-key.pem');
  const san = [...dnsNames.map((n) => `DNS:${n}`), `IP:${ORIGIN_HOST}`].join(',');
  const r = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-days', '1', '-subj', `/CN=${ORIGIN_HOST}`, '-addext', `subjectAltName=${san}`, '-keyout', key, '-out', cert]);
  if (r.code !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  return { cert, key };
}

export async function startOrigin(dir, { cert, key }) {
  const child = start('node', [join(ROOT, 'bench/origin.mjs'), '--cert', cert, '--key', key],
    { fdLimit: await fdLimit(), stdout: 'pipe', stderr: join(dir, 'origin.stderr'), stdin: 'pipe' });
  collectMessages(child);
  const ready = await nextMessage(child, (m) => m.event === 'ready', 15_000);
  return { child, ...ready };
}

/**
 * Starts egress-proxy from dist/ with a temp config allowing only the origin's address.
 * `policyLines` are appended to the policy file (e.g. `rules:`); `dlpFiles` are copied into the
 * policy directory's dlp/ (profiles the rules name); `stdout` is where its stdout goes (a path:
 * /dev/null, or a FIFO someone reads).
 */
export async function startProxy(dir, { cpuProfDir, workers = 1, policyLines = [], dlpFiles = [], log = '{level: info}', configLines = [], inspection = '{enabled: false}', stdout = '/dev/null' } = {}) {
  const port = await freePort();
  const admin = await freePort();
  const policies = join(dir, 'policies');
  mkdirSync(policies, { recursive: true });
  writeFileSync(join(policies, '00-bench.yaml'), [
    'version: v1', 'default: allow', 'network:', `  allow_ranges: [${ORIGIN_HOST}/32]`,
    "  connect_ports: ['1-65535']", "  http_ports: ['1-65535']", ...policyLines, '',
  ].join('\n'));
  if (dlpFiles.length > 0) {
    mkdirSync(join(policies, 'dlp'), { recursive: true });
    for (const f of dlpFiles) copyFileSync(f, join(policies, 'dlp', basename(f)));
  }
  const config = join(dir, 'proxy.yaml');
  writeFileSync(config, [
    `listen: 127.0.0.1:${port}`, `admin: 127.0.0.1:${admin}`, 'node_id: bench', `log: ${log}`, ...configLines,
    'limits: {max_connections: 50000, drain_timeout_ms: 1000}', `workers: ${workers}`,
    // Plain forwarding and tunnels by default: interception is measured by bench/interception.mjs.
    `inspection: ${inspection}`, '',
  ].join('\n'));
  const cli = join(ROOT, 'dist/cli.js');
  if (!existsSync(cli)) throw new Error('dist/cli.js missing: run `npm run build` (or `npm run bench`)');
  const prof = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [];
  // Access log (one JSON line per request) goes to /dev/null unless asked: a terminal would be the bottleneck.
  const child = start('node', [...prof, cli, 'start', '--config', config, '--policies', policies],
    { fdLimit: await fdLimit(), stdout, stderr: join(dir, 'proxy.stderr') });
  try {
    await waitListening('127.0.0.1', port, { child });
  } catch (err) {
    let said = '';
    try { said = readFileSync(join(dir, 'proxy.stderr'), 'utf8').slice(-2000); } catch { /* nothing written */ }
    throw new Error(`${err.message}${said ? `; its stderr:\n${said}` : ''}`);
  }
  return { child, port, admin, name: 'egress-proxy' };
}

/** Version string, or undefined when squid is not installed. */
export async function squidVersion() {
  const r = await run('squid', ['-v'], { timeoutMs: 10_000 });
  return r.code === 0 ? /Version (\S+)/.exec(r.stdout)?.[1] : undefined;
}

/**
 * The squid.conf lines every bench Squid shares: one worker, localhost clients only (CONNECT to
 * any port: no SSL_ports rule), no cache, logs and state in `sdir`, and off the network (no ICMP
 * pinger; DNS only to 127.0.0.1, a stub or nothing).
 */
export function squidCommon(sdir, fds) {
  return [
    'workers 1',
    'acl localsrc src 127.0.0.0/8',
    'http_access allow localsrc',
    'http_access deny all',
    'cache deny all',
    `max_filedescriptors ${fds}`,
    // Same work as the proxy's access log, without a disk in the way.
    'access_log stdio:/dev/null',
    `cache_log ${join(sdir, 'cache.log')}`,
    `pid_filename ${join(sdir, 'squid.pid')}`,
    `coredump_dir ${sdir}`,
    'shutdown_lifetime 0 seconds',
    'visible_hostname bench-squid',
    'pinger_enable off',
    'dns_nameservers 127.0.0.1',
  ];
}

/** Squid as a plain forward proxy: one worker, no caching, localhost clients only, no network beyond loopback. */
export async function startSquid(dir) {
  const fds = await fdLimit();
  const port = await freePort();
  const sdir = join(dir, 'squid');
  mkdirSync(sdir, { recursive: true });
  // Squid started as root drops to its cache_effective_user (proxy), which must write here.
  chmodSync(sdir, 0o777);
  const conf = join(sdir, 'squid.conf');
  writeFileSync(conf, [
    `http_port 127.0.0.1:${port}`,
    ...squidCommon(sdir, fds),
    '',
  ].join('\n'));
  const parsed = await run('squid', ['-k', 'parse', '-f', conf], { timeoutMs: 20_000 });
  if (parsed.code !== 0) throw new Error(`squid -k parse failed:\n${parsed.stderr}`);
  const child = start('squid', ['-N', '-f', conf], { fdLimit: fds, stdout: join(sdir, 'stdout'), stderr: join(sdir, 'stderr') });
  await waitListening('127.0.0.1', port, { child, timeoutMs: 30_000 });
  return { child, port, name: 'squid' };
}

export { stop };
