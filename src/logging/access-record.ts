import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { ProxyError, upstreamReason } from '../errors/proxy-error.js';
import { isDenial, type ReasonId } from '../errors/reasons.js';
import { refusalStatus } from '../errors/reject.js';
import type { Asked, Device, Principal } from '../identity/principal.js';
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

// Lines are built from a few pieces: the groups of fields that repeat from one request to the next
// (the client connection, the target, the upstream, the policy decision, the identity) are kept
// as text and reused. Each piece built is a short-lived string: the ~90 a line used to take made
// young-generation collections come more often, for the whole request path; a dozen keep a line
// near the cost of copying it (docs/benchmarks.md "Logging and metrics").

// Most values (normalised hosts, URLs, ids) need no escaping; test before paying for JSON.stringify.
// Lone surrogates would come out of UTF-8 encoding as U+FFFD, so they are escaped too.
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u2028\u2029\ud800-\udfff]/;
/** `v` as a JSON string, clipped to `max` characters (then `…`). */
function q(v: string, max: number): string {
  const c = v.length > max ? `${v.slice(0, max)}…` : v;
  return NEEDS_ESCAPE.test(c) ? JSON.stringify(c) : `"${c}"`;
}
/** `,"name":"v"`, or nothing when `v` is undefined. */
const opt = (name: string, v: string | undefined, max: number): string => (v === undefined ? '' : `,"${name}":${q(v, max)}`);
/** Milliseconds with two decimals, from integers (formatting a double costs several times more). */
function ms2(ms: number): string {
  const c = Math.round(ms * 100);
  const i = Math.floor(c / 100);
  const f = c - i * 100;
  return f === 0 ? `${i}` : f % 10 === 0 ? `${i}.${f / 10}` : f < 10 ? `${i}.0${f}` : `${i}.${f}`;
}

