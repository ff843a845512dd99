import type { Target } from '../egress/target.js';
import { ProxyError } from '../errors/proxy-error.js';

export type { Target };

const DEFAULT_PORT = { http: 80, https: 443, ws: 80, wss: 443 } as const;

function normaliseHost(hostname: string): string {
  let h = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

/**
 * Parses an absolute-form request target with the WHATWG URL parser, which also canonicalises
 * numeric IPv4 spellings (2130706433, 0x7f.1) so policy and the address guard see one form.
 */
export function parseAbsoluteTarget(raw: string): Target {
  // RFC 3986 needs an authority; WHATWG would read "http:///x" as host "x", so check first.
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#\\]/.test(raw)) throw new ProxyError('bad_target', 'not an absolute URI with a host');
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ProxyError('bad_target', 'unparseable absolute URI');
  }
  const scheme = url.protocol.slice(0, -1);
  if (scheme !== 'http' && scheme !== 'https' && scheme !== 'ws' && scheme !== 'wss') {
    throw new ProxyError('bad_target', `unsupported scheme ${scheme}`);
  }
  if (url.username || url.password) throw new ProxyError('bad_target', 'credentials in the request URI');
  const host = normaliseHost(url.hostname);
  if (!host) throw new ProxyError('bad_target', 'empty host');
  const port = url.port ? Number(url.port) : DEFAULT_PORT[scheme];
  return { scheme, host, port, path: `${url.pathname}${url.search}`, hostHeader: url.host.endsWith('.') ? url.host.slice(0, -1) : url.host };
}

/** Parses a CONNECT authority (`host:port`, `[v6]:port`); the port is required. */
export function parseConnectTarget(authority: string): Target {
  if (!authority || /[/?#@\s\\]/.test(authority)) throw new ProxyError('bad_target', 'CONNECT needs host:port');
  const m = /:(\d{1,5})$/.exec(authority);
  if (!m) throw new ProxyError('bad_target', 'CONNECT needs host:port');
  const port = Number(m[1]);
  if (port < 1 || port > 65535) throw new ProxyError('bad_target', 'port out of range');
  let url: URL;
  try {
    url = new URL(`http://${authority.slice(0, m.index)}`);
  } catch {
    throw new ProxyError('bad_target', 'unparseable CONNECT host');
  }
  const host = normaliseHost(url.hostname);
  if (!host) throw new ProxyError('bad_target', 'empty host');
  return { scheme: 'https', host, port, path: '', hostHeader: `${url.hostname}:${port}` };
}
