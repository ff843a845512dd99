import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { chooseAddress } from '../egress/dial.js';
import { HttpExchange } from '../egress/forward-http.js';
import { hasBody, viaContains } from '../egress/headers.js';
import { openTunnel } from '../egress/tunnel.js';
import { interceptTunnel, kIntercepted, type InterceptedTunnel } from '../inspection/intercept.js';
import { forwardWebSocket } from '../egress/websocket.js';
import { errorCode, ProxyError } from '../errors/proxy-error.js';
import { REASONS, statusOf, type ReasonId } from '../errors/reasons.js';
import { rejectRequest, rejectSocket } from '../errors/reject.js';
import { AccessRecord, loggedPath } from '../logging/access-record.js';
import { authenticate, challenges, deviceOf, SESSION_HANDOFF_PATH } from '../identity/authenticate.js';
import type { Asked, Principal } from '../identity/principal.js';
import { responseCheck } from '../inspection/download.js';
import { inspectUpload } from '../inspection/upload.js';
import { decide, deviceLevels } from '../policy/decide.js';
import { ICAP_PROFILE } from '../policy/schema.js';
import type { ProxyRuntime } from '../runtime.js';
import { answerConnectProbe, answerProbe, PROBE_HOST } from './probe.js';
import { parseAbsoluteTarget, parseConnectTarget, type Target } from './target.js';

type Kind = 'http' | 'connect' | 'websocket';

/**
 * Fills the record, establishes who is asking, asks policy and picks the address to dial; throws
 * ProxyError on a deny so every path refuses the same way. Policy is asked before DNS, unless an
 * app is defined by CIDRs: then the name is resolved first so those apps match on the address
 * that will be dialled.
 */
function admit(rt: ProxyRuntime, rec: AccessRecord, req: IncomingMessage, target: Target, kind: Kind): string | Promise<string> {
  rec.scheme = target.scheme;
  rec.host = target.host;
  rec.port = target.port;
  rec.path = kind === 'connect' ? undefined : loggedPath(target.path, rt.config.log.redact_query);
  if (viaContains(req.headers.via, rt.viaToken)) throw new ProxyError('proxy_loop', 'own Via entry seen');
  const who = authenticate(rt, req, rec.client_ip);
  return who instanceof Promise ? who.then((p) => admitAs(rt, rec, req, target, kind, p)) : admitAs(rt, rec, req, target, kind, who);
}

function admitAs(rt: ProxyRuntime, rec: AccessRecord, req: IncomingMessage, target: Target, kind: Kind, p: Principal): string | Promise<string> {
  const device = deviceOf(req.socket);
  const asked: Asked = { principal: p, device, attributes: device ? { id: device.id, ...rt.identity.devices?.attributes(device.id) } : undefined };
  rec.asked = asked;
  rec.identify(p, device, device ? deviceLevels(rt.current.policy, asked.attributes) : undefined);
  rt.identity.admitted.track(req.socket, p, device);
  if (rt.current.policy.hasCidrApps && isIP(target.host) === 0) {
    const ip = chooseAddress(rt, target);
    const judged = (a: string): string => {
      judge(rt, rec, req, target, kind, a, asked);
      return a;
    };
    return typeof ip === 'string' ? judged(ip) : ip.then(judged);
  }
  judge(rt, rec, req, target, kind, undefined, asked);
  return chooseAddress(rt, target);
}

