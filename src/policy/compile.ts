import type { CompiledProfile } from '../inspection/dlp/profile.js';
import { BlockList } from 'node:net';
import { parseCidr } from '../config/fields.js';
import type { FileProblem } from '../config/validate.js';
import { canonicalHost, HostIndex } from './hosts.js';
import { PortSet } from './ports.js';
import type { PolicyFile, RuleSpec, TrustLevel } from './schema.js';
import { TimeWindow, validTimeZone } from './time-window.js';

/** What a matching rule adds besides allow/deny. */
export interface Modifiers {
  inspect?: boolean;
  dlp?: readonly string[];
  log_query?: boolean;
  egress?: string;
  rate_limit?: string;
}

/** A rule ready to evaluate: string lists turned into sets, CIDRs into a BlockList. */
export interface CompiledRule {
  readonly index: number;
  readonly id: string;
  readonly file: string;
  readonly action: 'allow' | 'deny';
  readonly mode: 'enforce' | 'report';
  readonly message: string | undefined;
  readonly modifiers: Modifiers;
  readonly apps: ReadonlySet<number> | undefined;
  readonly users: ReadonlySet<string> | undefined;
  readonly groups: ReadonlySet<string> | undefined;
  readonly services: ReadonlySet<string> | undefined;
  readonly anonymous: boolean | undefined;
  readonly devices: ReadonlySet<string> | undefined;
  readonly methods: ReadonlySet<string> | undefined;
  readonly paths: readonly string[] | undefined;
  readonly sources: BlockList | undefined;
  readonly sourcesText: string | undefined;
  readonly time: TimeWindow | undefined;
}

/** An app's non-host forms, checked only for the few apps that have them. */
export interface AppExtra {
  readonly cidrs: BlockList | undefined;
  readonly urls: readonly string[];
  readonly ports: PortSet | undefined;
}

/** A category list: the squidGuard/UT1 `domains` and `urls` files (either may be empty). */
export interface CategoryList {
  readonly domains: readonly string[];
  readonly urls: readonly string[];
}

/** URL-list entries by host (lower case, no leading www.): [path prefix, app id]. */
export type UrlIndex = ReadonlyMap<string, ReadonlyArray<readonly [string, number]>>;

/** The host key of a URL-list entry or of a request: lower case, without a leading "www.". */
export const urlHostKey = (host: string): string => (host.startsWith('www.') ? host.slice(4) : host);

/** The whole policy set, compiled for fast decisions. Immutable: reloads build a new one. */
export interface CompiledPolicy {
  /** Content hash of every file; goes into each access-log line. */
  readonly version: string;
  readonly files: readonly string[];
  readonly defaultAction: 'allow' | 'deny';
  readonly allowRanges: readonly string[];
  readonly connectPorts: PortSet;
  readonly httpPorts: PortSet;
  readonly apps: readonly string[];
  readonly appExtra: readonly AppExtra[];
  readonly hosts: HostIndex;
  readonly rules: readonly CompiledRule[];
  /** True when some app is defined by CIDRs: the proxy then resolves names before asking policy. */
  readonly hasCidrApps: boolean;
  /** Apps with CIDR or URL-prefix forms: the only ones a decision scans (host forms are indexed). */
  readonly appsWithExtra: readonly number[];
  /** Rule indices by app id. */
  readonly rulesByApp: ReadonlyArray<readonly number[]>;
  /** Rules that name no app, by principal ("u:alice", "g:eng", "s:ci"), and those that name no principal either. */
  readonly anyAppByPrincipal: ReadonlyMap<string, readonly number[]>;
  readonly anyAppUnscoped: readonly number[];
  readonly groupsOf: ReadonlyMap<string, readonly string[]>;
  readonly deviceLevels: ReadonlyArray<readonly [string, TrustLevel]>;
  /** Category URL lists (urls files), matched on host and path prefix when the path is known. */
  readonly urlIndex: UrlIndex;
  /** DLP profiles (policies/dlp/*.yaml) by name; rules name them in `dlp:`. */
  readonly dlp: ReadonlyMap<string, CompiledProfile>;
}

/** One parsed policy file with its text (for error positions). */
export interface LoadedFile {
  name: string;
  text: string;
  data: PolicyFile;
}

