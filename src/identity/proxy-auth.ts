/** What a Proxy-Authorization value carries: a token, or why there is none. */
export type ProxyCredential = { token: string } | { problem: string };

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * Extracts the token from `Bearer <token>` or `Basic base64(user:token)`. Basic exists so that
 * proxy URLs with credentials (`http://svc:<token>@proxy:3128`) work in curl, npm, git, pip and
 * undici, which only speak Basic to proxies; the user part is informational. A token given as the
 * user with an empty password is accepted too (some tools only take one field). The problem text
 * is for the log, so it never repeats the value.
 */
export function parseProxyAuthorization(header: string): ProxyCredential {
  const value = header.trim();
  const sp = value.indexOf(' ');
  if (sp <= 0) return { problem: 'no credentials after the scheme' };
  const scheme = value.slice(0, sp).toLowerCase();
  const rest = value.slice(sp + 1).trim();
  if (rest === '') return { problem: 'empty credentials' };
  if (scheme === 'bearer') return { token: rest };
  if (scheme !== 'basic') return { problem: `unsupported scheme ${scheme.slice(0, 16)}` };
  if (rest.length % 4 !== 0 || !BASE64.test(rest)) return { problem: 'malformed base64 in Basic credentials' };
  const decoded = Buffer.from(rest, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return { problem: 'Basic credentials without user:password' };
  const password = decoded.slice(colon + 1);
  const token = password !== '' ? password : decoded.slice(0, colon);
  return token === '' ? { problem: 'empty Basic credentials' } : { token };
}
