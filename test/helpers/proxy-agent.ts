import type { ClientRequest, RequestOptions } from 'node:http';
import { Agent } from 'node:https';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/**
 * A minimal CONNECT-tunnelling agent for clients (like `ws`) that take a Node agent: it opens a
 * tunnel through the proxy on 127.0.0.1:port, then speaks TLS to the destination inside it.
 */
export class HttpsProxyAgent extends Agent {
  constructor(private readonly proxyPort: number) {
    super({ keepAlive: false });
  }

  override createConnection(options: RequestOptions & { servername?: string; ca?: string | Buffer }, done?: (err: Error | null, s: Socket) => void): undefined {
    // Node's Agent always passes the callback when createConnection returns nothing.
    const cb = (err: Error | null, s?: Socket): void => done?.(err, s as Socket);
    const host = String(options.host);
    const port = Number(options.port);
    const raw = connect({ host: '127.0.0.1', port: this.proxyPort }, () => raw.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`));
    let head = '';
    const onData = (d: Buffer): void => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      raw.off('data', onData);
      if (!/^HTTP\/1\.1 200/.test(head)) return cb(new Error(`proxy refused: ${head.split('\r\n')[0]}`));
      const tls = tlsConnect({ socket: raw, servername: options.servername ?? host, ca: options.ca });
      tls.once('secureConnect', () => cb(null, tls));
      tls.once('error', (e) => cb(e));
    };
    raw.on('data', onData);
    raw.once('error', (e) => cb(e));
    return undefined;
  }
}

export type { ClientRequest };
