// Benchmark origin, run as its own process on 127.0.0.2 so its CPU is not shared with the
// orchestrator's event loop. Prints one JSON line with its ports once everything listens.
//   node bench/origin.mjs --cert c.pem --key k.pem
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({ options: { cert: { type: 'string' }, key: { type: 'string' }, host: { type: 'string', default: '127.0.0.2' } } });

const SMALL = Buffer.alloc(100, 'x');
// One shared 64 MiB buffer: the origin should cost as little CPU per byte as possible.
const BIG = Buffer.alloc(64 * 1024 * 1024, 'y');

// Upload sink: any POST or PUT is read to the end and discarded, then answered 200 with the byte
// count. Uploads cut short (a proxy aborting a blocked upload) are counted apart.
const uploads = { complete: 0, aborted: 0, bytes: 0 };
function sink(req, res) {
  let n = 0;
  let ended = false;
  req.on('data', (d) => { n += d.length; });
  req.on('end', () => {
    ended = true;
    uploads.complete++;
    uploads.bytes += n;
    const text = JSON.stringify({ bytes: n });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  });
  req.on('close', () => { if (!ended) uploads.aborted++; });
}

function handler(req, res) {
  if (req.method === 'POST' || req.method === 'PUT') {
    sink(req, res);
  } else if (req.url === '/small') {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': SMALL.length });
    res.end(SMALL);
  } else if (req.url === '/64m') {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG.length });
    res.end(BIG);
  } else {
    res.writeHead(404, { 'content-length': 0 });
    res.end();
  }
}

// Long keep-alive so wrk connections survive the gap between warm-up and measured run.
const serverOpts = { keepAliveTimeout: 60_000, headersTimeout: 65_000, requestTimeout: 0, noDelay: true };
const plain = http.createServer(serverOpts, handler);
const tls = https.createServer({ ...serverOpts, cert: readFileSync(opt.cert), key: readFileSync(opt.key) }, handler);

// Idle-tunnel target: accepts and holds sockets, never writes, so tunnels stay idle.
const held = new Set();
const hold = net.createServer((s) => {
  held.add(s);
  s.on('error', () => s.destroy());
  s.once('close', () => held.delete(s));
});

const listen = (srv) => new Promise((r) => srv.listen({ host: opt.host, port: 0, backlog: 4096 }, () => r(srv.address().port)));
const ports = { http: await listen(plain), https: await listen(tls), hold: await listen(hold) };
process.stdout.write(JSON.stringify({ event: 'ready', host: opt.host, ...ports }) + '\n');

// `held` on stdin: report how many sockets are held (lets the orchestrator confirm tunnels reached us).
// `uploads`: the upload sink's counters (lets the DLP bench confirm what reached the origin).
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  if (d.includes('held')) process.stdout.write(JSON.stringify({ event: 'held', count: held.size }) + '\n');
  if (d.includes('uploads')) process.stdout.write(JSON.stringify({ event: 'uploads', ...uploads }) + '\n');
});
process.stdin.on('end', () => process.exit(0));