/** Finds where `needle` first appears in a file, for errors found after parsing. */
export function locate(text: string, needle: string): { line: number; col: number } {
  const i = text.indexOf(needle);
  if (i < 0) return { line: 1, col: 1 };
  const before = text.slice(0, i);
  const line = before.split('\n').length;
  return { line, col: i - before.lastIndexOf('\n') };
}

function blockList(cidrs: readonly string[]): BlockList | undefined {
  if (cidrs.length === 0) return undefined;
  const b = new BlockList();
  for (const c of cidrs) {
    const p = parseCidr(c)!;
    b.addSubnet(p.address, p.prefix, p.family);
  }
  return b;
}

const setOf = <T>(list: readonly T[] | undefined): ReadonlySet<T> | undefined => (list ? new Set(list) : undefined);

/**
 * Compiles validated files into one policy, checking what the schema cannot: unique rule ids,
 * references to apps, device levels and categories that exist, and known time zones.
 * `readCategory` returns a category's domains, or undefined when there is no such list.
 */
export function compileFiles(
  files: readonly LoadedFile[],
  version: string,
  readCategory: (name: string) => CategoryList | undefined,
): { policy: CompiledPolicy } | { problems: FileProblem[] } {
  const problems: FileProblem[] = [];
  const at = (f: LoadedFile, field: string, needle: string, message: string): void => {
    problems.push({ file: f.name, ...locate(f.text, needle), field, message });
  };
  const defaults = files.filter((f) => f.data.default !== undefined);
  for (const f of defaults.slice(1)) at(f, 'default', 'default:', `"default" is already set in ${defaults[0]!.name}; set it in one file only`);

  const appIds = new Map<string, number>();
  const appExtra: AppExtra[] = [];
  const hosts = new HostIndex();
  const categoryCache = new Map<string, CategoryList | undefined>();
  const urlIndex = new Map<string, Array<readonly [string, number]>>();
  for (const f of files) {
    for (const [name, app] of Object.entries(f.data.apps)) {
      if (appIds.has(name)) {
        at(f, `apps.${name}`, `${name}:`, 'app already defined in another file');
        continue;
      }
      const id = appIds.size;
      appIds.set(name, id);
      for (const h of app.hosts) hosts.addPattern(h, id);
      for (const c of app.categories) {
        if (!categoryCache.has(c)) categoryCache.set(c, readCategory(c));
        const list = categoryCache.get(c);
        if (!list) {
          at(f, `apps.${name}.categories`, c, `unknown category "${c}" (no ${c}/domains or ${c}/urls list in the categories directory)`);
          continue;
        }
        for (const d of list.domains) hosts.addDomain(d, id);
        for (const u of list.urls) {
          const slash = u.indexOf('/');
          const host = urlHostKey((slash < 0 ? u : u.slice(0, slash)).toLowerCase());
          const path = slash < 0 ? '/' : u.slice(slash);
          const l = urlIndex.get(host);
          if (l) l.push([path, id]);
          else urlIndex.set(host, [[path, id]]);
        }
      }
      appExtra.push({
        cidrs: blockList(app.cidrs),
        urls: app.urls.map((u) => {
          const url = new URL(u);
          return `${url.protocol}//${canonicalHost(url.hostname)}${url.port ? `:${url.port}` : ''}${url.pathname}`;
        }),
        ports: app.ports ? new PortSet(app.ports) : undefined,
      });
    }
  }
  const levels = files.flatMap((f) => Object.entries(f.data.devices));
  const levelNames = new Set(levels.map(([n]) => n));
  const groupsOf = new Map<string, string[]>();
  for (const f of files) {
    for (const [group, members] of Object.entries(f.data.groups)) {
      for (const m of members) groupsOf.set(m, [...(groupsOf.get(m) ?? []), group]);
    }
  }

  const rules: CompiledRule[] = [];
  const ids = new Set<string>();
  for (const f of files) {
    for (const r of f.data.rules) {
      if (ids.has(r.id)) at(f, 'rules', `id: ${r.id}`, `rule id "${r.id}" is used twice`);
      ids.add(r.id);
      rules.push(compileRule(r, rules.length, f, appIds, levelNames, (field, needle, msg) => at(f, field, needle, msg)));
    }
  }
  if (problems.length > 0) return { problems };
  const rulesByApp: number[][] = Array.from({ length: appIds.size }, () => []);
  const anyAppByPrincipal = new Map<string, number[]>();
  const anyAppUnscoped: number[] = [];
  const under = (key: string, i: number): void => {
    const l = anyAppByPrincipal.get(key);
    if (!l) anyAppByPrincipal.set(key, [i]);
    else if (l[l.length - 1] !== i) l.push(i);
  };
  for (const r of rules) {
    if (r.apps) {
      for (const a of r.apps) rulesByApp[a]!.push(r.index);
    } else if (r.users || r.groups || r.services) {
      // Only a request from one of these principals can match: index the rule under each.
      for (const u of r.users ?? []) under(`u:${u}`, r.index);
      for (const g of r.groups ?? []) under(`g:${g}`, r.index);
      for (const sv of r.services ?? []) under(`s:${sv}`, r.index);
    } else {
      anyAppUnscoped.push(r.index);
    }
  }
  const connect = files.flatMap((f) => f.data.network.connect_ports ?? []);
  const http = files.flatMap((f) => f.data.network.http_ports ?? []);
  return {
    policy: {
      dlp: new Map(),
      urlIndex,
      version,
      files: files.map((f) => f.name),
      defaultAction: defaults[0]?.data.default ?? 'deny',
      allowRanges: files.flatMap((f) => f.data.network.allow_ranges),
      connectPorts: new PortSet(files.some((f) => f.data.network.connect_ports) ? connect : [443]),
      httpPorts: new PortSet(files.some((f) => f.data.network.http_ports) ? http : [80, 443]),
      apps: [...appIds.keys()],
      appExtra,
      hasCidrApps: appExtra.some((x) => x.cidrs !== undefined),
      appsWithExtra: appExtra.flatMap((x, i) => (x.cidrs || x.urls.length > 0 ? [i] : [])),
      hosts,
      rules,
      rulesByApp,
      anyAppByPrincipal,
      anyAppUnscoped,
      groupsOf,
      deviceLevels: levels,
    },
  };
}

