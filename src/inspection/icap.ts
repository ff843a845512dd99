import { IcapConnection } from './icap-conn.js';
import { collectBody, type BodyInput, type CollectedBody } from './icap-body.js';
import { classify, framed, type Exchange, type IcapTrace, type IcapVerdict } from './icap-verdict.js';
import {
  chunk, encodeIcapHead, encodeRequestHead, encodeResponseHead, IcapFailure, lastChunk, parseEncapsulated,
  parseIcapHead, parseRequestHead, parseResponseHead,
  type HeaderList, type HttpRequestHead, type HttpResponseHead, type IcapHead,
} from './icap-wire.js';

export { IcapFailure } from './icap-wire.js';
export type { BodyInput, OriginalBody } from './icap-body.js';
export type { HeaderList, HttpRequestHead, HttpResponseHead, IcapErrorReason } from './icap-wire.js';
export type { IcapTrace, IcapVerdict } from './icap-verdict.js';

/** How to reach one ICAP service and what to do when it cannot answer. */
export interface IcapOptions {
  /** icap://host[:port]/service (port 1344 by default). One client per service URL. */
  url: string;
  /** Bound on connecting and on each wait for bytes from the server. */
  timeoutMs: number;
  /** Bound on a whole exchange, OPTIONS included; 3 × timeoutMs by default. */
  totalTimeoutMs?: number;
  /** Copied into error verdicts: whether the caller should let traffic through when ICAP fails. */
  failOpen: boolean;
  /** Largest preview to send; the service's own `Preview` still caps it. */
  previewBytes?: number;
  /** Largest body sent whole, and largest ICAP response body accepted. */
  maxBodyBytes: number;
  /** Idle keep-alive connections kept open (default 4). */
  maxIdle?: number;
  /** How long an idle connection is kept (default 30 s). */
  idleKeepMs?: number;
}

/** What the service said about itself in its OPTIONS answer. */
export interface IcapServiceInfo {
  methods: string[];
  istag: string | null;
  /** Preview size the service wants, or null when it takes no preview. */
  preview: number | null;
  /** The service may answer 204 outside a preview. */
  allow204: boolean;
  ttlSeconds: number;
  service: string | null;
  /** Lower-cased header names the service asks for (X-Include). */
  include: string[];
}

/** Who the traffic belongs to; sent only in the headers the service lists in X-Include. */
export interface IcapContext { clientIp?: string; user?: string; groups?: readonly string[] }

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
const MAX_HEAD = 64 * 1024;
const DEFAULT_TTL_S = 3600;
// Credentials meant for this proxy are not the DLP's business.
const NOT_FORWARDED = new Set(['proxy-authorization', 'proxy-connection']);

/** An RFC 3507 client for one ICAP service: OPTIONS, REQMOD and RESPMOD with preview, 204 and keep-alive. */
export class IcapClient {
  private readonly host: string;
  private readonly port: number;
  private readonly uri: string;
  private readonly hostHeader: string;
  private readonly idle: IcapConnection[] = [];
  private readonly active = new Set<IcapConnection>();
  private cached: { info: IcapServiceInfo; expires: number } | null = null;
  private pending: Promise<IcapServiceInfo> | null = null;
  private closed = false;

  constructor(private readonly o: IcapOptions) {
    const u = new URL(o.url);
    if (u.protocol !== 'icap:') throw new Error(`ICAP URL must start with icap:// (got ${u.protocol}//)`);
    if (!u.hostname) throw new Error('ICAP URL has no host');
    if (!(o.timeoutMs > 0) || !(o.maxBodyBytes >= 0)) throw new Error('ICAP timeoutMs must be > 0 and maxBodyBytes >= 0');
    this.host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    this.port = u.port ? Number(u.port) : 1344;
    this.hostHeader = u.host;
    this.uri = `icap://${u.host}${u.pathname}${u.search}`;
  }

  /** OPTIONS: learns Methods, Preview, Allow: 204, ISTag and X-Include; cached for Options-TTL. Rejects with IcapFailure. */
  options(): Promise<IcapServiceInfo> {
    return this.optionsBy(Date.now() + this.total());
  }

