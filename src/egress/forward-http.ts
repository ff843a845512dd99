import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import type { Dispatcher } from 'undici';
import { ProxyError, upstreamReason } from '../errors/proxy-error.js';
import { rejectRequest } from '../errors/reject.js';
import { AccessRecord } from '../logging/access-record.js';
import type { Target } from './target.js';
import type { UpstreamRequest } from './pools.js';
import type { ProxyRuntime } from '../runtime.js';
import { downstreamHeaders, hasBody, upstreamHeaders } from './headers.js';

const kExchange = Symbol('egress.exchange');
type Tagged = ServerResponse & { [kExchange]?: HttpExchange };

// Listeners are plain functions that find their exchange on the response, so a request costs no closures.
function onResponseClose(this: Tagged): void {
  this[kExchange]?.closed();
}
function onResponseDrain(this: Tagged): void {
  this[kExchange]?.controller?.resume();
}

/**
 * One plain-HTTP request from start to log line: it owns the access record, refuses with the
 * right reason, and streams to the destination through the shared undici pool with backpressure
 * both ways (undici pulls the request body; a slow client pauses the upstream socket).
 */
export class HttpExchange implements Dispatcher.DispatchHandler {
  readonly record: AccessRecord;
  controller: Dispatcher.DispatchController | undefined;
  private readonly socket: Socket;
  private readonly inAt: number;
  private readonly outAt: number;

  constructor(
    private readonly rt: ProxyRuntime,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
  ) {
    const socket = req.socket;
    this.socket = socket;
    this.inAt = socket.bytesRead;
    this.outAt = socket.bytesWritten;
    this.record = AccessRecord.forRequest('http', req);
    rt.active++;
    (res as Tagged)[kExchange] = this;
    res.once('close', onResponseClose);
    if (rt.draining) res.shouldKeepAlive = false;
  }

  /** The response is gone (sent, failed or the client left): settle the books and write the line. */
  closed(): void {
    const { rt, record, res } = this;
    rt.active--;
    if (!res.writableFinished) this.controller?.abort(new Error('client closed'));
    record.bytes_in = this.socket.bytesRead - this.inAt;
    record.bytes_out = this.socket.bytesWritten - this.outAt;
    if (record.status === 0) record.status = res.statusCode;
    record.write(rt.logger);
  }

  /** Refuses the request with the reason `err` carries. */
  fail(err: unknown): void {
    const reason = this.record.fail(err, this.rt.logger);
    // An unread body would otherwise be drained just to keep a connection we are refusing.
    if (!this.req.complete && hasBody(this.req)) this.res.shouldKeepAlive = false;
    const pe = err instanceof ProxyError ? err : undefined;
    rejectRequest(this.req, this.res, reason, pe?.publicMessage, pe?.rule, pe?.headers);
  }

  /** Sends the request to `ip` (already checked by the address guard). */
  forward(target: Target, ip: string): void {
    const { req, rt } = this;
    const tls = target.scheme === 'https' || target.scheme === 'wss';
    const headers = upstreamHeaders(req.rawHeaders, req.headers.connection, {
      host: target.hostHeader,
      via: rt.config.forwarding.via ? rt.via : undefined,
      forwardedFor: rt.config.forwarding.x_forwarded_for ? req.socket.remoteAddress : undefined,
    });
    rt.upstream.dispatch(
      {
        origin: `${tls ? 'https' : 'http'}://${ip.includes(':') ? `[${ip}]` : ip}:${target.port}`,
        path: target.path,
        method: req.method!,
        headers,
        body: hasBody(req) ? req : null,
        servername: tls && isIP(target.host) === 0 ? target.host : undefined,
      } as UpstreamRequest,
      this,
    );
  }

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
    this.res.writeHead(statusCode, statusMessage || undefined, downstreamHeaders(headers, this.rt.config.forwarding.via ? this.rt.via : undefined));
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', onResponseDrain);
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
