import { connect, type Socket } from 'node:net';

/** Sends raw bytes to host:port and collects everything until the peer closes or `waitMs` passes. */
export function rawExchange(port: number, payload: string | Buffer, opts: { host?: string; waitMs?: number; untilClose?: boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: opts.host ?? '127.0.0.1', port });
    let data = '';
    const timer = setTimeout(() => { s.destroy(); resolve(data); }, opts.waitMs ?? 3000);
    s.on('connect', () => s.write(payload));
    s.on('data', (d) => { data += d.toString('latin1'); });
    s.on('close', () => { clearTimeout(timer); resolve(data); });
    s.on('error', (e) => { clearTimeout(timer); if (data) resolve(data); else reject(e); });
  });
}

/** Opens a socket and resolves once connected. */
export function openSocket(port: number, host = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Reads from `s` until `marker` has been seen (or the socket closes); returns everything read. */
export function readUntil(s: Socket, marker: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = '';
    const onData = (d: Buffer): void => {
      data += d.toString('latin1');
      if (data.includes(marker)) { cleanup(); resolve(data); }
    };
    const onClose = (): void => { cleanup(); resolve(data); };
    const timer = setTimeout(() => { cleanup(); reject(new Error(`timeout waiting for ${JSON.stringify(marker)}; got ${JSON.stringify(data)}`)); }, timeoutMs);
    const cleanup = (): void => { clearTimeout(timer); s.off('data', onData); s.off('close', onClose); };
    s.on('data', onData);
    s.on('close', onClose);
  });
}
