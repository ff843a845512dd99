import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { ProxyError, upstreamReason } from '../errors/proxy-error.js';
import { isDenial, type ReasonId } from '../errors/reasons.js';
import { refusalStatus } from '../errors/reject.js';
import type { Asked, Device, Principal } from '../identity/principal.js';
import { AccessPrefix } from './access-prefix.js';
import { encodeLine, urlOf } from './access-line.js';
import { LineBytes } from './line-bytes.js';
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

/** Where `serialise` encodes (tests and tools; the proxy's own lines go through `write`). */
const scratch = new LineBytes(8192);

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

  /** Encodes the line into `out` and returns its length (access-line.ts). */
  encode(out: LineBytes, prefix: AccessPrefix): number {
    return encodeLine(this, out, prefix);
  }

  /** When the exchange ended (epoch milliseconds, once `finish` ran): the line's time. */
  get endedAt(): number {
    return this.ended;
  }

  /** Fixes the exchange's duration (once) and returns it in milliseconds, unrounded. */
  finish(): number {
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
