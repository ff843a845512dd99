// The least a Node.js intercepting proxy can do for a kept-alive HTTPS request: answer CONNECT,
// terminate TLS with one fixed certificate (no minting, no policy, no log, no DLP), parse the
// request with node:http and forward it with undici over a verified, pooled TLS connection. The
// interception bench runs it as a floor: no proxy written on this runtime can go below its cost.
//   node bench/minimal-interceptor.mjs PORT CERT KEY UPSTREAM_CA
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { Pool } from 'undici';

const [port, certFile, keyFile, caFile] = process.argv.slice(2);
const context = tls.createSecureContext({ cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: 'TLSv1.2' });
const ca = readFileSync(caFile);
// Every bench name is served at 127.0.0.2, dialled directly (no resolver): one pool per TLS server name.
const pools = new Map();
const poolFor = (name, port) => {
  let p = pools.get(`${name}:${port}`);
  if (!p) pools.set(`${name}:${port}`, (p = new Pool(`https://127.0.0.2:${port}`, { keepAliveTimeout: 4000, pipelining: 1, connect: { ca, servername: name, minVersion: 'TLSv1.2' } })));
  return p;
};

const inner = http.createServer((req, res) => {
  const pool = poolFor(req.socket.servername, req.socket.upstreamPort);
  pool.dispatch({ path: req.url, method: req.method, headers: req.rawHeaders, body: req.method === 'GET' ? null : req }, {
    onRequestStart() {},
    onResponseStart(_c, status, headers) { res.writeHead(status, headers); },
    onResponseData(c, chunk) { if (!res.write(chunk)) { c.pause(); res.once('drain', () => c.resume()); } },
    onResponseEnd() { res.end(); },
    onResponseError() { res.destroy(); },
  });
});

net.createServer({ noDelay: true }, (sock) => {
  let head = '';
  const onData = (d) => {
    head += d.toString('latin1');
    const end = head.indexOf('\r\n\r\n');
    if (end === -1) return;
    sock.off('data', onData);
    sock.pause();
    if (end + 4 < head.length) sock.unshift(Buffer.from(head.slice(end + 4), 'latin1'));
    const upstreamPort = Number(/^CONNECT [^ ]*:(\d+) /.exec(head)?.[1]);
    sock.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    const t = new tls.TLSSocket(sock, { isServer: true, secureContext: context, ALPNProtocols: ['http/1.1'] });
    t.on('error', () => t.destroy());
    t.upstreamPort = upstreamPort;
    t.once('secure', () => inner.emit('connection', t));
  };
  sock.on('data', onData);
  sock.on('error', () => sock.destroy());
}).listen(Number(port), '127.0.0.1', () => process.stdout.write(JSON.stringify({ event: 'ready' }) + '\n'));
// A clean exit on SIGTERM, so `--cpu-prof` can write its profile.
process.on('SIGTERM', () => process.exit(0));
