// Set-up for the TLS interception bench: a loopback DNS stub, egress-proxy with inspection on,
// and Squid with ssl-bump. See docs/benchmarks.md "TLS interception".
import { mkdirSync, writeFileSync } from 'node:fs';
import dgram from 'node:dgram';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { fdLimit, ORIGIN_HOST, ROOT, squidCommon } from './servers.mjs';
import { cleanEnv, collectMessages, freePort, nextMessage, run, start, stop, waitListening } from './proc.mjs';

export const DOMAIN = 'bench.test';

/**
 * Answers A 127.0.0.2 for *.bench.test, nothing else, on 127.0.0.1:53 (Squid's dns_nameservers
 * takes no port, hence 53, hence root). Both proxies resolve every new name through it, as they
 * would resolve a real new site; in-process because it is a few hundred tiny packets a second.
 */
export async function startDns() {
  const sock = dgram.createSocket('udp4');
  const stats = { queries: 0 };
  sock.on('message', (msg, from) => {
    let q;
    try { q = dnsPacket.decode(msg); } catch { return; }
    stats.queries++;
    const ours = q.questions.every((x) => x.name.toLowerCase().endsWith(`.${DOMAIN}`));
    const answers = q.questions.filter((x) => x.type === 'A' && ours).map((x) => ({ type: 'A', name: x.name, ttl: 300, data: ORIGIN_HOST }));
    // NXDOMAIN (rcode 3) outside bench.test: nothing in the bench may leave loopback.
    const flags = dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.RECURSION_AVAILABLE | (ours ? 0 : 3);
    sock.send(dnsPacket.encode({ type: 'response', id: q.id, flags, questions: q.questions, answers }), from.port, from.address);
  });
  await new Promise((resolve, reject) => {
    sock.once('error', (e) => reject(new Error(`DNS stub cannot bind 127.0.0.1:53 (${e.code}): run as root, port 53 free`)));
    sock.bind(53, '127.0.0.1', resolve);
  });
  return { port: 53, stats, close: () => sock.close() };
}

/**
 * egress-proxy with an interception CA made by its own CLI, inspecting every CONNECT. The origin's
 * cert is trusted with `upstream_ca_file` (the documented way), or with `trust: 'env'` through
 * NODE_EXTRA_CA_CERTS, to show what a new upstream connection costs without that option.
 */
export async function startInterceptingProxy(dir, { originCert, trust = 'file' }) {
  const pdir = join(dir, 'proxy');
  const ca = join(pdir, 'ca');
  mkdirSync(join(pdir, 'policies'), { recursive: true });
  const cli = join(ROOT, 'dist/cli.js');
  const init = await run('node', [cli, 'ca', 'init', '--dir', ca]);
  if (init.code !== 0) throw new Error(`ca init failed: ${init.stderr}`);
  const [port, admin] = [await freePort(), await freePort()];
  writeFileSync(join(pdir, 'policies', '00-bench.yaml'), [
    'version: v1', 'default: allow', 'network:', `  allow_ranges: [${ORIGIN_HOST}/32]`,
    "  connect_ports: ['1-65535']", "  http_ports: ['1-65535']",
    'rules:', '  - id: inspect-all', '    action: allow', '    inspect: true', '',
  ].join('\n'));
  writeFileSync(join(pdir, 'proxy.yaml'), [
    `listen: 127.0.0.1:${port}`, `admin: 127.0.0.1:${admin}`, 'node_id: bench', 'log: {level: info}',
    'limits: {max_connections: 50000, drain_timeout_ms: 1000}',
    "dns: {servers: ['127.0.0.1:53']}",
    `inspection: {enabled: true, ca_dir: ${ca}${trust === 'file' ? `, upstream_ca_file: ${originCert}` : ''}}`, '',
  ].join('\n'));
  // Access log to /dev/null, as in the main bench: the JSON is still built and written.
  const child = start('node', [cli, 'start', '--config', join(pdir, 'proxy.yaml'), '--policies', join(pdir, 'policies')],
    { fdLimit: await fdLimit(), stdout: '/dev/null', stderr: join(dir, 'proxy.stderr'),
      env: trust === 'env' ? { ...cleanEnv(), NODE_EXTRA_CA_CERTS: originCert } : undefined });
  await waitListening('127.0.0.1', port, { child });
  return { child, port, ca: join(ca, 'ca.pem'), name: 'egress-proxy' };
}

