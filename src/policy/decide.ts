import { isIP } from 'node:net';
import { unmapV4 } from '../config/fields.js';
import type { ReasonId } from '../errors/reasons.js';
import { checkPredicate } from './device-trust.js';
import { urlHostKey, type CompiledPolicy, type CompiledRule, type Modifiers } from './compile.js';

/** Who is asking, as identity established it (empty for anonymous). */
export interface QueryIdentity {
  user?: string | undefined;
  email?: string | undefined;
  groups?: readonly string[] | undefined;
  service?: string | undefined;
}

/** What the policy is asked about: one request or tunnel, before any byte goes upstream. */
export interface PolicyQuery {
  kind: 'http' | 'connect' | 'websocket';
  host: string;
  port: number;
  scheme?: string | undefined;
  method?: string | undefined;
  /** Origin-form path (no query needed); absent for tunnels that are not inspected. */
  path?: string | undefined;
  /** Client address. */
  source?: string | undefined;
  /** The address the host resolved to, when known (for apps defined by CIDRs). */
  resolved?: string | undefined;
  identity?: QueryIdentity | undefined;
  /** Device attributes from the inventory; undefined = no device certificate ("unknown"). */
  device?: Readonly<Record<string, string | number | boolean>> | undefined;
  /** When the request happened (default: now). */
  at?: Date | undefined;
}

/** A rule in report mode that matched: what it would have done. */
export interface ReportHit {
  rule: string;
  action: 'allow' | 'deny';
}

/** The answer: a value, never an exception. `rule` names what decided, for the log and block page. */
export interface Decision {
  action: 'allow' | 'deny';
  reason: ReasonId;
  rule: string;
  version: string;
  message?: string | undefined;
  modifiers: Modifiers;
  report: readonly ReportHit[];
}

const NONE: Modifiers = Object.freeze({});
const NO_REPORT: readonly ReportHit[] = Object.freeze([]);
const NO_RULES: readonly number[] = Object.freeze([]);

/** The device trust levels whose predicates all hold for `device`. */
export function deviceLevels(policy: CompiledPolicy, device: PolicyQuery['device'], at: Date = new Date()): string[] {
  if (!device) return ['unknown'];
  const out: string[] = [];
  for (const [name, level] of policy.deviceLevels) {
    let ok = true;
    for (const k in level) {
      if (checkPredicate(k, device[k], level[k]!, at) !== undefined) {
        ok = false;
        break;
      }
    }
    if (ok) out.push(name);
  }
  return out;
}

/** Context derived once per query and shared by every rule check. */
interface Ctx {
  q: PolicyQuery;
  apps: number[];
  groups: Set<string>;
  levels: string[] | undefined;
  at: Date;
}

function context(policy: CompiledPolicy, q: PolicyQuery): Ctx {
  const apps = policy.hosts.lookup(q.host);
  const addr = q.resolved ? unmapV4(q.resolved) : isIP(q.host) !== 0 ? unmapV4(q.host) : undefined;
  const family = addr ? (isIP(addr) === 4 ? 'ipv4' : 'ipv6') : undefined;
  for (const a of policy.appsWithExtra) {
    const x = policy.appExtra[a]!;
    if (x.cidrs && addr && x.cidrs.check(addr, family) && !apps.includes(a)) apps.push(a);
    if (x.urls.length > 0 && q.path !== undefined && q.scheme) {
      const url = `${q.scheme}://${q.host}${q.port === (q.scheme === 'https' || q.scheme === 'wss' ? 443 : 80) ? '' : `:${q.port}`}${q.path}`;
      if (x.urls.some((u) => url.startsWith(u)) && !apps.includes(a)) apps.push(a);
    }
  }
  // Category URL lists: only when the path is known (plain HTTP, or inside interception).
  if (policy.urlIndex.size > 0 && q.path !== undefined) {
    const entries = policy.urlIndex.get(urlHostKey(q.host));
    if (entries) for (const [prefix, a] of entries) if (q.path.startsWith(prefix) && !apps.includes(a)) apps.push(a);
  }
  // An app restricted to some ports is not matched on others.
  let matched = apps;
  for (const a of apps) {
    if (policy.appExtra[a]!.ports && !policy.appExtra[a]!.ports!.has(q.port)) {
      matched = apps.filter((x) => policy.appExtra[x]!.ports?.has(q.port) ?? true);
      break;
    }
  }
  const id = q.identity;
  const groups = new Set<string>(id?.groups ?? []);
  for (const who of [id?.user, id?.email, id?.service]) {
    if (who) for (const g of policy.groupsOf.get(who) ?? []) groups.add(g);
  }
  return { q, apps: matched, groups, levels: undefined, at: q.at ?? new Date() };
}

