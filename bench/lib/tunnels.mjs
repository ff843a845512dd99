// Idle-tunnel memory: RSS of a proxy before, while holding N idle CONNECT tunnels, and after.
import { join } from 'node:path';
import { collectMessages, nextMessage, rssKB, sleep, start, stop } from './proc.mjs';
import { fdLimit, ROOT } from './servers.mjs';

/** How many tunnels fit: each costs the proxy two sockets, and the fd hard limit may be low. */
export async function tunnelCount(wanted) {
  return Math.min(wanted, Math.floor(((await fdLimit()) - 200) / 2));
}

export async function holdTunnels(proxy, origin, count, dir) {
  await sleep(1000); // let start-up garbage settle before the baseline
  const before = rssKB(proxy.child.pid);
  const client = start('node', [join(ROOT, 'bench/tunnels-client.mjs'), '--proxy', `127.0.0.1:${proxy.port}`,
    '--target', `${origin.host}:${origin.hold}`, '--count', String(count)],
  { fdLimit: await fdLimit(), stdout: 'pipe', stdin: 'pipe', stderr: join(dir, `tunnels-${proxy.name}.stderr`) });
  try {
    collectMessages(client);
    const opened = await nextMessage(client, (m) => m.event === 'open', 90_000);
    await sleep(1000);
    const withTunnels = rssKB(proxy.child.pid);
    origin.child.stdin.write('held\n');
    const held = await nextMessage(origin.child, (m) => m.event === 'held', 5000);
    client.stdin.write('close\n');
    await nextMessage(client, (m) => m.event === 'closed', 20_000);
    await sleep(2000);
    const after = rssKB(proxy.child.pid);
    return {
      tunnels: opened.open, failed: opened.failed, first_error: opened.firstError, open_ms: opened.ms,
      origin_held: held.count,
      rss_before_kb: before, rss_with_kb: withTunnels, rss_after_close_kb: after,
      kb_per_tunnel: opened.open > 0 ? (withTunnels - before) / opened.open : undefined,
    };
  } finally {
    await stop(client, 2000);
  }
}
