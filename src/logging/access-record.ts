import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { ProxyError, upstreamReason } from '../errors/proxy-error.js';
import { isDenial, type ReasonId } from '../errors/reasons.js';
import { refusalStatus } from '../errors/reject.js';
import type { Asked, Device, Principal } from '../identity/principal.js';
import { AccessPrefix } from './access-prefix.js';
import { LineBytes, quote, quotedBound } from './line-bytes.js';
import type { ProxyLogger } from './logger.js';

/** Which listener a client came in through: the explicit proxy port, or the device (mTLS) listener. */
export type ListenerName = 'proxy' | 'devices';

const kListener = Symbol('egress.listener');

/** Marks a client socket with the listener it arrived on (unmarked = the explicit proxy port). */
export function markListener(socket: Socket, name: ListenerName): void {
  (socket as Socket & { [kListener]?: ListenerName })[kListener] = name;
}

/** The listener a client socket arrived on. */
export function listenerOf(socket: Socket): ListenerName {
  return (socket as Socket & { [kListener]?: ListenerName })[kListener] ?? 'proxy';
}

/** What kind of exchange a log line describes. */
export type ExchangeKind = 'http' | 'connect' | 'websocket' | 'client_error';

// A line is encoded straight into one reused buffer (line-bytes.ts): the destination's block
// when there is one destination. The groups of fields that repeat from one request to the next
// (the client connection, the target, the upstream, the policy decision, the identity, the
// device, the start of the URL) are kept encoded and copied in; what changes with every request
// (path, numbers, user agent) is written in place. Nothing is left for the garbage
// collector: each short-lived string made the proxy slower on the whole request path
// (docs/benchmarks.md "Logging and metrics").

/** `,"name":"v"`, or nothing when `v` is undefined. */
const opt = (name: string, v: string | undefined, max: number): string => (v === undefined ? '' : `,"${name}":${quote(v, max)}`);
const bytes = (s: string): Buffer => Buffer.from(s);
const K = {
  clientPort: bytes(',"client_port":'), url: bytes(',"url":'), status: bytes(',"status":'), bytesIn: bytes(',"bytes_in":'),
  bytesOut: bytes(',"bytes_out":'), ttfb: bytes(',"ttfb_ms":'), duration: bytes(',"duration_ms":'), report: bytes(',"report":'),
  inspected: bytes(',"inspected":true'), notInspected: bytes(',"inspected":false'), userAgent: bytes(',"user_agent":'), end: bytes('}\n'),
};

/** The encoded text of one group of fields and the values it was built from (compared by ===). */
interface Piece {
  a: unknown;
  b: unknown;
  c: unknown;
  d: unknown;
  e: unknown;
  s: Buffer | undefined;
}
const piece = (): Piece => ({ a: undefined, b: undefined, c: undefined, d: undefined, e: undefined, s: undefined });
/** True when `p` was built from these values; otherwise `p` takes them and the caller rebuilds `p.s`. */
function same(p: Piece, a: unknown, b: unknown, c: unknown, d: unknown, e: unknown): boolean {
  if (p.s !== undefined && p.a === a && p.b === b && p.c === c && p.d === d && p.e === e) return true;
  p.a = a;
  p.b = b;
  p.c = c;
  p.d = d;
  p.e = e;
  return false;
}
// One of each: consecutive requests mostly share them (a miss costs what building the piece costs).
const connPiece = piece();
const targetPiece = piece();
const upstreamPiece = piece();
/** The start of the URL field, for the target it was built from. */
interface UrlPiece {
  scheme: string | undefined;
  host: string | undefined;
  port: number | undefined;
  chars: number;
  s: Buffer | undefined;
}
const urlPiece: UrlPiece = { scheme: undefined, host: undefined, port: undefined, chars: 0, s: undefined };
const decisionPiece = piece();
const identityPiece = piece();
const devicePiece = piece();
const EMPTY: Buffer = Buffer.alloc(0);
// Per principal (a token's or a session's principal object lives as long as its cache entry).
const identityPieces = new WeakMap<Principal, { groups: string | undefined; s: Buffer }>();
/** `a` to `e` joined, kept in `p` while they stay the same objects: one copy per line instead of several. */
function join(p: Piece, a: Buffer, b: Buffer, c: Buffer, d: Buffer, e: Buffer): Buffer {
  return same(p, a, b, c, d, e) ? p.s! : (p.s = Buffer.concat([a, b, c, d, e]));
}
// The prefix and the client's connection; then, after the client's port, the rest that repeats.
const head = piece();
const middle = piece();
/** Where `serialise` encodes (tests and tools; the proxy's own lines go through `write`). */
const scratch = new LineBytes(8192);
/** URLs are clipped to this many characters. */
const URL_MAX = 1536;

