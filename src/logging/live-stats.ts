import type { AccessRecord } from './access-record.js';

/** Seconds of per-second request counts kept (the dashboard's rps chart). */
export const RPS_SECONDS = 600;
/** Items per top list in a snapshot. */
const TOP = 20;
/** Recent denies and incidents kept (and in a merged snapshot). */
const RECENT = 50;
/** Longest name kept for a user or host: the same clip as the access line. */
const MAX_NAME = 256;

/** A ranked list: the first items by count, and the sum of everything else (capped-out keys included). */
export interface TopList {
  items: Array<[name: string, count: number]>;
  other: number;
}

/** One recent refusal, as the dashboard lists it. */
export interface DenyEntry {
  t: number;
  user: string;
  host: string | undefined;
  reason: string;
  rule: string | undefined;
  status: number;
}

/** One recent DLP (or ICAP) incident; `dlp` is the access line's field, already masked. */
export interface IncidentEntry {
  t: number;
  user: string;
  host: string | undefined;
  incident: string;
  reason: string;
  dlp: string | undefined;
}

/** One node's (or worker's) egress health. */
export interface NodeHealth {
  node: string;
  pid: number;
  /** In-flight requests and tunnels when the snapshot was taken. */
  active: number;
  /** Exchanges finished in the window. */
  requests: number;
  /** upstream_* and dns_* failures in the window, by reason. */
  upstream_errors: Record<string, number>;
}

/** What the dashboard draws, as plain JSON; snapshots of several workers combine with `mergeSnapshots`. */
export interface LiveSnapshot {
  /** Epoch ms when taken. */
  at: number;
  minutes: number;
  /** Per-second counts for the last RPS_SECONDS seconds; index RPS_SECONDS-1 is second `rps.end` (epoch s). */
  rps: { end: number; allow: number[]; deny: number[]; error: number[] };
  /** Exchanges finished in the window, by decision. */
  totals: { allow: number; deny: number; error: number };
  top_users: TopList;
  top_hosts: TopList;
  /** upstream_* and dns_* failures per minute, oldest first, the last being the current minute. */
  upstream_per_minute: number[];
  /** The last refusals and incidents (whatever the window), newest first. */
  recent_denies: DenyEntry[];
  recent_incidents: IncidentEntry[];
  nodes: NodeHealth[];
}

/** Options of the live view. */
export interface LiveStatsOptions {
  node: string;
  /** In-flight count at snapshot time. */
  active?: () => number;
  /** Minutes of top lists and health kept (snapshots ask for up to this many). */
  windowMinutes?: number;
  /** Distinct users (and hosts) counted per minute; the rest go to "other". */
  maxKeys?: number;
  /** Recent denies and incidents kept. */
  recent?: number;
}

interface Minute {
  minute: number;
  users: Map<string, number>;
  hosts: Map<string, number>;
  usersOther: number;
  hostsOther: number;
  requests: number;
  allow: number;
  deny: number;
  error: number;
  upstream: Map<string, number>;
  upstreamTotal: number;
}

const who = (r: AccessRecord): string => clip(r.user ?? r.service ?? 'anonymous');
const clip = (s: string): string => (s.length > MAX_NAME ? s.slice(0, MAX_NAME) : s);
const bump = (m: Map<string, number>, k: string): void => void m.set(k, (m.get(k) ?? 0) + 1);
/** Counts `k` in `m` unless it is new and `m` already holds `max` keys; false then. */
function count(m: Map<string, number>, k: string, max: number): boolean {
  const n = m.get(k);
  if (n !== undefined) m.set(k, n + 1);
  else if (m.size < max) m.set(k, 1);
  else return false;
  return true;
}

/**
 * The in-process live view behind the dashboard: fed every finished exchange, it keeps only
 * fixed-size rings and capped per-minute maps, so memory is bounded whatever the traffic, and
 * `add` costs a few array writes and two map updates.
 */
export class LiveStats {
  private readonly node: string;
  private readonly active: () => number;
  private readonly window: number;
  private readonly maxKeys: number;
  private readonly recentMax: number;
  private readonly stamp = new Float64Array(RPS_SECONDS).fill(-1);
  private readonly allow = new Uint32Array(RPS_SECONDS);
  private readonly deny = new Uint32Array(RPS_SECONDS);
  private readonly error = new Uint32Array(RPS_SECONDS);
  private readonly minutes: Minute[];
  private readonly denies: DenyEntry[] = [];
  private readonly incidents: IncidentEntry[] = [];
  private denyAt = 0;
  private incidentAt = 0;