function judge(rt: ProxyRuntime, rec: AccessRecord, req: IncomingMessage, target: Target, kind: Kind, resolved: string | undefined, asked: Asked): void {
  const d = decide(rt.current.policy, {
    kind, host: target.host, port: target.port, scheme: target.scheme, method: kind === 'connect' ? undefined : req.method,
    path: kind === 'connect' ? undefined : target.path, source: rec.client_ip, resolved, identity: asked.principal, device: asked.attributes,
  });
  rec.rule = d.rule;
  rec.policy_version = d.version;
  rec.inspectWanted = d.modifiers.inspect === true;
  rec.dlpProfiles = d.modifiers.dlp;
  // A rule may ask for query strings in clear (they are redacted by default: they often hold tokens).
  if (d.modifiers.log_query === true && kind !== 'connect' && rt.config.log.redact_query) {
    rec.path = target.path;
  }
  if (d.report.length > 0) rec.report = d.report.map((h) => `${h.rule}:${h.action}`).join(',');
  if (d.action === 'allow') return;
  if (asked.principal.method === 'anonymous' && rt.identity.enabled && wantsIdentity(rt, d.rule)) {
    const signIn = rt.identity.sessions;
    const browser = signIn !== undefined && isBrowser(req);
    // A browser's CONNECT is intercepted so the page inside can send it to sign in (when inspection can).
    if (kind === 'connect' && browser && rt.inspection) {
      rec.inspectWanted = true;
      rec.signInPending = true;
      return;
    }
    const url = kind === 'connect' ? undefined : `${target.scheme}://${target.hostHeader}${target.path}`;
    const headers = browser && url !== undefined && req.method === 'GET' ? { location: signIn.loginUrl(url) } : challenges(rt.config.identity.realm);
    throw new ProxyError('auth_required', `rule ${d.rule}`, { rule: d.rule, headers });
  }
  throw new ProxyError(d.reason, d.rule, { rule: d.rule, publicMessage: d.message });
}

/** Would an identity change the answer? True when nothing but the default, or a rule about anonymity, refused. */
function wantsIdentity(rt: ProxyRuntime, rule: string): boolean {
  return rule === 'default' || rt.current.policy.rules.find((r) => r.id === rule)?.anonymous === true;
}

/** Browsers can follow a sign-in redirect; other clients get 407 and a challenge. */
function isBrowser(req: IncomingMessage): boolean {
  return req.headers['user-agent']?.startsWith('Mozilla/') === true;
}

/**
 * The absolute URL a request is for. On the explicit port that is the request line itself; inside
 * an intercepted tunnel the request line is origin-form and the host is the tunnel's TLS server
 * name (a different Host header is refused: no domain fronting past policy).
 */
function requestUrl(req: IncomingMessage, rec: AccessRecord): string {
  const t = (req.socket as Socket & { [kIntercepted]?: InterceptedTunnel })[kIntercepted];
  if (!t) return req.url ?? '';
  rec.inspected = true;
  rec.client_ip = t.clientIp;
  rec.listener = t.listener;
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  const authority = t.port === 443 ? host : `${host}:${t.port}`;
  const given = req.headers.host?.toLowerCase();
  if (given && given !== authority && given !== `${host}:${t.port}`) throw new ProxyError('host_mismatch', `${given} in a tunnel to ${authority}`);
  return `${req.headers.upgrade ? 'wss' : 'https'}://${authority}${req.url ?? '/'}`;
}

/** A refused sign-in step is logged with the portal's reason, so it can be searched for. */
function logPortalRefusal(res: ServerResponse, rec: AccessRecord): void {
  res.once('finish', () => {
    const r = res.getHeader('x-egress-reason');
    if (typeof r === 'string' && r in REASONS) Object.assign(rec, { reason: r as ReasonId, decision: 'deny' });
  });
}

