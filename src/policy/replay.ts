import type { CompiledPolicy } from './compile.js';
import { decide, type PolicyQuery } from './decide.js';

/** One logged request whose decision the new policy would change. */
export interface ReplayChange {
  time: string;
  method: string;
  target: string;
  who: string;
  before: string;
  after: string;
}

/** Totals and the changed requests. */
export interface ReplayResult {
  replayed: number;
  skipped: number;
  changes: ReplayChange[];
}

type Line = Record<string, unknown>;
const s = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** The reasons that mean "policy allowed it" even though something later refused or failed. */
const DECIDED_BY_POLICY = new Set(['policy_denied', 'port_not_allowed']);

function queryOf(l: Line): PolicyQuery | undefined {
  const kind = s(l.kind);
  if (kind !== 'http' && kind !== 'connect' && kind !== 'websocket') return undefined;
  const host = s(l.host);
  const port = typeof l.port === 'number' ? l.port : undefined;
  if (!host || !port) return undefined;
  let path: string | undefined;
  const url = s(l.url);
  if (url) {
    try {
      path = new URL(url).pathname;
    } catch {
      path = undefined;
    }
  }
  const groups = Array.isArray(l.groups) ? l.groups.filter((g): g is string => typeof g === 'string') : undefined;
  const time = s(l.time);
  return {
    kind, host, port, scheme: s(l.scheme), method: kind === 'connect' ? undefined : s(l.method), path,
    source: s(l.client_ip),
    identity: { user: s(l.user), email: s(l.email), groups, service: s(l.service) },
    at: time ? new Date(time) : undefined,
  };
}

/**
 * Re-decides past access-log lines with `policy` and lists those whose outcome would change:
 * allow becomes deny or the reverse, or the deciding rule changes. Lines that are not access
 * lines, or that the parser refused, are skipped.
 */
export function replay(lines: Iterable<string>, policy: CompiledPolicy): ReplayResult {
  const result: ReplayResult = { replayed: 0, skipped: 0, changes: [] };
  for (const text of lines) {
    if (!text.trim()) continue;
    let l: Line;
    try {
      l = JSON.parse(text) as Line;
    } catch {
      result.skipped++;
      continue;
    }
    if (l.type !== 'access') continue;
    const q = queryOf(l);
    if (!q) {
      result.skipped++;
      continue;
    }
    result.replayed++;
    const oldAction = DECIDED_BY_POLICY.has(s(l.reason) ?? '') ? 'deny' : 'allow';
    const oldRule = s(l.rule) ?? '?';
    const d = decide(policy, q);
    if (d.action !== oldAction || d.rule !== oldRule) {
      result.changes.push({
        time: s(l.time) ?? '',
        method: q.method ?? 'CONNECT',
        target: s(l.url) ?? `${q.host}:${q.port}`,
        who: q.identity?.user ?? q.identity?.email ?? q.identity?.service ?? (q.source ? `anonymous@${q.source}` : 'anonymous'),
        before: `${oldAction} (${oldRule})`,
        after: `${d.action} (${d.rule})`,
      });
    }
  }
  return result;
}