/**
 * The facts about one request or tunnel, filled in along the request path and written as
 * exactly one access-log line when it ends. Field names here are the log schema (docs/logging.md).
 */
export class AccessRecord {
  readonly start = performance.now();
  kind: ExchangeKind;
  listener: ListenerName = 'proxy';
  client_ip: string | undefined;
  client_port: number | undefined;
  method: string | undefined;
  scheme: string | undefined;
  host: string | undefined;
  port: number | undefined;
  /**
   * The request's path as logged (query redacted unless policy asks), undefined for a tunnel: the
   * line writes the URL from it and the target's cached piece without building the URL string.
   */
  path: string | undefined;
  /** A URL set whole (see `url`), logged as is instead of the one made of target and path. */
  private wholeUrl: string | undefined;
  resolved_ip: string | undefined;
  /** The node that dialled the destination, and the source address its connection left from. */
  egress_node: string | undefined;
  egress_ip: string | undefined;
  status = 0;
  /** Milliseconds from the request head to the response head (or the tunnel's 200); undefined until then. */
  ttfb_ms: number | undefined;
  /** Set when the exchange is finished (its line written). */
  duration_ms = 0;
  private elapsed: number | undefined;
  /** When the exchange ended (epoch milliseconds): the line's time. */
  private ended = 0;
  bytes_in = 0;
  bytes_out = 0;
  decision: 'allow' | 'deny' | 'error' = 'error';
  reason: ReasonId = 'internal_error';
  rule: string | undefined;
  policy_version: string | undefined;
  /** Report-mode rules that matched, as rule:action pairs (what they would have done). */
  report: string | undefined;
  user_agent: string | undefined;
  /** Identity, from verified credentials only: how it was established, and who. */
  auth: 'anonymous' | 'token' | 'session' = 'anonymous';
  user: string | undefined;
  email: string | undefined;
  groups: string | undefined;
  service: string | undefined;
  device_id: string | undefined;
  /** The device's trust levels under the policy in force ("unknown" without a certificate). */
  device_trust: string | undefined;
  /** DLP findings: detector:count[masked samples]:action, files by type; never data in clear. */
  dlp: string | undefined;
  /** The body was allowed without being (wholly) scanned. */
  dlp_unscanned = false;
  /** Incident id shown on the block page (DLP or ICAP block, DLP alert). */
  incident: string | undefined;
  /** What the ICAP services said, e.g. `reqmod:modified-request,respmod:unmodified` (or `...:error:<reason>[:open]`). */
  icap: string | undefined;
  /** The rule's DLP profiles (not logged). */
  dlpProfiles: readonly string[] | undefined;
  /** The verified principal, for its cached piece of the line (not logged as such). */
  principal: Principal | undefined;
  /** Who asked, as the request path established it (not logged as such: see `identify`). */
  asked: Asked | undefined;
  /** An anonymous browser's tunnel, intercepted so the pages inside can send it to sign in (not logged). */
  signInPending = false;
  /** Policy asked for TLS interception of this tunnel (not logged: `inspected` says what happened). */
  inspectWanted = false;
  /** True when the proxy saw inside TLS (an intercepted request, or the tunnel that carried them). */
  inspected = false;
  /** Where the line went (set once, by `write`). */
  private logger: ProxyLogger | undefined;

  constructor(kind: ExchangeKind, clientIp: string | undefined, clientPort: number | undefined) {
    this.kind = kind;
    this.client_ip = clientIp;
    this.client_port = clientPort;
  }

  /** The URL as logged (`scheme://host:port/path`), undefined for a tunnel. */
  get url(): string | undefined {
    if (this.wholeUrl !== undefined || this.path === undefined) return this.wholeUrl;
    return urlOf(this.scheme ?? 'http', this.host ?? '', this.port ?? 0, this.path);
  }

  set url(v: string | undefined) {
    this.wholeUrl = v;
    this.path = undefined;
  }

  /** Notes that the response head (or a tunnel's 200) goes to the client now; the first call counts. */
  firstByte(): void {
    if (this.ttfb_ms === undefined) this.ttfb_ms = Math.round((performance.now() - this.start) * 100) / 100;
  }

  /** Records why the exchange failed (reason, status, decision) and returns the reason; bugs are logged once. */
  fail(err: unknown, logger: ProxyLogger): ReasonId {
    const reason = err instanceof ProxyError ? err.reason : upstreamReason(err);
    this.reason = reason;
    this.status = refusalStatus(reason, err instanceof ProxyError ? err.headers : undefined);
    this.decision = isDenial(reason) ? 'deny' : 'error';
    if (reason === 'internal_error') logger.log.error({ err }, 'unexpected failure on the request path');
    return reason;
  }