  /** REQMOD for an outgoing request. Rejects only if reading the caller's body stream fails. */
  async reqmod(req: HttpRequestHead, body: BodyInput, ctx: IcapContext = {}): Promise<IcapVerdict> {
    return this.modify('REQMOD', req, null, body, ctx);
  }

  /** RESPMOD for a response to `req`. Rejects only if reading the caller's body stream fails. */
  async respmod(req: HttpRequestHead, res: { status: number; reason?: string; headers: HeaderList }, body: BodyInput, ctx: IcapContext = {}): Promise<IcapVerdict> {
    return this.modify('RESPMOD', req, { status: res.status, reason: res.reason ?? '', headers: res.headers }, body, ctx);
  }

  /** Closes idle and in-flight connections; later calls answer `icap_unavailable`. */
  close(): void {
    this.closed = true;
    for (const c of [...this.idle, ...this.active]) c.destroy();
    this.idle.length = 0;
  }

  private total(): number { return this.o.totalTimeoutMs ?? this.o.timeoutMs * 3; }

  private async modify(mode: 'REQMOD' | 'RESPMOD', reqIn: HttpRequestHead, res: HttpResponseHead | null, body: BodyInput, ctx: IcapContext): Promise<IcapVerdict> {
    const collected = await collectBody(body, this.o.maxBodyBytes);
    const started = Date.now();
    const deadline = started + this.total();
    const trace: IcapTrace = { icapStatus: null, istag: null, previewBytes: null, continued: false, reusedConnection: false, ms: 0 };
    const req: HttpRequestHead = { ...reqIn, headers: reqIn.headers.filter(([n]) => !NOT_FORWARDED.has(n.toLowerCase())) };
    if (res) res = { ...res, headers: framed(res.headers, collected) };
    else req.headers = framed(req.headers, collected);
    try {
      const info = await this.optionsBy(deadline);
      if (!info.methods.includes(mode)) throw new IcapFailure('icap_server_error', `the ICAP service does not offer ${mode} (Methods: ${info.methods.join(', ')})`);
      const preview = info.preview === null ? null : Math.min(info.preview, this.o.previewBytes ?? info.preview);
      if (!collected.complete && preview === null) throw new IcapFailure('icap_too_large', `body larger than ${this.o.maxBodyBytes} bytes and the service takes no preview`);
      const parts = { reqHdr: encodeRequestHead(req), resHdr: res ? encodeResponseHead(res) : undefined };
      const x = await this.withConnection(deadline, trace, (conn) => this.transact(conn, mode, parts, collected, preview, this.contextHeaders(info, ctx), deadline, trace));
      trace.ms = Date.now() - started;
      return classify(mode, x, req, res, collected, trace);
    } catch (e) {
      const f = e instanceof IcapFailure ? e : new IcapFailure('icap_protocol', e instanceof Error ? e.message : String(e));
      trace.ms = Date.now() - started;
      return { kind: 'error', reason: f.reason, detail: f.message, failOpen: this.o.failOpen, original: collected.original, trace };
    }
  }

