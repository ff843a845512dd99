import { z } from 'zod';
import type { PolicyQuery } from './decide.js';

/** A request described by hand (tests, explain): what the proxy would know about it. */
export const requestSpecSchema = z.strictObject({
  url: z.string().regex(/^(https?|wss?):\/\/[^\s]+$/, { message: 'expected an absolute http(s) or ws(s) URL' }),
  kind: z.enum(['http', 'connect', 'websocket']).optional()
    .describe('http (default for http:// and inspected https://), connect (a tunnel: no method or path), websocket.'),
  method: z.string().regex(/^[A-Z]{1,20}$/).default('GET'),
  user: z.string().optional(),
  email: z.string().optional(),
  groups: z.array(z.string()).default([]),
  service: z.string().optional(),
  device: z.union([z.string(), z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]))]).optional()
    .describe('A device id from devices.yaml, or the attributes themselves. Absent: no device ("unknown").'),
  source: z.string().optional().describe('Client IP address.'),
  time: z.string().optional().describe('ISO date-time; default now.'),
});

export type RequestSpec = z.output<typeof requestSpecSchema>;

/** Device attributes by device id (policies/devices.yaml). */
export type DeviceInventory = Readonly<Record<string, Readonly<Record<string, string | number | boolean>>>>;

/** Turns a hand-written request into the query the proxy would make; throws on an unknown device id. */
export function queryFromSpec(spec: RequestSpec, inventory: DeviceInventory = {}): PolicyQuery {
  const url = new URL(spec.url);
  const scheme = url.protocol.slice(0, -1);
  const kind = spec.kind ?? 'http';
  let device: PolicyQuery['device'];
  if (typeof spec.device === 'string') {
    device = inventory[spec.device];
    if (!device) throw new Error(`unknown device "${spec.device}" (not in devices.yaml)`);
  } else device = spec.device;
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return {
    kind,
    host,
    port: url.port ? Number(url.port) : scheme === 'https' || scheme === 'wss' ? 443 : 80,
    scheme,
    method: kind === 'connect' ? undefined : spec.method,
    path: kind === 'connect' ? undefined : `${url.pathname}${url.search}`,
    source: spec.source,
    identity: { user: spec.user, email: spec.email, groups: spec.groups, service: spec.service },
    device,
    at: spec.time ? new Date(spec.time) : undefined,
  };
}
