import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { REASONS, type ReasonId } from './reasons.js';

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  302: 'Found',
  403: 'Forbidden',
  405: 'Method Not Allowed',
  407: 'Proxy Authentication Required',
  408: 'Request Timeout',
  431: 'Request Header Fields Too Large',
  499: 'Client Closed Request',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
  508: 'Loop Detected',
};

type BodyKind = 'html' | 'json' | 'text';

/** Chooses the block-page flavour from the client's Accept header (browsers get HTML). */
export function bodyKindFor(accept: string | undefined): BodyKind {
  if (!accept) return 'text';
  if (accept.includes('text/html')) return 'html';
  if (accept.includes('application/json')) return 'json';
  return 'text';
}

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** Renders the response body that explains a refusal; never includes internal detail. */
export function renderBody(reason: ReasonId, kind: BodyKind, message?: string, rule?: string): { type: string; body: string } {
  const status = REASONS[reason].status;
  const text = message ?? REASONS[reason].text;
  if (kind === 'json') {
    return { type: 'application/json', body: JSON.stringify({ error: reason, status, message: text, ...(rule ? { rule } : {}) }) + '\n' };
  }
  if (kind === 'html') {
    const body =
      '<!doctype html><html><head><meta charset="utf-8"><title>Blocked by egress-proxy</title>' +
      '<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;color:#222}' +
      'code{background:#eee;padding:.1em .3em}</style></head><body>' +
      `<h1>${status} ${escapeHtml(STATUS_TEXT[status] ?? 'Error')}</h1><p>${escapeHtml(text)}</p>` +
      `<p>Reason: <code>${reason}</code>${rule ? `, rule <code>${escapeHtml(rule)}</code>` : ''}. Quote it to your administrator; it is in the proxy's log.</p>` +
      '</body></html>\n';
    return { type: 'text/html; charset=utf-8', body };
  }
  return { type: 'text/plain; charset=utf-8', body: `${status} ${reason}${rule ? ` (rule ${rule})` : ''}: ${text}\n` };
}

/** The status a refusal is answered with: a sign-in redirect (Location given) is a 302. */
export const refusalStatus = (reason: ReasonId, headers?: Readonly<Record<string, string | string[]>>): number =>
  headers?.location !== undefined ? 302 : REASONS[reason].status;

/** Answers a request on the proxy port with the refusal for `reason`. */
export function rejectRequest(
  req: IncomingMessage, res: ServerResponse, reason: ReasonId, message?: string, rule?: string, headers?: Readonly<Record<string, string | string[]>>,
): void {
  const { type, body } = renderBody(reason, bodyKindFor(req.headers.accept), message, rule);
  const status = refusalStatus(reason, headers);
  if (res.headersSent) {
    // The response already started: the only honest signal left is to cut the connection.
    res.destroy();
    return;
  }
  res.writeHead(status, STATUS_TEXT[status] ?? 'Error', {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-egress-reason': reason,
    ...headers,
  });
  res.end(body);
}

/** Writes a whole refusal on a raw socket (CONNECT, upgrades, parse errors) and closes it. */
export function rejectSocket(
  socket: Socket, reason: ReasonId, accept?: string, message?: string, rule?: string, headers?: Readonly<Record<string, string | string[]>>,
): void {
  if (socket.destroyed) return;
  const status = refusalStatus(reason, headers);
  let extra = '';
  for (const [name, v] of Object.entries(headers ?? {})) for (const one of Array.isArray(v) ? v : [v]) extra += `${name}: ${one}\r\n`;
  const { type, body } = renderBody(reason, bodyKindFor(accept), message, rule);
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\n` +
      `Content-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `X-Egress-Reason: ${reason}\r\nCache-Control: no-store\r\n${extra}Connection: close\r\n\r\n` +
      body,
  );
  // A client that never reads must not hold the socket open.
  socket.setTimeout(5000, () => socket.destroy());
}