function onRequest(rt: ProxyRuntime, req: IncomingMessage, res: ServerResponse, expectContinue: boolean): void {
  // Refused, not logged (counted): the access log cannot take more lines (log.when_full: fail_closed).
  if (rt.logger.refuseNew()) return rejectRequest(req, res, 'log_backlog');
  const ex = new HttpExchange(rt, req, res);
  const rec = ex.record;
  try {
    const url = requestUrl(req, rec);
    if (url.charCodeAt(0) === 47 /* / */) throw new ProxyError('not_a_proxy_request', url);
    const target = parseAbsoluteTarget(url);
    if (target.host === PROBE_HOST) {
      Object.assign(rec, { host: PROBE_HOST, decision: 'allow', reason: 'allowed', rule: 'probe' });
      // After sign-in the portal may send the browser here, through the proxy, so the session is
      // bound to what the proxy itself sees: the device certificate and the client address.
      if (target.path.startsWith(SESSION_HANDOFF_PATH) && rt.identity.portal?.bindHere) {
        rec.rule = 'sign-in';
        rec.device_id = deviceOf(req.socket)?.id;
        logPortalRefusal(res, rec);
        rt.identity.portal.bindHere(req, res);
        return;
      }
      answerProbe(rt, res, req.socket.remoteAddress);
      return;
    }
    // Inside an intercepted site, the sign-in portal hands the browser its session cookie for that site.
    if (rec.inspected && target.path.startsWith(SESSION_HANDOFF_PATH) && rt.identity.portal?.handoff) {
      Object.assign(rec, { scheme: target.scheme, host: target.host, port: target.port, decision: 'allow', reason: 'allowed', rule: 'sign-in' });
      logPortalRefusal(res, rec);
      rt.identity.portal.handoff(req, res, target.host, target.port);
      return;
    }
    const ip = admit(rt, rec, req, target, 'http');
    if (typeof ip === 'string') send(rt, ex, req, res, target, ip, expectContinue);
    else ip.then((a) => send(rt, ex, req, res, target, a, expectContinue)).catch((err: unknown) => ex.fail(err));
  } catch (err) {
    ex.fail(err);
  }
}

function send(rt: ProxyRuntime, ex: HttpExchange, req: IncomingMessage, res: ServerResponse, target: Target, ip: string, expectContinue: boolean): void {
  const rec = ex.record;
  rec.resolved_ip = ip;
  rec.decision = 'allow';
  rec.reason = 'allowed';
  if (expectContinue) res.writeContinue();
  const profiles = rec.dlpProfiles;
  ex.responseCheck = responseCheck(rt, rec, profiles);
  if (profiles === undefined || profiles.length === 0 || (!hasBody(req) && !profiles.includes(ICAP_PROFILE))) {
    ex.forward(target, ip);
    return;
  }
  // The rule wants the body inspected: nothing goes upstream until inspection releases it.
  inspectUpload(rt, rec, req, res, profiles).then((body) => ex.forward(target, ip, body), (err: unknown) => ex.fail(err));
}

/** Runs a raw-socket exchange (CONNECT or WebSocket): one record, one refusal path, one log line. */
async function onSocketExchange(
  rt: ProxyRuntime, kind: 'connect' | 'websocket', req: IncomingMessage, socket: Socket,
  body: (rec: AccessRecord, done: () => void) => Promise<void>,
): Promise<void> {
  if (rt.logger.refuseNew()) return rejectSocket(socket, 'log_backlog', req.headers.accept);
  const rec = AccessRecord.forRequest(kind, req);
  rt.active++;
  let finished = false;
  // Idempotent: several exit paths (refusal, close, timeout) may all report the end.
  const done = (): void => {
    if (finished) return;
    finished = true;
    rt.active--;
    rec.write(rt.logger);
  };
  socket.on('error', () => socket.destroy());
  try {
    if (rt.draining) throw new ProxyError('draining');
    await body(rec, done);
  } catch (err) {
    const pe = err instanceof ProxyError ? err : undefined;
    rejectSocket(socket, rec.fail(err, rt.logger), req.headers.accept, pe?.publicMessage, pe?.rule, pe?.headers);
    done();
  }
}

function onConnect(rt: ProxyRuntime, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  return onSocketExchange(rt, 'connect', req, socket, async (rec, done) => {
    const target = parseConnectTarget(req.url ?? '');
    if (target.host === PROBE_HOST) {
      Object.assign(rec, { host: PROBE_HOST, port: target.port, status: 200, decision: 'allow', reason: 'allowed', rule: 'probe' });
      answerConnectProbe(rt, socket);
      done();
      return;
    }
    const ip = await admit(rt, rec, req, target, 'connect');
    rec.resolved_ip = ip;
    rec.decision = 'allow';
    rec.reason = 'allowed';
    if (rec.inspectWanted && rt.inspection) interceptTunnel(rt, rec, socket, head, target, ip, done, rec.asked!);
    else openTunnel(rt, rec, socket, head, ip, target.port, done);
  });
}

