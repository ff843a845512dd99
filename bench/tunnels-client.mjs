// Opens N idle CONNECT tunnels through an HTTP proxy and holds them until told to close.
// A separate process so its sockets and heap never count against the orchestrator.
//   node bench/tunnels-client.mjs --proxy 127.0.0.1:3128 --target 127.0.0.2:9000 --count 10000
// stdout: {"event":"open",...} once all are open (or the time limit hit); on stdin "close":
// destroys them all and prints {"event":"closed"}.
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    proxy: { type: 'string' }, target: { type: 'string' },
    count: { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '200' },
    'time-limit-ms': { type: 'string', default: '60000' },
  },
});
const [proxyHost, proxyPort] = opt.proxy.split(':');
const count = Number(opt.count);
const concurrency = Number(opt.concurrency);
const request = Buffer.from(`CONNECT ${opt.target} HTTP/1.1\r\nHost: ${opt.target}\r\n\r\n`);
const deadline = Date.now() + Number(opt['time-limit-ms']);

const open = new Set();
let failed = 0;
let firstError;

function openOne() {
  return new Promise((resolve) => {
    const s = net.connect({ host: proxyHost, port: Number(proxyPort) });
    let head = '';
    const fail = (why) => {
      failed++;
      firstError ??= why;
      s.destroy();
      resolve();
    };
    s.setTimeout(10_000, () => fail('timeout'));
    s.once('error', (e) => fail(e.code ?? e.message));
    s.once('connect', () => s.write(request));
    s.on('data', function onData(d) {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      s.off('data', onData);
      s.setTimeout(0);
      if (!/^HTTP\/1\.[01] 200/.test(head)) return fail(head.split('\r\n')[0]);
      open.add(s);
      s.removeAllListeners('error');
      s.on('error', () => {});
      s.once('close', () => open.delete(s));
      resolve();
    });
  });
}

const started = Date.now();
let next = 0;
async function worker() {
  while (next < count && Date.now() < deadline) {
    next++;
    await openOne();
  }
}
await Promise.all(Array.from({ length: concurrency }, worker));
process.stdout.write(JSON.stringify({ event: 'open', open: open.size, failed, firstError, ms: Date.now() - started }) + '\n');

process.stdin.setEncoding('utf8');
process.stdin.on('data', async (d) => {
  if (!d.includes('close')) return;
  const all = [...open];
  for (const s of all) s.destroy();
  const t = Date.now() + 10_000;
  while (open.size > 0 && Date.now() < t) await new Promise((r) => setTimeout(r, 20));
  process.stdout.write(JSON.stringify({ event: 'closed', remaining: open.size }) + '\n');
  process.exit(0);
});
// The orchestrator went away: do not linger holding 10,000 sockets.
process.stdin.on('end', () => process.exit(0));