function compileRule(
  r: RuleSpec, index: number, f: LoadedFile, appIds: ReadonlyMap<string, number>, levels: ReadonlySet<string>,
  problem: (field: string, needle: string, message: string) => void,
): CompiledRule {
  const w = r.when;
  const apps = w.apps?.map((a) => {
    const id = appIds.get(a);
    if (id === undefined) problem(`rules.${r.id}.when.apps`, a, `unknown app "${a}"`);
    return id ?? -1;
  });
  for (const d of w.devices ?? []) {
    if (d !== 'unknown' && !levels.has(d)) problem(`rules.${r.id}.when.devices`, d, `unknown device level "${d}" (define it under devices, or use "unknown")`);
  }
  if (w.time && !validTimeZone(w.time.tz)) problem(`rules.${r.id}.when.time.tz`, w.time.tz, `unknown time zone "${w.time.tz}"`);
  const modifiers: Modifiers = {};
  if (r.inspect !== undefined) modifiers.inspect = r.inspect;
  if (r.dlp) modifiers.dlp = r.dlp;
  if (r.log_query !== undefined) modifiers.log_query = r.log_query;
  if (r.egress) modifiers.egress = r.egress;
  if (r.rate_limit) modifiers.rate_limit = r.rate_limit;
  return {
    index, id: r.id, file: f.name, action: r.action, mode: r.mode, message: r.message, modifiers,
    apps: apps ? new Set(apps) : undefined,
    users: setOf(w.users?.map((u) => u.toLowerCase())),
    groups: setOf(w.groups),
    services: setOf(w.services),
    anonymous: w.anonymous,
    devices: setOf(w.devices),
    methods: setOf(w.methods),
    paths: w.paths?.map((p) => (p.endsWith('*') ? p.slice(0, -1) : p)),
    sources: w.sources ? blockList(w.sources) : undefined,
    sourcesText: w.sources?.join(', '),
    time: w.time && validTimeZone(w.time.tz) ? new TimeWindow(w.time) : undefined,
  };
}
