import { once } from 'node:events';
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Pem } from './pki.js';

/** What the origin saw of one request. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  bodyBytes: number;
  body: Buffer | undefined;
  trailers: NodeJS.Dict<string>;
}

/** A real origin server on a loopback address other than 127.0.0.1 (which the proxy denies). */
export interface Origin {
  server: Server;
  host: string;
  port: number;
  url: string;
  seen: SeenRequest[];
  close(): Promise<void>;
}

/** Default origin behaviour: reads the body (keeping up to 1 MiB of it), answers with a short JSON echo. */
export const echo: RequestListener = (req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ method: req.method, url: req.url, host: req.headers.host }));
};

/** Starts an origin. The handler runs after the body is read unless `streaming` is set. */
export async function startOrigin(
  opts: { host?: string; tls?: Pem; streaming?: boolean; handler?: (req: IncomingMessage, res: ServerResponse, seen: SeenRequest) => void } = {},
): Promise<Origin> {
  const host = opts.host ?? '127.0.0.2';
  const seen: SeenRequest[] = [];
  const handler = opts.handler ?? echo;
  const listener: RequestListener = (req, res) => {
    const s: SeenRequest = { method: req.method!, url: req.url!, headers: req.headers, rawHeaders: req.rawHeaders, bodyBytes: 0, body: undefined, trailers: {} };
    seen.push(s);
    if (opts.streaming) {
      handler(req, res, s);
      return;
    }
    const chunks: Buffer[] = [];
    let kept = 0;
    req.on('data', (c: Buffer) => {
      s.bodyBytes += c.length;
      if (kept < 1 << 20) {
        chunks.push(c);
        kept += c.length;
      }
    });
    req.on('end', () => {
      s.body = Buffer.concat(chunks);
      s.trailers = req.trailers;
      handler(req, res, s);
    });
  };
  const server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key }, listener) : createServer(listener);
  server.listen(0, host);
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    host,
    port,
    url: `${opts.tls ? 'https' : 'http'}://${host}:${port}`,
    seen,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close').catch(() => undefined);
    },
  };
}