  constructor(o: LiveStatsOptions) {
    this.node = o.node;
    this.active = o.active ?? (() => 0);
    this.window = Math.max(1, Math.min(60, o.windowMinutes ?? 10));
    this.maxKeys = Math.max(1, o.maxKeys ?? 2000);
    this.recentMax = Math.max(1, o.recent ?? RECENT);
    this.minutes = Array.from({ length: this.window }, () => ({
      minute: -1, users: new Map(), hosts: new Map(), usersOther: 0, hostsOther: 0, requests: 0, allow: 0, deny: 0, error: 0, upstream: new Map(), upstreamTotal: 0,
    }));
  }

  /** Counts one finished exchange (the access-log observer). Never throws. */
  add(r: AccessRecord, now = Date.now()): void {
    const sec = Math.floor(now / 1000);
    const i = sec % RPS_SECONDS;
    if (this.stamp[i] !== sec) {
      this.stamp[i] = sec;
      this.allow[i] = 0;
      this.deny[i] = 0;
      this.error[i] = 0;
    }
    const m = this.minute(Math.floor(sec / 60));
    m.requests++;
    if (r.decision === 'allow') {
      this.allow[i]!++;
      m.allow++;
    } else if (r.decision === 'deny') {
      this.deny[i]!++;
      m.deny++;
    } else {
      this.error[i]!++;
      m.error++;
    }
    const user = who(r);
    if (!count(m.users, user, this.maxKeys)) m.usersOther++;
    if (r.host !== undefined && !count(m.hosts, clip(r.host), this.maxKeys)) m.hostsOther++;
    const reason = r.reason;
    if (reason.startsWith('upstream_') || reason.startsWith('dns_')) {
      bump(m.upstream, reason);
      m.upstreamTotal++;
    }
    if (r.decision === 'deny') {
      this.denyAt = push(this.denies, this.denyAt, this.recentMax,
        { t: now, user, host: r.host === undefined ? undefined : clip(r.host), reason, rule: r.rule, status: r.status });
    }
    if (r.incident !== undefined) {
      this.incidentAt = push(this.incidents, this.incidentAt, this.recentMax,
        { t: now, user, host: r.host === undefined ? undefined : clip(r.host), incident: r.incident, reason, dlp: r.dlp });
    }
  }

  /** The bucket of minute `min`, recycled when it last held an older minute. */
  private minute(min: number): Minute {
    const m = this.minutes[min % this.window]!;
    if (m.minute !== min) {
      m.minute = min;
      m.users.clear();
      m.hosts.clear();
      m.upstream.clear();
      m.usersOther = 0;
      m.hostsOther = 0;
      m.requests = 0;
      m.allow = 0;
      m.deny = 0;
      m.error = 0;
      m.upstreamTotal = 0;
    }
    return m;
  }

  /** The last `minutes` minutes (the current one included, at most the window kept), as plain JSON. */
  snapshot(minutes = this.window, now = Date.now()): LiveSnapshot {
    const n = Math.max(1, Math.min(this.window, Math.floor(minutes)));
    const end = Math.floor(now / 1000);
    const rps = { end, allow: new Array<number>(RPS_SECONDS).fill(0), deny: new Array<number>(RPS_SECONDS).fill(0), error: new Array<number>(RPS_SECONDS).fill(0) };
    for (let k = 0; k < RPS_SECONDS; k++) {
      const sec = end - (RPS_SECONDS - 1) + k;
      const i = sec % RPS_SECONDS;
      if (this.stamp[i] !== sec) continue;
      rps.allow[k] = this.allow[i]!;
      rps.deny[k] = this.deny[i]!;
      rps.error[k] = this.error[i]!;
    }
    const nowMin = Math.floor(end / 60);
    const users = new Map<string, number>();
    const hosts = new Map<string, number>();
    const upstream: Record<string, number> = {};
    const perMinute: number[] = [];
    let usersOther = 0;
    let hostsOther = 0;
    let requests = 0;
    const totals = { allow: 0, deny: 0, error: 0 };
    for (let min = nowMin - n + 1; min <= nowMin; min++) {
      const m = this.minutes[((min % this.window) + this.window) % this.window]!;
      if (m.minute !== min) {
        perMinute.push(0);
        continue;
      }
      for (const [k, v] of m.users) users.set(k, (users.get(k) ?? 0) + v);
      for (const [k, v] of m.hosts) hosts.set(k, (hosts.get(k) ?? 0) + v);
      for (const [k, v] of m.upstream) upstream[k] = (upstream[k] ?? 0) + v;
      usersOther += m.usersOther;
      hostsOther += m.hostsOther;
      requests += m.requests;
      totals.allow += m.allow;
      totals.deny += m.deny;
      totals.error += m.error;
      perMinute.push(m.upstreamTotal);
    }
    const newest = <T extends { t: number }>(list: T[]): T[] => list.map((e) => ({ ...e })).sort((a, b) => b.t - a.t);
    return {
      at: now, minutes: n, rps, totals,
      top_users: topOf(users, usersOther, TOP), top_hosts: topOf(hosts, hostsOther, TOP),
      upstream_per_minute: perMinute,
      recent_denies: newest(this.denies),
      recent_incidents: newest(this.incidents),
      nodes: [{ node: this.node, pid: process.pid, active: this.active(), requests, upstream_errors: upstream }],
    };
  }
}