/**
 * Squid 5 ssl-bump. `server-first` (the usual config): peek at the ClientHello, then bump: Squid
 * connects to the server first, mints a leaf mimicking its certificate, and pins that server
 * connection to the client's. `client-first`: bump at step 1, before any server connection, as
 * egress-proxy does; HTTPS requests then go out over Squid's pooled server connections.
 * The bump CA is P-256 like the proxy's leaves: Squid signs handshakes with its CA key, and an RSA
 * CA would make each of its handshakes slower for no reason of design.
 */
export async function startBumpingSquid(dir, { originCert, mode = 'server-first' }) {
  const sdir = join(dir, 'squid-bump');
  mkdirSync(sdir, { recursive: true });
  const [cert, key, db] = [join(sdir, 'bump.pem'), join(sdir, 'bump.key'), join(sdir, 'ssl_db')];
  const mk = await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-subj', '/CN=bench Squid bump CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-keyout', key, '-out', cert]);
  if (mk.code !== 0) throw new Error(`openssl (bump CA) failed: ${mk.stderr}`);
  const db0 = await run('/usr/lib/squid/security_file_certgen', ['-c', '-s', db, '-M', '16MB']);
  if (db0.code !== 0) throw new Error(`security_file_certgen -c failed: ${db0.stderr}`);
  const fds = await fdLimit();
  const port = await freePort();
  const conf = join(sdir, 'squid.conf');
  writeFileSync(conf, [
    `http_port 127.0.0.1:${port} ssl-bump tls-cert=${cert} tls-key=${key} generate-host-certificates=on dynamic_cert_mem_cache_size=16MB`,
    `sslcrtd_program /usr/lib/squid/security_file_certgen -s ${db} -M 16MB`,
    // 20 concurrent new names must queue, not overflow the helper queue.
    'sslcrtd_children 5 startup=5 idle=1 queue-size=64',
    ...(mode === 'server-first' ? ['acl step1 at_step SslBump1', 'ssl_bump peek step1'] : []),
    'ssl_bump bump all',
    // Without this Squid keys its leaves by the server certificate, and every *.bench.test name
    // shares one: a new name would never cost a mint. With it the leaf is named after the CONNECT
    // host, so each new name is minted, as each new real site (own certificate) would be.
    'sslproxy_cert_adapt setCommonName all',
    // Squid verifies the origin (chain and name) against the bench origin's self-signed cert.
    `tls_outgoing_options cafile=${originCert}`,
    ...squidCommon(sdir, fds), // DNS to 127.0.0.1: the stub above
    '',
  ].join('\n'));
  // Squid runs as `proxy` once started: its logs, the cert db and the CA key must be its own.
  const own = await run('chown', ['-R', 'proxy', sdir]);
  if (own.code !== 0) throw new Error(`chown proxy ${sdir} failed (run as root): ${own.stderr}`);
  const parsed = await run('squid', ['-k', 'parse', '-f', conf], { timeoutMs: 20_000 });
  if (parsed.code !== 0) throw new Error(`squid -k parse failed:\n${parsed.stderr}`);
  const child = start('squid', ['-N', '-f', conf], { fdLimit: fds, stdout: join(sdir, 'stdout'), stderr: join(sdir, 'stderr') });
  await waitListening('127.0.0.1', port, { child, timeoutMs: 30_000 });
  return { child, port, ca: cert, name: 'squid', log: join(sdir, 'cache.log') };
}

/**
 * Runs bench/tls-client.mjs once against `target` ({port, ca, proxy?}) and returns its result line;
 * throws if it fails or hangs past `timeLimitS` + 30 s. Its stderr goes to `dir`/client.stderr.
 */
export async function tlsClient(dir, target, args, timeLimitS) {
  const c = start('node', [join(ROOT, 'bench/tls-client.mjs'), '--port', String(target.port), '--ca', target.ca,
    ...(target.proxy ? ['--proxy', `127.0.0.1:${target.proxy.port}`] : []), ...args],
  { stdout: 'pipe', stderr: join(dir, 'client.stderr') });
  try {
    collectMessages(c);
    return await nextMessage(c, (m) => m.event === 'done', (timeLimitS + 30) * 1000);
  } finally {
    await stop(c, 2000);
  }
}