  /** Notes who asked (verified principal, device and its trust levels). */
  identify(p: Principal, device: Device | undefined, trust: readonly string[] | undefined): void {
    this.principal = p;
    this.auth = p.method;
    this.user = p.user;
    this.email = p.email;
    this.groups = p.groups.length > 0 ? p.groups.join(',') : undefined;
    this.service = p.service;
    this.device_id = device?.id;
    this.device_trust = trust?.join(',');
  }

  /** A record for a request as it arrives: client address, method and user agent filled in. */
  static forRequest(kind: ExchangeKind, req: IncomingMessage): AccessRecord {
    const rec = new AccessRecord(kind, req.socket.remoteAddress, req.socket.remotePort);
    rec.listener = listenerOf(req.socket);
    rec.method = req.method;
    rec.user_agent = req.headers['user-agent'];
    return rec;
  }

  /** The JSON line, as text: `prefix` (`{"level":…` without the closing brace) then the fields (see `encode`). */
  serialise(prefix: string): string {
    const n = this.encode(scratch, AccessPrefix.fixed(prefix));
    return scratch.buf.toString('utf8', scratch.begin, scratch.begin + n);
  }

  /**
   * Encodes the line into `out` and returns its length: `prefix` then the fields in a fixed
   * order, undefined fields left out (as pino does). Values the proxy produced or validated (IPs,
   * ids, reasons) need no escaping; what a client chose is escaped and clipped so a line stays
   * small.
   */
  encode(out: LineBytes, prefix: AccessPrefix): number {
    const ms = this.finish();
    prefix.at(this.ended);
    const start = join(head, prefix.bytes, this.connPiece(), EMPTY, EMPTY, EMPTY);
    const rest = join(middle, this.targetPiece(), this.upstreamPiece(), this.decisionPiece(), this.identityPiece(),
      this.device_id === undefined && this.device_trust === undefined ? EMPTY : this.devicePiece());
    const inspection = this.dlp === undefined && this.incident === undefined && this.icap === undefined && !this.dlp_unscanned ? '' : this.inspectionText();
    // The URL from the target's cached start and the path: no URL string is built per request.
    const u = this.path !== undefined && this.host !== undefined && this.port !== undefined ? this.urlPiece() : undefined;
    const fromPiece = u !== undefined && u.chars < URL_MAX;
    const whole = fromPiece ? undefined : this.url;
    out.start(start.length + rest.length + 3 * inspection.length + (fromPiece ? u.s!.length + quotedBound(this.path, URL_MAX) : quotedBound(whole, URL_MAX)) +
      quotedBound(this.report, 1024) + quotedBound(this.user_agent, 256) + 256);
    out.raw(start);
    if (prefix.timeAt >= 0) out.over(out.begin + prefix.timeAt, prefix.time);
    if (this.client_port !== undefined) {
      out.raw(K.clientPort);
      out.int(this.client_port);
    }
    out.raw(rest);
    if (fromPiece) {
      out.raw(u.s!);
      out.strRest(this.path!, URL_MAX - u.chars);
    } else if (whole !== undefined) {
      out.raw(K.url);
      out.str(whole, URL_MAX);
    }
    out.raw(K.status);
    out.int(this.status);
    out.raw(K.bytesIn);
    out.int(this.bytes_in);
    out.raw(K.bytesOut);
    out.int(this.bytes_out);
    if (this.ttfb_ms !== undefined) {
      out.raw(K.ttfb);
      out.ms2(this.ttfb_ms);
    }
    out.raw(K.duration);
    out.ms2(ms);
    if (this.report !== undefined) {
      out.raw(K.report);
      out.str(this.report, 1024);
    }
    out.raw(this.inspected ? K.inspected : K.notInspected);
    if (inspection !== '') out.text(inspection);
    if (this.user_agent !== undefined) {
      out.raw(K.userAgent);
      out.str(this.user_agent, 256);
    }
    out.raw(K.end);
    return out.length;
  }

  private connPiece(): Buffer {
    const p = connPiece;
    if (same(p, this.kind, this.listener, this.client_ip, undefined, undefined)) return p.s!;
    return (p.s = bytes(`,"kind":"${this.kind}","listener":"${this.listener}"${this.client_ip === undefined ? '' : `,"client_ip":"${this.client_ip}"`}`));
  }

  private targetPiece(): Buffer {
    const p = targetPiece;
    if (same(p, this.method, this.scheme, this.host, this.port, undefined)) return p.s!;
    return (p.s = bytes(`${opt('method', this.method, 32)}${this.scheme === undefined ? '' : `,"scheme":"${this.scheme}"`}${opt('host', this.host, 256)}` +
      `${this.port === undefined ? '' : `,"port":${this.port}`}`));
  }

