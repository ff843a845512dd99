// How an access record becomes its JSON line (the record itself: access-record.ts).
import type { Principal } from '../identity/principal.js';
import type { AccessPrefix } from './access-prefix.js';
import type { AccessRecord } from './access-record.js';
import { type LineBytes, quote, quotedBound } from './line-bytes.js';

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
// Each piece compares its own fields in place, not through one shared helper: V8 keeps type
// feedback per comparison in the source, and a helper comparing strings, numbers, buffers and
// undefined alike sent every comparison through the generic equality builtin (0.2% of the
// proxy's CPU in a profile).
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
  if (p.s !== undefined && p.a === a && p.b === b && p.c === c && p.d === d && p.e === e) return p.s;
  p.a = a;
  p.b = b;
  p.c = c;
  p.d = d;
  p.e = e;
  return (p.s = Buffer.concat([a, b, c, d, e]));
}
// The prefix and the client's connection; then, after the client's port, the rest that repeats.
const head = piece();
const middle = piece();
/** URLs are clipped to this many characters. */
const URL_MAX = 1536;

/**
 * Encodes the line into `out` and returns its length: `prefix` then the fields in a fixed
 * order, undefined fields left out (as pino does). Values the proxy produced or validated (IPs,
 * ids, reasons) need no escaping; what a client chose is escaped and clipped so a line stays
 * small.
 */
export function encodeLine(r: AccessRecord, out: LineBytes, prefix: AccessPrefix): number {
  const ms = r.finish();
  prefix.at(r.endedAt);
  const start = join(head, prefix.bytes, connPieceOf(r), EMPTY, EMPTY, EMPTY);
  const rest = join(middle, targetPieceOf(r), upstreamPieceOf(r), decisionPieceOf(r), identityPieceOf(r),
    r.device_id === undefined && r.device_trust === undefined ? EMPTY : devicePieceOf(r));
  const inspection = r.dlp === undefined && r.incident === undefined && r.icap === undefined && !r.dlp_unscanned ? '' : inspectionText(r);
  // The URL from the target's cached start and the path: no URL string is built per request.
  const u = r.path !== undefined && r.host !== undefined && r.port !== undefined ? urlPieceOf(r) : undefined;
  const fromPiece = u !== undefined && u.chars < URL_MAX;
  const whole = fromPiece ? undefined : r.url;
  out.start(start.length + rest.length + 3 * inspection.length + (fromPiece ? u.s!.length + quotedBound(r.path, URL_MAX) : quotedBound(whole, URL_MAX)) +
    quotedBound(r.report, 1024) + quotedBound(r.user_agent, 256) + 256);
  out.raw(start);
  if (prefix.timeAt >= 0) out.over(out.begin + prefix.timeAt, prefix.time);
  if (r.client_port !== undefined) {
    out.raw(K.clientPort);
    out.int(r.client_port);
  }
  out.raw(rest);
  if (fromPiece) {
    out.raw(u.s!);
    out.strRest(r.path!, URL_MAX - u.chars);
  } else if (whole !== undefined) {
    out.raw(K.url);
    out.str(whole, URL_MAX);
  }
  out.raw(K.status);
  out.int(r.status);
  out.raw(K.bytesIn);
  out.int(r.bytes_in);
  out.raw(K.bytesOut);
  out.int(r.bytes_out);
  if (r.ttfb_ms !== undefined) {
    out.raw(K.ttfb);
    out.ms2(r.ttfb_ms);
  }
  out.raw(K.duration);
  out.ms2(ms);
  if (r.report !== undefined) {
    out.raw(K.report);
    out.str(r.report, 1024);
  }
  out.raw(r.inspected ? K.inspected : K.notInspected);
  if (inspection !== '') out.text(inspection);
  if (r.user_agent !== undefined) {
    out.raw(K.userAgent);
    out.str(r.user_agent, 256);
  }
  out.raw(K.end);
  return out.length;
}

function connPieceOf(r: AccessRecord): Buffer {
  const p = connPiece;
  if (p.s !== undefined && p.a === r.kind && p.b === r.listener && p.c === r.client_ip) return p.s;
  p.a = r.kind;
  p.b = r.listener;
  p.c = r.client_ip;
  return (p.s = bytes(`,"kind":"${r.kind}","listener":"${r.listener}"${r.client_ip === undefined ? '' : `,"client_ip":"${r.client_ip}"`}`));
}