  private async transact(conn: IcapConnection, mode: 'REQMOD' | 'RESPMOD', parts: { reqHdr: Buffer; resHdr: Buffer | undefined }, body: CollectedBody, preview: number | null, extra: HeaderList, deadline: number, trace: IcapTrace): Promise<Exchange> {
    const data = body.bytes;
    const headers: HeaderList = [['Host', this.hostHeader], ['Allow', '204'], ...extra];
    const p = data !== null && preview !== null ? Math.min(preview, data.length) : null;
    if (p !== null) headers.push(['Preview', String(p)]);
    conn.write([encodeIcapHead(mode, this.uri, headers, { ...parts, body: data !== null }), parts.reqHdr, parts.resHdr ?? Buffer.alloc(0)]);
    if (data === null) return this.readAnswer(conn, mode, deadline, trace);
    if (p === null) {
      conn.write([...chunk(data), lastChunk(false)]);
      return this.readAnswer(conn, mode, deadline, trace);
    }
    const ieof = body.complete && p === data.length;
    trace.previewBytes = p;
    conn.write([...chunk(data.subarray(0, p)), lastChunk(ieof)]);
    const first = await this.readHead(conn, deadline, trace);
    if (first.status !== 100) return this.readRest(conn, first, mode, deadline);
    if (ieof) throw new IcapFailure('icap_protocol', 'ICAP server sent 100 Continue after the whole body (ieof)');
    // The rest of an oversized body is not held in memory: the preview was all the service gets.
    if (!body.complete) throw new IcapFailure('icap_too_large', `the ICAP service wants more than the preview of a body larger than ${this.o.maxBodyBytes} bytes`);
    trace.continued = true;
    conn.write([...chunk(data.subarray(p)), lastChunk(false)]);
    return this.readAnswer(conn, mode, deadline, trace);
  }

  private async readHead(conn: IcapConnection, deadline: number, trace: IcapTrace): Promise<IcapHead> {
    const head = parseIcapHead(await conn.readUntil(CRLFCRLF, MAX_HEAD, deadline, 'ICAP response head'));
    trace.icapStatus = head.status;
    const istag = head.headers.get('istag') ?? null;
    if (istag !== null) {
      trace.istag = istag;
      // A new ISTag means the service changed (new signatures, new config): re-learn its options.
      if (this.cached && this.cached.info.istag !== istag) this.cached = null;
    }
    return head;
  }

  private async readAnswer(conn: IcapConnection, mode: 'REQMOD' | 'RESPMOD', deadline: number, trace: IcapTrace): Promise<Exchange> {
    const head = await this.readHead(conn, deadline, trace);
    if (head.status === 100) throw new IcapFailure('icap_protocol', 'unexpected 100 Continue');
    return this.readRest(conn, head, mode, deadline);
  }

  private async readRest(conn: IcapConnection, head: IcapHead, mode: 'REQMOD' | 'RESPMOD' | 'OPTIONS', deadline: number): Promise<Exchange> {
    const keepAlive = !/(^|,)\s*close\s*(,|$)/i.test(head.headers.get('connection') ?? '');
    const x: Exchange = { head, req: null, res: null, body: null, keepAlive };
    if (head.status === 204) return x;
    if (head.status !== 200) {
      x.keepAlive = false;
      if (head.status >= 400) throw new IcapFailure('icap_server_error', `ICAP server answered ${head.status} ${head.reason}`.trim());
      throw new IcapFailure('icap_protocol', `unexpected ICAP status ${head.status}`);
    }
    const encap = parseEncapsulated(head.headers.get('encapsulated') ?? (mode === 'OPTIONS' ? 'null-body=0' : undefined));
    for (let i = 0; i < encap.length - 1; i++) {
      const e = encap[i]!;
      // Checked before reading: a huge offset must not make us buffer that much.
      const size = encap[i + 1]!.offset - e.offset;
      if (size > MAX_HEAD) throw new IcapFailure('icap_protocol', `encapsulated ${e.name} longer than ${MAX_HEAD} bytes`);
      const block = await conn.readExact(size, deadline, `encapsulated ${e.name}`);
      if (e.name === 'req-hdr') x.req = parseRequestHead(block);
      else x.res = parseResponseHead(block);
    }
    const last = encap[encap.length - 1]!;
    const allowed = mode === 'OPTIONS' ? ['opt-body', 'null-body'] : ['req-body', 'res-body', 'null-body'];
    if (!allowed.includes(last.name)) throw new IcapFailure('icap_protocol', `${last.name} in a ${mode} answer`);
    if (last.name !== 'null-body') x.body = await conn.readChunked(this.o.maxBodyBytes, deadline);
    return x;
  }