  /** `,"url":"scheme://host:port` (no closing quote), and how many characters of the URL that is. */
  private urlPiece(): UrlPiece {
    const p = urlPiece;
    if (p.s !== undefined && p.scheme === this.scheme && p.host === this.host && p.port === this.port) return p;
    const text = urlOf(this.scheme ?? 'http', this.host!, this.port!, '');
    p.scheme = this.scheme;
    p.host = this.host;
    p.port = this.port;
    p.chars = text.length;
    p.s = bytes(`,"url":${quote(text, URL_MAX).slice(0, -1)}`);
    return p;
  }

  private upstreamPiece(): Buffer {
    const p = upstreamPiece;
    if (same(p, this.resolved_ip, this.egress_node, this.egress_ip, undefined, undefined)) return p.s!;
    return (p.s = bytes(`${this.resolved_ip === undefined ? '' : `,"resolved_ip":"${this.resolved_ip}"`}${opt('egress_node', this.egress_node, 256)}` +
      `${this.egress_ip === undefined ? '' : `,"egress_ip":"${this.egress_ip}"`}`));
  }

  private decisionPiece(): Buffer {
    const p = decisionPiece;
    if (same(p, this.decision, this.reason, this.rule, this.policy_version, undefined)) return p.s!;
    return (p.s = bytes(`,"decision":"${this.decision}","reason":"${this.reason}"${opt('rule', this.rule, 256)}` +
      `${this.policy_version === undefined ? '' : `,"policy_version":"${this.policy_version}"`}`));
  }

  private identityPiece(): Buffer {
    const p = this.principal;
    // The fields are the principal's unless something changed them after `identify` (a portal step).
    const own = p !== undefined && this.auth === p.method && this.user === p.user && this.email === p.email && this.service === p.service;
    if (!own) {
      const q = identityPiece;
      if (same(q, this.auth, this.user, this.email, this.groups, this.service)) return q.s!;
      return (q.s = bytes(this.identityText()));
    }
    let c = identityPieces.get(p);
    if (c === undefined || c.groups !== this.groups) {
      c = { groups: this.groups, s: bytes(this.identityText()) };
      identityPieces.set(p, c);
    }
    return c.s;
  }

  private identityText(): string {
    return `,"auth":"${this.auth}"${opt('user', this.user, 256)}${opt('email', this.email, 256)}${opt('groups', this.groups, 512)}${opt('service', this.service, 256)}`;
  }

  private devicePiece(): Buffer {
    const p = devicePiece;
    if (same(p, this.device_id, this.device_trust, undefined, undefined, undefined)) return p.s!;
    return (p.s = bytes(`${opt('device_id', this.device_id, 256)}${opt('device_trust', this.device_trust, 256)}`));
  }

  private inspectionText(): string {
    return `${opt('dlp', this.dlp, 1024)}${this.dlp_unscanned ? ',"dlp_unscanned":true' : ''}${this.incident === undefined ? '' : `,"incident":"${this.incident}"`}${opt('icap', this.icap, 512)}`;
  }

  /** Fixes the exchange's duration (once) and returns it in milliseconds, unrounded. */
  private finish(): number {
    if (this.elapsed === undefined) {
      this.elapsed = performance.now() - this.start;
      this.duration_ms = Math.round(this.elapsed * 100) / 100;
      this.ended = Date.now();
    }
    return this.elapsed;
  }

  /** Writes the line, once; later calls are ignored so every exit path may call it. */
  write(logger: ProxyLogger): void {
    if (this.logger !== undefined) return;
    this.logger = logger;
    this.finish();
    logger.queueAccess(this);
  }

  /** Tells the observers (metrics, live view); the logger calls it right after the line is written. */
  written(): void {
    const seen = this.logger && observers.get(this.logger);
    if (seen !== undefined) for (const fn of seen) fn(this);
  }
}

/** Something that learns of every finished exchange (metrics, the dashboard's live view). */
export type AccessObserver = (rec: AccessRecord) => void;

// Keyed by logger, so several proxies in one process (tests) keep their own observers.
const observers = new WeakMap<ProxyLogger, AccessObserver[]>();

/** Calls `fn` with every record written through `logger`, right after its line (in the same batch); `fn` must be cheap and never throw. */
export function observeAccess(logger: ProxyLogger, fn: AccessObserver): void {
  const list = observers.get(logger);
  if (list) list.push(fn);
  else observers.set(logger, [fn]);
}

/** The path as logged: the query string replaced unless the config asks to keep it (it often holds tokens). */
export function loggedPath(path: string, redactQuery: boolean): string {
  const q = redactQuery ? path.indexOf('?') : -1;
  return q === -1 ? path : `${path.slice(0, q)}?REDACTED`;
}

/** `scheme://host:port` and the path (an IPv6 address in brackets). */
function urlOf(scheme: string, host: string, port: number, path: string): string {
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}${path}`;
}
