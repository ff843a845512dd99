import { z } from 'zod';
import { cidr } from '../config/fields.js';

/** A destination port: a number, or an inclusive range written "low-high". */
export const portSpec = z.union([
  z.number().int().min(1).max(65535),
  z.string().regex(/^\d{1,5}-\d{1,5}$/, { message: 'expected a port number or a range such as "8000-8099"' })
    .refine((s) => {
      const [lo, hi] = s.split('-').map(Number) as [number, number];
      return lo >= 1 && hi <= 65535 && lo <= hi;
    }, { message: 'port range must satisfy 1 <= low <= high <= 65535' }),
]);

const name = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/, { message: 'names use a-z 0-9 _ . - (lower case, at most 64)' });
const hostPattern = z.string().regex(/^(\*\.)?[A-Za-z0-9\u00a0-\uffff_.-]+\.?$/, {
  message: 'expected a host name, or *.domain for its subdomains',
});
const urlPrefix = z.string().regex(/^(https?|wss?):\/\/[^\s/?#]+\/[^\s]*$/, {
  message: 'expected a URL prefix with scheme, host and path, e.g. https://api.github.com/repos/acme/',
});
const method = z.string().regex(/^[A-Z]{1,20}$/, { message: 'expected an upper-case HTTP method' });
const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, { message: 'expected HH:MM (24 h)' });
const day = z.enum(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']);

/** A named destination set. A request is in the app when any one of the listed forms matches. */
export const appSchema = z.strictObject({
  description: z.string().optional(),
  hosts: z.array(hostPattern).default([]).describe('Exact hosts, or *.domain (subdomains only, not the domain itself).'),
  urls: z.array(urlPrefix).default([]).describe('URL prefixes (need TLS interception for https).'),
  cidrs: z.array(cidr).default([]).describe('Destination networks, matched on the address the host resolves to.'),
  ports: z.array(portSpec).optional().describe('Restrict the app to these ports (default: any).'),
  categories: z.array(name).default([]).describe('Category lists (squidGuard/UT1 format: <categories_dir>/<name>/domains and /urls).'),
});

const attrValue = z.union([z.string(), z.number(), z.boolean()]);

/**
 * A device trust level: every listed attribute must hold. A plain value must be equal; an object
 * compares: `in` (one of), `gte` / `lte` (versions compared segment by segment, or numbers),
 * `within` (a date no older than 30m / 12h / 7d, e.g. last_seen).
 */
export const trustSchema = z.record(z.string().regex(/^[a-z_][a-z0-9_]*$/), z.union([
  attrValue,
  z.strictObject({
    in: z.array(attrValue).optional(),
    gte: z.union([z.string(), z.number()]).optional(),
    lte: z.union([z.string(), z.number()]).optional(),
    within: z.string().regex(/^\d+[mhd]$/, { message: 'expected a duration such as 30m, 12h or 7d' }).optional(),
  }),
]));

/** Conditions of a rule; all listed ones must hold, and within one list any entry may match. */
export const whenSchema = z.strictObject({
  users: z.array(z.string().min(1)).optional().describe('User names or emails, as the identity provider gives them.'),
  groups: z.array(z.string().min(1)).optional().describe('Groups from IdP claims or from the groups section.'),
  services: z.array(z.string().min(1)).optional().describe('Workload client ids.'),
  anonymous: z.boolean().optional().describe('true: only requests with no identity; false: only identified ones.'),
  devices: z.array(z.string().min(1)).optional().describe('Device trust levels (devices section), or "unknown".'),
  apps: z.array(name).optional(),
  methods: z.array(method).optional(),
  paths: z.array(z.string().startsWith('/')).optional().describe('Path prefixes; a trailing * is allowed and ignored.'),
  sources: z.array(cidr).optional().describe('Client address ranges.'),
  time: z.strictObject({
    days: z.array(day).optional(),
    from: hhmm.optional(),
    to: hhmm.optional().describe('May be earlier than from: the window then crosses midnight.'),
    tz: z.string().default('UTC').describe('IANA time zone, e.g. Europe/Paris.'),
  }).optional(),
});

/** The reserved DLP profile name that sends a body to the configured ICAP service. */
export const ICAP_PROFILE = 'icap';

/** One rule. Rules are evaluated in order (files by name, then position); the first enforcing match decides. */
export const ruleSchema = z.strictObject({
  id: name.describe('Stable id, shown in logs and on the block page.'),
  description: z.string().optional(),
  action: z.enum(['allow', 'deny']),
  message: z.string().max(500).optional().describe('Shown on the block page for a deny.'),
  mode: z.enum(['enforce', 'report']).default('enforce')
    .describe('report: log what the rule would have done and keep evaluating (safe roll-out).'),
  when: whenSchema.default({}),
  inspect: z.boolean().optional().describe('TLS interception for the match (false = bypass).'),
  dlp: z.array(name).optional().describe('DLP profiles to apply.'),
  log_query: z.boolean().optional()
    .describe('Log the query string of matching requests in clear (it is redacted by default: it often holds tokens).'),
  egress: z.string().min(1).optional().describe('Egress node or region for the session.'),
  rate_limit: z.string().regex(/^\d+\/(s|sec|min|h|hour)$/, { message: 'expected N/s, N/min or N/h' }).optional(),
});

/** One policy file under policies/. Files are merged; see docs/policy.md. */
export const policyFileSchema = z
  .strictObject({
    version: z.literal('v1').describe('Policy language version.'),
    description: z.string().optional(),
    default: z.enum(['allow', 'deny']).optional()
      .describe('Action when no rule decides. At most one file may set it; unset means deny.'),
    categories_dir: z.string().min(1).optional()
      .describe('Directory of category lists in the squidGuard/UT1 format (<name>/domains, <name>/urls), relative to the policy directory. Default: categories.'),
    network: z
      .strictObject({
        allow_ranges: z.array(cidr).default([])
          .describe('Internal networks that may be reached although private/loopback/link-local are denied by default.'),
        connect_ports: z.array(portSpec).optional()
          .describe('Ports a CONNECT tunnel may open. Default: [443].'),
        http_ports: z.array(portSpec).optional()
          .describe('Ports plain HTTP (absolute-form and WebSocket) requests may reach. Default: [80, 443].'),
      })
      .prefault({}),
    apps: z.record(name, appSchema).default({}),
    groups: z.record(z.string().min(1), z.array(z.string().min(1))).default({})
      .describe('Static group membership (user -> groups is also taken from identity claims).'),
    devices: z.record(name, trustSchema).default({}).describe('Device trust levels by attribute predicates.'),
    rules: z.array(ruleSchema).default([]),
  })
  .describe('egress-proxy policy file');

export type PolicyFile = z.output<typeof policyFileSchema>;
export type RuleSpec = z.output<typeof ruleSchema>;
export type AppSpec = z.output<typeof appSchema>;
export type TrustLevel = z.output<typeof trustSchema>;
