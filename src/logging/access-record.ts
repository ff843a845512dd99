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

// Most values (normalised hosts, URLs, ids) need no escaping; test before paying for JSON.stringify.
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u2028\u2029]/;
const str = (name: string, v: string | undefined): string =>
  v === undefined ? '' : NEEDS_ESCAPE.test(v) ? `,"${name}":${JSON.stringify(v)}` : `,"${name}":"${v}"`;
/** Long client-chosen values are clipped so a line stays far below the 4 KiB atomic write. */
const clip = (v: string | undefined, max: number): string | undefined => (v !== undefined && v.length > max ? `${v.slice(0, max)}…` : v);
const num = (name: string, v: number | undefined): string => (v === undefined ? '' : `,"${name}":${v}`);
/** Milliseconds with two decimals, from integers (formatting a double costs several times more). */
function ms2(ms: number): string {
  const c = Math.round(ms * 100);
  const i = Math.floor(c / 100);
  const f = c - i * 100;
  return f === 0 ? `${i}` : f % 10 === 0 ? `${i}.${f / 10}` : f < 10 ? `${i}.0${f}` : `${i}.${f}`;
}
/** For values the proxy itself produced or validated (IPs, ids, tokens): nothing in them needs escaping. */
const own = (name: string, v: string | undefined): string => (v === undefined ? '' : `,"${name}":"${v}"`);

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

  /** The JSON line, fields in a fixed order, undefined fields left out (as pino does). */
  serialise(prefix: string): string {
    const ms = this.finish();
    return `${prefix},"kind":"${this.kind}","listener":"${this.listener}"${own('client_ip', this.client_ip)}${num('client_port', this.client_port)}` +
      `${own('method', this.method)}${own('scheme', this.scheme)}${str('host', clip(this.host, 256))}${num('port', this.port)}` +
      `${str('url', clip(this.url, 1536))}${own('resolved_ip', this.resolved_ip)}${own('egress_node', this.egress_node)}${own('egress_ip', this.egress_ip)}` +
      `,"status":${this.status},"bytes_in":${this.bytes_in},"bytes_out":${this.bytes_out}${this.ttfb_ms === undefined ? '' : `,"ttfb_ms":${ms2(this.ttfb_ms)}`},"duration_ms":${ms2(ms)},"decision":"${this.decision}","reason":"${this.reason}"` +
      `${own('rule', this.rule)}${own('policy_version', this.policy_version)}${own('report', this.report)},"inspected":${this.inspected}` +
      `,"auth":"${this.auth}"${str('user', clip(this.user, 256))}${str('email', clip(this.email, 256))}${str('groups', clip(this.groups, 512))}` +
      `${str('service', clip(this.service, 256))}${str('device_id', clip(this.device_id, 256))}${own('device_trust', this.device_trust)}` +
      `${str('dlp', clip(this.dlp, 1024))}${this.dlp_unscanned ? ',"dlp_unscanned":true' : ''}${own('incident', this.incident)}${own('icap', this.icap)}` +
      `${str('user_agent', clip(this.user_agent, 256))}}\n`;
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
