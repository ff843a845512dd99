import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { Dispatcher } from 'undici';
import { upstreamReason } from '../errors/proxy-error.js';
import type { AccessRecord } from '../logging/access-record.js';
import type { Target } from '../listeners/target.js';
import type { ProxyRuntime } from '../runtime.js';
import { downstreamHeaders, hasBody, upstreamHeaders } from './headers.js';

/** Called when forwarding fails before the response started, to send the refusal. */
export type FailFn = (err: unknown) => void;

/**
 * Streams one HTTP request to the destination through the shared undici pool and the response
 * back, with backpressure both ways (undici pulls the request body; the response pauses the
 * upstream socket when the client is slow). One object per request, no closures on the byte path.
 */
export class HttpForward implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private readonly resume = (): void => this.controller?.resume();

  constructor(
    private readonly rt: ProxyRuntime,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly record: AccessRecord,
    private readonly fail: FailFn,
  ) {}

  /** Sends the request to `ip` (already checked by the address guard). */
  start(target: Target, ip: string): void {
    const { req, rt } = this;
    const tls = target.scheme === 'https' || target.scheme === 'wss';
    const hostPart = ip.includes(':') ? `[${ip}]` : ip;
    const headers = upstreamHeaders(req.rawHeaders, req.headers.connection, {
      host: target.hostHeader,
      via: rt.config.forwarding.via ? rt.via : undefined,
      forwardedFor: rt.config.forwarding.x_forwarded_for ? req.socket.remoteAddress : undefined,
    });
    this.res.once('close', this.onClientClose);
    rt.upstream.dispatch(
      {
        origin: `${tls ? 'https' : 'http'}://${hostPart}:${target.port}`,
        path: target.path,
        method: req.method!,
        headers,
        body: hasBody(req) ? req : null,
        servername: tls && isIP(target.host) === 0 ? target.host : undefined,
      } as Dispatcher.DispatchOptions,
      this,
    );
  }

  private readonly onClientClose = (): void => {
    if (!this.res.writableFinished) this.controller?.abort(new Error('client closed'));
  };

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
  }

  onResponseStart(
    _c: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[]>,
    statusMessage?: string,
  ): void {
    if (statusCode < 200) return; // 1xx are per hop; Expect is answered by the proxy itself.
    this.record.status = statusCode;
    const out = downstreamHeaders(headers, this.rt.config.forwarding.via ? this.rt.via : undefined);
    if (this.rt.draining) out.push('connection', 'close');
    this.res.writeHead(statusCode, statusMessage || undefined, out);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', this.resume);
    }
  }

  onResponseEnd(_c: Dispatcher.DispatchController, trailers: Record<string, string | string[]>): void {
    for (const _ in trailers) {
      this.res.addTrailers(trailers as Record<string, string>);
      break;
    }
    this.res.end();
  }

  onResponseError(_c: Dispatcher.DispatchController, err: Error): void {
    if (this.res.headersSent) {
      // Mid-body failure: cut the client connection so it cannot mistake a truncated body for a whole one.
      this.record.decision = 'error';
      this.record.reason = this.res.destroyed ? 'client_aborted' : upstreamReason(err);
      this.res.destroy();
      return;
    }
    this.fail(err);
  }
}