function targetPieceOf(r: AccessRecord): Buffer {
  const p = targetPiece;
  if (p.s !== undefined && p.a === r.method && p.b === r.scheme && p.c === r.host && p.d === r.port) return p.s;
  p.a = r.method;
  p.b = r.scheme;
  p.c = r.host;
  p.d = r.port;
  return (p.s = bytes(`${opt('method', r.method, 32)}${r.scheme === undefined ? '' : `,"scheme":"${r.scheme}"`}${opt('host', r.host, 256)}` +
    `${r.port === undefined ? '' : `,"port":${r.port}`}`));
}

/** `,"url":"scheme://host:port` (no closing quote), and how many characters of the URL that is. */
function urlPieceOf(r: AccessRecord): UrlPiece {
  const p = urlPiece;
  if (p.s !== undefined && p.scheme === r.scheme && p.host === r.host && p.port === r.port) return p;
  const text = urlOf(r.scheme ?? 'http', r.host!, r.port!, '');
  p.scheme = r.scheme;
  p.host = r.host;
  p.port = r.port;
  p.chars = text.length;
  p.s = bytes(`,"url":${quote(text, URL_MAX).slice(0, -1)}`);
  return p;
}

function upstreamPieceOf(r: AccessRecord): Buffer {
  const p = upstreamPiece;
  if (p.s !== undefined && p.a === r.resolved_ip && p.b === r.egress_node && p.c === r.egress_ip) return p.s;
  p.a = r.resolved_ip;
  p.b = r.egress_node;
  p.c = r.egress_ip;
  return (p.s = bytes(`${r.resolved_ip === undefined ? '' : `,"resolved_ip":"${r.resolved_ip}"`}${opt('egress_node', r.egress_node, 256)}` +
    `${r.egress_ip === undefined ? '' : `,"egress_ip":"${r.egress_ip}"`}`));
}

function decisionPieceOf(r: AccessRecord): Buffer {
  const p = decisionPiece;
  if (p.s !== undefined && p.a === r.decision && p.b === r.reason && p.c === r.rule && p.d === r.policy_version) return p.s;
  p.a = r.decision;
  p.b = r.reason;
  p.c = r.rule;
  p.d = r.policy_version;
  return (p.s = bytes(`,"decision":"${r.decision}","reason":"${r.reason}"${opt('rule', r.rule, 256)}` +
    `${r.policy_version === undefined ? '' : `,"policy_version":"${r.policy_version}"`}`));
}

function identityPieceOf(r: AccessRecord): Buffer {
  const p = r.principal;
  // The fields are the principal's unless something changed them after `identify` (a portal step).
  const own = p !== undefined && r.auth === p.method && r.user === p.user && r.email === p.email && r.service === p.service;
  if (!own) {
    const q = identityPiece;
    if (q.s !== undefined && q.a === r.auth && q.b === r.user && q.c === r.email && q.d === r.groups && q.e === r.service) return q.s;
    q.a = r.auth;
    q.b = r.user;
    q.c = r.email;
    q.d = r.groups;
    q.e = r.service;
    return (q.s = bytes(identityText(r)));
  }
  let c = identityPieces.get(p);
  if (c === undefined || c.groups !== r.groups) {
    c = { groups: r.groups, s: bytes(identityText(r)) };
    identityPieces.set(p, c);
  }
  return c.s;
}

function identityText(r: AccessRecord): string {
  return `,"auth":"${r.auth}"${opt('user', r.user, 256)}${opt('email', r.email, 256)}${opt('groups', r.groups, 512)}${opt('service', r.service, 256)}`;
}

function devicePieceOf(r: AccessRecord): Buffer {
  const p = devicePiece;
  if (p.s !== undefined && p.a === r.device_id && p.b === r.device_trust) return p.s;
  p.a = r.device_id;
  p.b = r.device_trust;
  return (p.s = bytes(`${opt('device_id', r.device_id, 256)}${opt('device_trust', r.device_trust, 256)}`));
}

function inspectionText(r: AccessRecord): string {
  return `${opt('dlp', r.dlp, 1024)}${r.dlp_unscanned ? ',"dlp_unscanned":true' : ''}${r.incident === undefined ? '' : `,"incident":"${r.incident}"`}${opt('icap', r.icap, 512)}`;
}

/** `scheme://host:port` and the path (an IPv6 address in brackets). */
export function urlOf(scheme: string, host: string, port: number, path: string): string {
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}${path}`;
}
