import type { IncomingMessage } from 'node:http';

/** Headers that describe one hop and never cross the proxy (RFC 9110 §7.6.1 plus the proxy ones). */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate',
  'te', 'trailer', 'transfer-encoding', 'upgrade', 'host',
]);

/**
 * Headers a client could use to claim an identity or an internal address. Identity comes only
 * from verified credentials, and the internet sees only the egress, so these are dropped.
 */
const SPOOFABLE = new Set([
  'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'forwarded', 'x-real-ip',
  'x-forwarded-user', 'x-forwarded-email', 'x-forwarded-groups', 'x-forwarded-preferred-username',
  'x-auth-request-user', 'x-auth-request-email', 'x-auth-request-groups', 'x-remote-user', 'remote-user',
  'x-egress-identity', 'x-egress-reason', 'x-egress-node',
]);

function connectionTokens(value: string | undefined): Set<string> | undefined {
  if (!value) return undefined;
  let out: Set<string> | undefined;
  for (const t of value.split(',')) {
    const name = t.trim().toLowerCase();
    if (name && name !== 'close' && name !== 'keep-alive') (out ??= new Set()).add(name);
  }
  return out;
}

/** Options for building the upstream request head. */
export interface UpstreamHeaderOptions {
  host: string;
  via: string | undefined;
  /** Client address to append to X-Forwarded-For, when that option is on. */
  forwardedFor: string | undefined;
  /** Keep `Upgrade` and `Connection: upgrade` (WebSocket handshakes only). */
  keepUpgrade?: boolean;
}

/** The proxy's own cookies (sign-in session) start with this; they are credentials for the proxy. */
const PROXY_COOKIE = '__Host-egress-';

/** A Cookie header without the proxy's own cookies: a destination must never see a proxy credential. */
export function withoutProxyCookies(value: string): string {
  return value.split(';').map((p) => p.trim()).filter((p) => p !== '' && !p.startsWith(PROXY_COOKIE)).join('; ');
}

/**
 * Builds the header list sent upstream from the client's raw headers: hop-by-hop and spoofable
 * headers dropped, Host rebuilt from the absolute URI (never the client's Host), Via appended.
 */
export function upstreamHeaders(raw: readonly string[], connection: string | undefined, o: UpstreamHeaderOptions): string[] {
  const named = connectionTokens(connection);
  const out: string[] = ['host', o.host];
  let via: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(name) || SPOOFABLE.has(name) || named?.has(name)) continue;
    if (name === 'via') {
      via = via ? `${via}, ${raw[i + 1]!}` : raw[i + 1]!;
      continue;
    }
    if (name === 'expect') continue; // answered by the proxy itself (see listeners/explicit.ts)
    if (name === 'cookie' && raw[i + 1]!.includes(PROXY_COOKIE)) {
      const kept = withoutProxyCookies(raw[i + 1]!);
      if (kept !== '') out.push(raw[i]!, kept);
      continue;
    }
    out.push(raw[i]!, raw[i + 1]!);
  }
  if (o.keepUpgrade) out.push('connection', 'Upgrade', 'upgrade', 'websocket');
  if (o.via) out.push('via', via ? `${via}, ${o.via}` : o.via);
  else if (via) out.push('via', via);
  if (o.forwardedFor) out.push('x-forwarded-for', o.forwardedFor);
  return out;
}

/**
 * Builds the flat header list sent back to the client from a parsed upstream response:
 * hop-by-hop headers and those named in its Connection header dropped, Via appended.
 */
export function downstreamHeaders(headers: Record<string, string | string[] | undefined>, via: string | undefined): string[] {
  const named = connectionTokens(typeof headers.connection === 'string' ? headers.connection : undefined);
  const out: string[] = [];
  let upstreamVia: string | undefined;
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || named?.has(name)) continue;
    if (name === 'via') {
      upstreamVia = Array.isArray(value) ? value.join(', ') : value;
      continue;
    }
    if (name === 'set-cookie') {
      // A destination must not set (or overwrite) the proxy's own session cookie on its site.
      for (const v of Array.isArray(value) ? value : [value]) if (!v.trimStart().startsWith(PROXY_COOKIE)) out.push(name, v);
      continue;
    }
    if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, value);
  }
  if (via) out.push('via', upstreamVia ? `${upstreamVia}, ${via}` : via);
  else if (upstreamVia) out.push('via', upstreamVia);
  return out;
}

/** True when a Via header shows that this node already handled the request (a forwarding loop). */
export function viaContains(via: string | undefined, token: string): boolean {
  return via !== undefined && via.includes(token);
}

/** True when the request announces a body (Content-Length above zero, or any Transfer-Encoding). */
export function hasBody(req: IncomingMessage): boolean {
  const cl = req.headers['content-length'];
  return cl !== undefined ? cl !== '0' : req.headers['transfer-encoding'] !== undefined;
}