/** Why `rule` does not match, or undefined when it does. Cheap checks first. */
function mismatch(policy: CompiledPolicy, r: CompiledRule, c: Ctx): string | undefined {
  const q = c.q;
  const id = q.identity;
  if (r.apps && !c.apps.some((a) => r.apps!.has(a))) return `destination ${q.host} is not in apps ${[...r.apps].map((a) => policy.apps[a]).join(', ')}`;
  if (r.methods && !(q.method && r.methods.has(q.method))) return `method ${q.method ?? '(tunnel)'} is not ${[...r.methods].join('/')}`;
  if (r.paths && !(q.path !== undefined && r.paths.some((p) => q.path!.startsWith(p)))) {
    return q.path === undefined ? 'path unknown (tunnel not inspected)' : `path ${q.path} does not start with ${r.paths.join(' or ')}`;
  }
  const anonymous = !id?.user && !id?.email && !id?.service;
  if (r.anonymous !== undefined && r.anonymous !== anonymous) return r.anonymous ? 'request is identified' : 'request is anonymous';
  const who = r.users || r.groups || r.services;
  if (who) {
    const byUser = r.users && ((id?.user && r.users.has(id.user.toLowerCase())) || (id?.email && r.users.has(id.email.toLowerCase())));
    let byGroup = false;
    if (r.groups) for (const g of r.groups) if (c.groups.has(g)) { byGroup = true; break; }
    const byService = r.services && id?.service && r.services.has(id.service);
    if (!byUser && !byGroup && !byService) return `identity ${id?.user ?? id?.email ?? id?.service ?? 'anonymous'} is not among the rule's users/groups/services`;
  }
  if (r.devices) {
    c.levels ??= deviceLevels(policy, q.device, c.at);
    if (!c.levels.some((l) => r.devices!.has(l))) return `device trust ${c.levels.join(',') || '(none)'} is not ${[...r.devices].join('/')}`;
  }
  if (r.sources) {
    const src = q.source ? unmapV4(q.source) : undefined;
    const fam = src ? isIP(src) : 0;
    if (!src || fam === 0 || !r.sources.check(src, fam === 4 ? 'ipv4' : 'ipv6')) return `source ${q.source ?? '(unknown)'} is not in ${r.sourcesText}`;
  }
  if (r.time) return r.time.check(c.at);
  return undefined;
}

/** The rules that could match: those of the matched apps, and app-less rules for these principals or for anyone. */
function candidates(policy: CompiledPolicy, c: Ctx): readonly number[] {
  const lists: Array<readonly number[]> = [];
  if (policy.anyAppUnscoped.length > 0) lists.push(policy.anyAppUnscoped);
  for (const a of c.apps) lists.push(policy.rulesByApp[a]!);
  if (policy.anyAppByPrincipal.size > 0) {
    const id = c.q.identity;
    const add = (key: string): void => {
      const l = policy.anyAppByPrincipal.get(key);
      if (l) lists.push(l);
    };
    if (id?.user) add(`u:${id.user.toLowerCase()}`);
    if (id?.email) add(`u:${id.email.toLowerCase()}`);
    if (id?.service) add(`s:${id.service}`);
    for (const g of c.groups) add(`g:${g}`);
  }
  if (lists.length === 0) return NO_RULES;
  if (lists.length === 1) return lists[0]!;
  const merged: number[] = [];
  for (const l of lists) for (const i of l) merged.push(i);
  return merged.sort((x, y) => x - y);
}

/**
 * Decides one request. Order: (1) the destination port against the port list for its kind;
 * (2) the rules in order, considering only those that could match the destination's apps
 * (report-mode matches are noted and evaluation goes on); (3) the default action.
 * Address checks happen later, on the resolved address.
 */
export function decide(policy: CompiledPolicy, q: PolicyQuery): Decision {
  const ports = q.kind === 'connect' ? policy.connectPorts : policy.httpPorts;
  if (!ports.has(q.port)) {
    return {
      action: 'deny', reason: 'port_not_allowed', rule: q.kind === 'connect' ? 'network.connect_ports' : 'network.http_ports',
      version: policy.version, modifiers: NONE, report: NO_REPORT,
    };
  }
  let report: ReportHit[] | undefined;
  if (policy.rules.length > 0) {
    const c = context(policy, q);
    let last = -1;
    for (const i of candidates(policy, c)) {
      if (i === last) continue; // a rule listed under two matched apps
      last = i;
      const r = policy.rules[i]!;
      if (mismatch(policy, r, c) !== undefined) continue;
      if (r.mode === 'report') {
        (report ??= []).push({ rule: r.id, action: r.action });
        continue;
      }
      return {
        action: r.action, reason: r.action === 'allow' ? 'allowed' : 'policy_denied', rule: r.id, version: policy.version,
        message: r.message, modifiers: r.modifiers, report: report ?? NO_REPORT,
      };
    }
  }
  return {
    action: policy.defaultAction, reason: policy.defaultAction === 'allow' ? 'allowed' : 'policy_denied', rule: 'default',
    version: policy.version, modifiers: NONE, report: report ?? NO_REPORT,
  };
}

/** One line of an explanation: a rule, and why it matched or not. */
export interface ExplainLine {
  rule: string;
  file: string;
  action: 'allow' | 'deny';
  mode: 'enforce' | 'report';
  matched: boolean;
  why: string;
}

/** Walks every rule in order (not just the indexed candidates) and says why each did or did not match. */
export function explain(policy: CompiledPolicy, q: PolicyQuery): { lines: ExplainLine[]; decision: Decision; apps: string[]; deviceLevels: string[] } {
  const c = context(policy, q);
  const lines = policy.rules.map((r) => {
    const why = mismatch(policy, r, c);
    return { rule: r.id, file: r.file, action: r.action, mode: r.mode, matched: why === undefined, why: why ?? 'all conditions hold' };
  });
  return { lines, decision: decide(policy, q), apps: c.apps.map((a) => policy.apps[a]!), deviceLevels: deviceLevels(policy, q.device, c.at) };
}
