import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';

/**
 * A loopback port whose accept queue is full, so new connections hang in SYN_SENT: the only
 * honest way to produce a connect timeout without leaving the machine. A listener with backlog 0
 * that never accepts (Node always accepts, hence a tiny Python process) plus sockets that fill it.
 */
export async function startBlackhole(host = '127.0.0.8'): Promise<{ host: string; port: number; close(): void }> {
  const child: ChildProcess = spawn('python3', ['-c', [
    'import socket, sys, time',
    's = socket.socket()',
    `s.bind(("${host}", 0))`,
    's.listen(0)',
    'print(s.getsockname()[1], flush=True)',
    'time.sleep(600)',
  ].join('\n')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [data] = (await once(child.stdout!, 'data')) as [Buffer];
  const port = Number(data.toString().trim());
  const fillers: Socket[] = [];
  // Fill the accept queue; each filler completes the handshake and sits there unaccepted.
  for (let i = 0; i < 4; i++) {
    const s = connect({ host, port });
    s.on('error', () => undefined);
    fillers.push(s);
  }
  await new Promise((r) => setTimeout(r, 200));
  return { host, port, close: () => { for (const s of fillers) s.destroy(); child.kill('SIGKILL'); } };
}
