// A minimal absolute-form forward proxy (no policy, no log, no header rules), in one of three
// styles, so bench/forwarders.mjs can compare the forwarding library alone.
//   node bench/minimal-forwarder.mjs PORT undici|http-proxy|node-http
import http from 'node:http';
import httpProxy from 'http-proxy';
import { Agent } from 'undici';

const [port, mode] = [Number(process.argv[2]), process.argv[3]];
const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 256 });
const undici = new Agent({ keepAliveTimeout: 4000, pipelining: 1 });
const hp = httpProxy.createProxyServer({ agent: keepAlive, xfwd: false });
hp.on('error', (_err, _req, res) => res.destroy?.());

const styles = {
  undici(req, res, u) {
    undici.dispatch({ origin: u.origin, path: u.pathname + u.search, method: req.method, headers: req.rawHeaders, body: req.method === 'GET' ? null : req }, {
      onRequestStart() {},
      onResponseStart(_c, status, headers) { res.writeHead(status, headers); },
      onResponseData(c, chunk) { if (!res.write(chunk)) { c.pause(); res.once('drain', () => c.resume()); } },
      onResponseEnd() { res.end(); },
      onResponseError() { res.destroy(); },
    });
  },
  'http-proxy'(req, res, u) {
    req.url = u.pathname + u.search; // http-proxy appends req.url to the target
    hp.web(req, res, { target: u.origin });
  },
  'node-http'(req, res, u) {
    const up = http.request({ agent: keepAlive, host: u.hostname, port: u.port, path: u.pathname + u.search, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.rawHeaders);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  },
};
const handle = styles[mode];
if (!handle) throw new Error(`unknown style ${mode}`);
http.createServer({ noDelay: true }, (req, res) => handle(req, res, new URL(req.url))).listen(port, '127.0.0.1');