/** The text of one group of fields and the values it was built from (compared by ===). */
interface Piece {
  a: unknown;
  b: unknown;
  c: unknown;
  d: unknown;
  s: string;
}
const piece = (): Piece => ({ a: undefined, b: undefined, c: undefined, d: undefined, s: '' });
/** True when `p` was built from these values; otherwise `p` takes them and the caller rebuilds `p.s`. */
function same(p: Piece, a: unknown, b: unknown, c: unknown, d: unknown): boolean {
  if (p.a === a && p.b === b && p.c === c && p.d === d && p.s !== '') return true;
  p.a = a;
  p.b = b;
  p.c = c;
  p.d = d;
  return false;
}
// One of each: consecutive requests mostly share them (a miss costs what building the piece costs).
const connPiece = piece();
const targetPiece = piece();
const upstreamPiece = piece();
const decisionPiece = piece();
// Per principal (a token's or a session's principal object lives as long as its cache entry).
const identityPieces = new WeakMap<Principal, { groups: string | undefined; s: string }>();

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
  url: string | undefined;
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
  private written = false;

  constructor(kind: ExchangeKind, clientIp: string | undefined, clientPort: number | undefined) {
    this.kind = kind;
    this.client_ip = clientIp;
    this.client_port = clientPort;
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

  /**
   * The JSON line: `prefix` then the fields in a fixed order, undefined fields left out (as pino
   * does). Values the proxy produced or validated (IPs, ids, reasons) need no escaping; what a
   * client chose is escaped and clipped so a line stays below 4 KiB.
   */
  serialise(prefix: string): string {
    const ms = this.finish();
    return `${prefix}${this.connText()}${this.targetText()}${opt('url', this.url, 1536)}${this.upstreamText()}` +
      `,"status":${this.status},"bytes_in":${this.bytes_in},"bytes_out":${this.bytes_out}${this.ttfb_ms === undefined ? '' : `,"ttfb_ms":${ms2(this.ttfb_ms)}`},"duration_ms":${ms2(ms)}` +
      `${this.decisionText()}${this.report === undefined ? '' : `,"report":${q(this.report, 1024)}`},"inspected":${this.inspected}${this.identityText()}` +
      `${this.dlp === undefined && this.incident === undefined && this.icap === undefined && !this.dlp_unscanned ? '' : this.inspectionText()}${opt('user_agent', this.user_agent, 256)}}\n`;
  }

  private connText(): string {
    const p = connPiece;
    if (same(p, this.kind, this.listener, this.client_ip, this.client_port)) return p.s;
    return (p.s = `,"kind":"${this.kind}","listener":"${this.listener}"${this.client_ip === undefined ? '' : `,"client_ip":"${this.client_ip}"`}` +
      `${this.client_port === undefined ? '' : `,"client_port":${this.client_port}`}`);
  }

  private targetText(): string {
    const p = targetPiece;
    if (same(p, this.method, this.scheme, this.host, this.port)) return p.s;
    return (p.s = `${opt('method', this.method, 32)}${this.scheme === undefined ? '' : `,"scheme":"${this.scheme}"`}${opt('host', this.host, 256)}` +
      `${this.port === undefined ? '' : `,"port":${this.port}`}`);
  }

  private upstreamText(): string {
    const p = upstreamPiece;
    if (same(p, this.resolved_ip, this.egress_node, this.egress_ip, undefined)) return p.s;
    return (p.s = `${this.resolved_ip === undefined ? '' : `,"resolved_ip":"${this.resolved_ip}"`}${opt('egress_node', this.egress_node, 256)}` +
      `${this.egress_ip === undefined ? '' : `,"egress_ip":"${this.egress_ip}"`}`);
  }

  private decisionText(): string {
    const p = decisionPiece;
    if (same(p, this.decision, this.reason, this.rule, this.policy_version)) return p.s;
    return (p.s = `,"decision":"${this.decision}","reason":"${this.reason}"${opt('rule', this.rule, 256)}` +
      `${this.policy_version === undefined ? '' : `,"policy_version":"${this.policy_version}"`}`);
  }

  private identityText(): string {
    const device = this.device_id === undefined && this.device_trust === undefined ? '' :
      `${opt('device_id', this.device_id, 256)}${opt('device_trust', this.device_trust, 256)}`;
    const p = this.principal;
    // The fields are the principal's unless something changed them after `identify` (a portal step).
    const own = p !== undefined && this.auth === p.method && this.user === p.user && this.email === p.email && this.service === p.service;
    let c = own ? identityPieces.get(p) : undefined;
    if (c === undefined || c.groups !== this.groups) {
      c = { groups: this.groups, s: `,"auth":"${this.auth}"${opt('user', this.user, 256)}${opt('email', this.email, 256)}${opt('groups', this.groups, 512)}${opt('service', this.service, 256)}` };
      if (own) identityPieces.set(p, c);
    }
    return device === '' ? c.s : c.s + device;
  }

  private inspectionText(): string {
    return `${opt('dlp', this.dlp, 1024)}${this.dlp_unscanned ? ',"dlp_unscanned":true' : ''}${this.incident === undefined ? '' : `,"incident":"${this.incident}"`}${opt('icap', this.icap, 512)}`;
  }

  /** Fixes the exchange's duration (once) and returns it in milliseconds, unrounded. */
  private finish(): number {
    if (this.elapsed === undefined) {
      this.elapsed = performance.now() - this.start;
      this.duration_ms = Math.round(this.elapsed * 100) / 100;
    }
    return this.elapsed;
  }

  /** Writes the line, once; later calls are ignored so every exit path may call it. */
  write(logger: ProxyLogger): void {
    if (this.written) return;
    this.written = true;
    if (logger.accessEnabled) logger.writeAccess(this.serialise(logger.accessPrefix()));
    else this.finish();
    const seen = observers.get(logger);
    if (seen !== undefined) for (const fn of seen) fn(this);
  }
}

/** Something that learns of every finished exchange (metrics, the dashboard's live view). */
export type AccessObserver = (rec: AccessRecord) => void;

// Keyed by logger, so several proxies in one process (tests) keep their own observers.
const observers = new WeakMap<ProxyLogger, AccessObserver[]>();

/** Calls `fn` with every record written through `logger`, right after its line; `fn` must be cheap and never throw. */
export function observeAccess(logger: ProxyLogger, fn: AccessObserver): void {
  const list = observers.get(logger);
  if (list) list.push(fn);
  else observers.set(logger, [fn]);
}

/** The URL as logged: the query string replaced unless the config asks to keep it (it often holds tokens). */
export function loggedUrl(scheme: string, host: string, port: number, path: string, redactQuery: boolean): string {
  const q = path.indexOf('?');
  const p = redactQuery && q !== -1 ? `${path.slice(0, q)}?REDACTED` : path;
  const h = host.includes(':') ? `[${host}]` : host;
  return `${scheme}://${h}:${port}${p}`;
}