  private contextHeaders(info: IcapServiceInfo, ctx: IcapContext): HeaderList {
    const out: HeaderList = [];
    const wants = (h: string): boolean => info.include.includes(h);
    if (ctx.clientIp && wants('x-client-ip')) out.push(['X-Client-IP', ctx.clientIp]);
    // Base64 is what c-icap (RemoteProxyUserHeaderEncoded, the default) and Squid's encoding send.
    if (ctx.user && wants('x-authenticated-user')) out.push(['X-Authenticated-User', Buffer.from(ctx.user, 'utf8').toString('base64')]);
    const groups = (ctx.groups ?? []).filter((g) => /^[\x21-\x2b\x2d-\x7e][\x20-\x2b\x2d-\x7e]*$/.test(g));
    if (groups.length > 0 && wants('x-authenticated-groups')) out.push(['X-Authenticated-Groups', groups.join(', ')]);
    return out;
  }

  private optionsBy(deadline: number): Promise<IcapServiceInfo> {
    if (this.cached && this.cached.expires > Date.now()) return Promise.resolve(this.cached.info);
    // Concurrent requests share one OPTIONS exchange.
    this.pending ??= this.fetchOptions(deadline).finally(() => { this.pending = null; });
    return this.pending;
  }

  private async fetchOptions(deadline: number): Promise<IcapServiceInfo> {
    const trace: IcapTrace = { icapStatus: null, istag: null, previewBytes: null, continued: false, reusedConnection: false, ms: 0 };
    const x = await this.withConnection(deadline, trace, async (conn) => {
      conn.write([encodeIcapHead('OPTIONS', this.uri, [['Host', this.hostHeader]], { body: false })]);
      return this.readRest(conn, await this.readHead(conn, deadline, trace), 'OPTIONS', deadline);
    });
    const h = x.head.headers;
    const num = (v: string | undefined): number | null => (v !== undefined && /^\s*\d{1,9}\s*$/.test(v) ? Number(v) : null);
    const list = (v: string | undefined): string[] => (v ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    const info: IcapServiceInfo = {
      methods: list(h.get('methods')).map((m) => m.toUpperCase()),
      istag: h.get('istag') ?? null,
      preview: num(h.get('preview')),
      allow204: list(h.get('allow')).includes('204'),
      ttlSeconds: num(h.get('options-ttl')) ?? DEFAULT_TTL_S,
      service: h.get('service') ?? null,
      include: list(h.get('x-include')).map((s) => s.toLowerCase()),
    };
    if (info.methods.length === 0) throw new IcapFailure('icap_protocol', 'OPTIONS answer lists no Methods');
    this.cached = { info, expires: Date.now() + info.ttlSeconds * 1000 };
    return info;
  }

  /** Runs one exchange on a pooled or new connection; a pooled one the server had closed is retried once on a new one. */
  private async withConnection(deadline: number, trace: IcapTrace, fn: (c: IcapConnection) => Promise<Exchange>): Promise<Exchange> {
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new IcapFailure('icap_unavailable', 'the ICAP client is closed');
      let conn = attempt === 0 ? this.takeIdle() : undefined;
      trace.reusedConnection = conn !== undefined;
      if (conn) conn.unpark();
      else {
        conn = await IcapConnection.open(this.host, this.port, this.o.timeoutMs, deadline, (c) => this.forget(c));
        conn.begin();
      }
      this.active.add(conn);
      try {
        const x = await fn(conn);
        this.active.delete(conn);
        if (x.keepAlive && conn.usable && conn.drained && !this.closed && this.idle.length < (this.o.maxIdle ?? 4)) {
          conn.park(this.o.idleKeepMs ?? 30_000);
          this.idle.push(conn);
        } else conn.destroy();
        return x;
      } catch (e) {
        this.active.delete(conn);
        conn.destroy();
        if (!(e instanceof IcapFailure && e.retryable && attempt === 0)) throw e;
      }
    }
  }

  private takeIdle(): IcapConnection | undefined {
    for (let c = this.idle.pop(); c; c = this.idle.pop()) if (c.usable) return c;
    return undefined;
  }

  private forget(c: IcapConnection): void {
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
  }
}
