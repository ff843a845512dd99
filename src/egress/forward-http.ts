import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import type { Dispatcher } from 'undici';
import { ProxyError, upstreamReason } from '../errors/proxy-error.js';
import { rejectRequest } from '../errors/reject.js';
import { AccessRecord } from '../logging/access-record.js';
import type { Target } from './target.js';
import type { PoolInfo, UpstreamRequest } from './pools.js';
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

/** The header list with its framing replaced by a Content-Length of `n`. */
function withLength(headers: string[], n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!.toLowerCase();
    if (name !== 'content-length' && name !== 'transfer-encoding') out.push(headers[i]!, headers[i + 1]!);
  }
  out.push('content-length', String(n));
  return out;
}

/** What a response check may answer once it has seen enough of the body. */
export interface ResponseVerdict {
  /** Refuse: the client gets this error's refusal instead of the response (or a cut, if it started). */
  error?: ProxyError | undefined;
  /** Send this instead of the destination's response (an ICAP service rewrote it). */
  replace?: { status: number; headers: string[]; body: Buffer } | undefined;
}

/**
 * Looks at a response before the client gets it (inspection/download.ts implements it). The head
 * is held with up to `holdBytes` of body until `finish`; past that the response streams and
 * `chunk` can still cut it.
 */
export interface ResponseCheck {
  /** False when this response needs no check. */
  begin(status: number, headers: Record<string, string | string[]>): boolean;
  /** Sees each body chunk as it arrives; an error refuses (or cuts) the response. */
  chunk(c: Buffer): ProxyError | undefined;
  /** The held part of the body (all of it when `complete`): the verdict. */
  finish(held: readonly Buffer[], complete: boolean): Promise<ResponseVerdict>;
  readonly holdBytes: number;
}

/**
 * One plain-HTTP request from start to log line: it owns the access record, refuses with the
 * right reason, and streams to the destination through the shared undici pool with backpressure
 * both ways (undici pulls the request body; a slow client pauses the upstream socket).
 */
export class HttpExchange implements Dispatcher.DispatchHandler {
  readonly record: AccessRecord;
  controller: Dispatcher.DispatchController | undefined;
  /** Set by the listener when the rule wants responses checked (file types, ICAP RESPMOD). */
  responseCheck: ResponseCheck | undefined;
  /** While a checked response is held: its head and the body so far. */
  private held: { status: number; message: string | undefined; headers: string[]; chunks: Buffer[]; size: number } | undefined;
  private readonly socket: Socket;
  /** The upstream pool carrying the request (for the source address it dials from). */
  private pool: PoolInfo | undefined;
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
    if (!res.writableFinished) {
      const gone = new ProxyError('client_aborted', 'client closed');
      // Gone before any answer (say, while its upload was held for DLP): the client's doing, not an
      // allow, and not a failure of ours (the abort reaches fail() with the same reason).
      if (!res.headersSent && record.reason === 'allowed') record.fail(gone, rt.logger);
      this.controller?.abort(gone);
    }
    record.bytes_in = this.socket.bytesRead - this.inAt;
    record.bytes_out = this.socket.bytesWritten - this.outAt;
    if (record.status === 0) record.status = res.statusCode;
    record.write(rt.logger);
  }

  /** Refuses the request with the reason `err` carries. */
  fail(err: unknown): void {
    const reason = this.record.fail(err, this.rt.logger);
    this.record.firstByte();
    // An unread body would otherwise be drained just to keep a connection we are refusing.
    if (!this.req.complete && hasBody(this.req)) this.res.shouldKeepAlive = false;
    const pe = err instanceof ProxyError ? err : undefined;
    rejectRequest(this.req, this.res, reason, pe?.publicMessage, pe?.rule, pe?.headers);
  }

  /**
   * Sends the request to `ip` (already checked by the address guard). The body is the client's
   * stream, or what inspection held and released (inspection/upload.ts).
   */
  forward(target: Target, ip: string, body: Buffer | AsyncIterable<Buffer> | null = hasBody(this.req) ? this.req : null): void {
    const { req, rt } = this;
    const tls = target.scheme === 'https' || target.scheme === 'wss';
    let headers = upstreamHeaders(req.rawHeaders, req.headers.connection, {
      host: target.hostHeader,
      via: rt.config.forwarding.via ? rt.via : undefined,
      forwardedFor: rt.config.forwarding.x_forwarded_for ? req.socket.remoteAddress : undefined,
    });
    // A held (possibly rewritten) body is sent with its own length.
    if (Buffer.isBuffer(body)) headers = withLength(headers, body.length);
    this.pool = rt.upstream.dispatch(
      {
        origin: `${tls ? 'https' : 'http'}://${ip.includes(':') ? `[${ip}]` : ip}:${target.port}`,
        path: target.path,
        method: req.method!,
        headers,
        body,
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
    const rec = this.record;
    rec.status = statusCode;
    rec.firstByte();
    rec.egress_node = this.rt.config.node_id;
    rec.egress_ip = this.pool?.source;
    const out = downstreamHeaders(headers, this.rt.config.forwarding.via ? this.rt.via : undefined);
    if (this.responseCheck?.begin(statusCode, headers) === true) {
      this.held = { status: statusCode, message: statusMessage || undefined, headers: out, chunks: [], size: 0 };
      return;
    }
    this.responseCheck = undefined;
    this.res.writeHead(statusCode, statusMessage || undefined, out);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    const check = this.responseCheck;
    if (check) {
      const err = check.chunk(chunk);
      if (err) return this.refuse(controller, err);
      const held = this.held;
      if (held) {
        held.chunks.push(chunk);
        held.size += chunk.length;
        if (held.size > check.holdBytes) this.release(controller, false);
        return;
      }
    }
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', onResponseDrain);
    }
  }

  onResponseEnd(controller: Dispatcher.DispatchController, trailers: Record<string, string | string[]>): void {
    if (this.held) {
      this.release(controller, true);
      return;
    }
    for (const _ in trailers) {
      this.res.addTrailers(trailers as Record<string, string>);
      break;
    }
    this.res.end();
  }

  /** Stops a checked response: a refusal if nothing was sent yet, else a cut connection. */
  private refuse(controller: Dispatcher.DispatchController, err: ProxyError): void {
    this.responseCheck = undefined;
    this.held = undefined;
    controller.abort(err);
    if (this.res.headersSent) {
      this.record.fail(err, this.rt.logger);
      this.res.destroy();
    } else {
      this.fail(err);
    }
  }

  /** Asks the check about the held part, then sends it (or the replacement, or the refusal). */
  private release(controller: Dispatcher.DispatchController, complete: boolean): void {
    const held = this.held!;
    const check = this.responseCheck!;
    this.held = undefined;
    if (!complete) controller.pause();
    check.finish(held.chunks, complete).then((v) => {
      if (v.error) return this.refuse(controller, v.error);
      if (v.replace) {
        this.responseCheck = undefined;
        if (!complete) controller.abort(new Error('replaced by the content check'));
        this.res.writeHead(v.replace.status, [...v.replace.headers, 'content-length', String(v.replace.body.length)]);
        this.res.end(v.replace.body);
        return;
      }
      this.res.writeHead(held.status, held.message, held.headers);
      for (const c of held.chunks) this.res.write(c);
      if (complete) this.res.end();
      else controller.resume();
    }, (err: unknown) => this.refuse(controller, err instanceof ProxyError ? err : new ProxyError('internal_error', String(err))));
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