/** Writes `e` into a ring of `max` entries at `at`; returns the next position. */
function push<T>(ring: T[], at: number, max: number, e: T): number {
  ring[at] = e;
  return (at + 1) % max;
}

/** The first `k` entries by count (ties by name, so the order is stable), the rest summed into `other`. */
function topOf(counts: Map<string, number>, other: number, k: number): TopList {
  const all = [...counts].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let rest = other;
  for (let i = k; i < all.length; i++) rest += all[i]![1];
  return { items: all.slice(0, k), other: rest };
}

/**
 * Combines the snapshots of several workers (or nodes) into one: per-second counts aligned on
 * their end second and summed, top lists re-ranked (an item cut from one worker's list stays in
 * `other`, so totals are exact and ranks approximate), recent lists interleaved by time.
 */
export function mergeSnapshots(list: readonly LiveSnapshot[]): LiveSnapshot {
  if (list.length === 0) throw new Error('mergeSnapshots: no snapshot');
  if (list.length === 1) return list[0]!;
  const end = Math.max(...list.map((s) => s.rps.end));
  const minutes = Math.max(...list.map((s) => s.minutes));
  const zero = (): number[] => new Array<number>(RPS_SECONDS).fill(0);
  const rps = { end, allow: zero(), deny: zero(), error: zero() };
  const totals = { allow: 0, deny: 0, error: 0 };
  const users = new Map<string, number>();
  const hosts = new Map<string, number>();
  let usersOther = 0;
  let hostsOther = 0;
  const perMinute = new Array<number>(minutes).fill(0);
  for (const s of list) {
    const shift = end - s.rps.end;
    for (let k = shift; k < RPS_SECONDS; k++) {
      rps.allow[k - shift] += s.rps.allow[k] ?? 0;
      rps.deny[k - shift] += s.rps.deny[k] ?? 0;
      rps.error[k - shift] += s.rps.error[k] ?? 0;
    }
    totals.allow += s.totals.allow;
    totals.deny += s.totals.deny;
    totals.error += s.totals.error;
    for (const [k, v] of s.top_users.items) users.set(k, (users.get(k) ?? 0) + v);
    for (const [k, v] of s.top_hosts.items) hosts.set(k, (hosts.get(k) ?? 0) + v);
    usersOther += s.top_users.other;
    hostsOther += s.top_hosts.other;
    // Aligned on the current minute (the last entry), as the snapshots were taken moments apart.
    const off = minutes - s.upstream_per_minute.length;
    s.upstream_per_minute.forEach((v, i) => { perMinute[off + i]! += v; });
  }
  const newest = <T extends { t: number }>(lists: T[][]): T[] => lists.flat().sort((a, b) => b.t - a.t).slice(0, RECENT);
  return {
    at: Math.max(...list.map((s) => s.at)), minutes, rps, totals,
    top_users: topOf(users, usersOther, TOP), top_hosts: topOf(hosts, hostsOther, TOP),
    upstream_per_minute: perMinute,
    recent_denies: newest(list.map((s) => s.recent_denies)),
    recent_incidents: newest(list.map((s) => s.recent_incidents)),
    nodes: list.flatMap((s) => s.nodes),
  };
}
