import type { CollectedBody, OriginalBody } from './icap-body.js';
import { IcapFailure, type HeaderList, type HttpRequestHead, type HttpResponseHead, type IcapErrorReason, type IcapHead } from './icap-wire.js';

/** How the exchange went, for the access log. */
export interface IcapTrace {
  icapStatus: number | null;
  istag: string | null;
  /** Bytes sent as preview, or null without preview. */
  previewBytes: number | null;
  /** The server asked for the rest of the body with 100 Continue. */
  continued: boolean;
  reusedConnection: boolean;
  ms: number;
}

/** The service's answer, or why there is none. `original` is the caller's body, still forwardable. */
export type IcapVerdict =
  | { kind: 'unmodified'; original: OriginalBody; trace: IcapTrace }
  | { kind: 'modified-request'; head: HttpRequestHead; body: Buffer | null; trace: IcapTrace }
  | { kind: 'modified-response'; head: HttpResponseHead; body: Buffer | null; trace: IcapTrace }
  | { kind: 'blocked'; head: HttpResponseHead; body: Buffer; trace: IcapTrace }
  | { kind: 'error'; reason: IcapErrorReason; detail: string; failOpen: boolean; original: OriginalBody; trace: IcapTrace };

/** One ICAP answer as read off the wire. */
export interface Exchange { head: IcapHead; req: HttpRequestHead | null; res: HttpResponseHead | null; body: Buffer | null; keepAlive: boolean }

// Framing is redone by whoever forwards the body; Via is what an echoing service adds.
const FRAMING = /^(content-length|transfer-encoding)$/i;
const IGNORED = /^(content-length|transfer-encoding|via)$/i;
const EMPTY = Buffer.alloc(0);

/**
 * The encapsulated body is always decoded and re-chunked by ICAP, so a whole body is described by
 * its real Content-Length (scanners such as srv_content_filtering skip bodies without one).
 */
export function framed(headers: HeaderList, body: CollectedBody): HeaderList {
  if (body.bytes === null || !body.complete) return headers;
  return [...headers.filter(([n]) => !FRAMING.test(n)), ['Content-Length', String(body.bytes.length)]];
}

/** The head without Content-Length / Transfer-Encoding: the body comes back whole, the caller frames it. */
export function withoutFraming<H extends HttpRequestHead | HttpResponseHead>(h: H): H {
  return { ...h, headers: h.headers.filter(([n]) => !FRAMING.test(n)) };
}

function norm(headers: HeaderList): string[] {
  return headers.filter(([n]) => !IGNORED.test(n)).map(([n, v]) => `${n.toLowerCase()}:${v}`);
}

/** True when a 200 answer carries the message that was sent (an echo): no real modification. */
export function sameMessage(got: HttpRequestHead | HttpResponseHead, sent: HttpRequestHead | HttpResponseHead, gotBody: Buffer | null, sentBody: Buffer | null): boolean {
  const sameLine = 'method' in got && 'method' in sent ? got.method === sent.method && got.url === sent.url
    : 'status' in got && 'status' in sent && got.status === sent.status;
  if (!sameLine) return false;
  const a = norm(got.headers);
  const b = norm(sent.headers);
  return a.length === b.length && a.every((x, i) => x === b[i]) && (gotBody ?? EMPTY).equals(sentBody ?? EMPTY);
}

/**
 * Turns an answer into a verdict. REQMOD: an HTTP response is the service answering in the
 * origin's place (blocked). RESPMOD: a response with another status than the origin's is the
 * service's own page (blocked); the same status with other content is a modification.
 */
export function classify(mode: 'REQMOD' | 'RESPMOD', x: Exchange, req: HttpRequestHead, res: HttpResponseHead | null, body: CollectedBody, trace: IcapTrace): IcapVerdict {
  if (x.head.status === 204) return { kind: 'unmodified', original: body.original, trace };
  const original = body.complete ? body.bytes : undefined;
  if (mode === 'REQMOD') {
    if (x.res) return { kind: 'blocked', head: withoutFraming(x.res), body: x.body ?? EMPTY, trace };
    if (!x.req) throw new IcapFailure('icap_protocol', 'REQMOD answer carries neither a request nor a response');
    if (original !== undefined && sameMessage(x.req, req, x.body, original)) return { kind: 'unmodified', original: body.original, trace };
    return { kind: 'modified-request', head: withoutFraming(x.req), body: x.body, trace };
  }
  if (!res || (!x.res && x.body === null)) throw new IcapFailure('icap_protocol', 'RESPMOD answer carries no response');
  const head = x.res ?? res;
  if (original !== undefined && sameMessage(head, res, x.body, original)) return { kind: 'unmodified', original: body.original, trace };
  if (head.status !== res.status) return { kind: 'blocked', head: withoutFraming(head), body: x.body ?? EMPTY, trace };
  return { kind: 'modified-response', head: withoutFraming(head), body: x.body, trace };
}