function onUpgrade(rt: ProxyRuntime, req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  return onSocketExchange(rt, 'websocket', req, socket, async (rec, done) => {
    if (String(req.headers.upgrade).toLowerCase() !== 'websocket') throw new ProxyError('upgrade_not_supported', String(req.headers.upgrade));
    if (req.method !== 'GET') throw new ProxyError('bad_request', 'WebSocket handshake must be GET');
    const url = requestUrl(req, rec);
    if (url.charCodeAt(0) === 47 /* / */) throw new ProxyError('not_a_proxy_request', url);
    const target = parseAbsoluteTarget(url);
    const ip = await admit(rt, rec, req, target, 'websocket');
    rec.resolved_ip = ip;
    forwardWebSocket(rt, rec, req, socket, head, target, ip, done);
  });
}

/** Maps the HTTP parser's complaint about a malformed request to a reason id. */
export function clientErrorReason(err: unknown): ReasonId | undefined {
  switch (errorCode(err)) {
    case 'HPE_HEADER_OVERFLOW':
      return 'header_too_large';
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'HPE_HEADERS_TIMEOUT':
      return 'request_timeout';
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
    case 'HPE_INVALID_CONTENT_LENGTH':
    case 'HPE_INVALID_TRANSFER_ENCODING':
    case 'HPE_INVALID_CHUNK_SIZE':
      return 'smuggling_rejected';
    case 'ECONNRESET':
    case 'EPIPE':
      return undefined;
    default:
      return 'bad_request';
  }
}

function onClientError(rt: ProxyRuntime, err: Error, socket: Socket): void {
  const reason = clientErrorReason(err);
  if (reason === undefined || socket.destroyed) {
    socket.destroy();
    return;
  }
  const rec = new AccessRecord('client_error', socket.remoteAddress, socket.remotePort);
  rec.reason = reason;
  rec.status = statusOf(reason);
  rec.decision = 'deny';
  rec.rule = errorCode(err);
  rec.write(rt.logger);
  rejectSocket(socket, reason);
}

/**
 * Creates the explicit forward-proxy listener (absolute-form HTTP, CONNECT, WebSocket). The same
 * kind of server, never listening, receives the decrypted connections of intercepted tunnels.
 */
export function createExplicitServer(rt: ProxyRuntime): Server {
  const { limits } = rt.config;
  const server = createServer({
    maxHeaderSize: limits.max_header_bytes,
    headersTimeout: limits.headers_timeout_ms,
    requestTimeout: limits.request_timeout_ms,
    keepAliveTimeout: limits.keep_alive_timeout_ms,
    connectionsCheckingInterval: Math.max(250, Math.min(30_000, Math.floor(limits.headers_timeout_ms / 4))),
    noDelay: true,
    insecureHTTPParser: false,
    requireHostHeader: false,
  });
  server.on('request', (req, res) => onRequest(rt, req, res, false));
  server.on('checkContinue', (req, res) => onRequest(rt, req, res, true));
  server.on('connect', (req, socket, head) => void onConnect(rt, req, socket as Socket, head));
  server.on('upgrade', (req, socket, head) => void onUpgrade(rt, req, socket as Socket, head));
  server.on('clientError', (err, socket) => onClientError(rt, err, socket as Socket));
  let connections = 0;
  server.on('connection', (socket: Socket) => {
    connections++;
    // Decrypted connections inside intercepted tunnels are not clients of their own.
    const counted = (socket as Socket & { [kIntercepted]?: InterceptedTunnel })[kIntercepted] === undefined;
    if (counted) rt.connections++;
    socket.once('close', () => {
      connections--;
      if (counted) rt.connections--;
    });
    if (connections > limits.max_connections) rejectSocket(socket, 'too_many_connections');
  });
  return server;
}
