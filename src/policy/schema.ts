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

/** One policy file under policies/. Files are merged; see docs/policy.md. */
export const policyFileSchema = z
  .strictObject({
    version: z.literal('v1').describe('Policy language version.'),
    description: z.string().optional(),
    default: z.enum(['allow', 'deny']).optional()
      .describe('Action when nothing else decides. At most one file may set it; unset means deny.'),
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
  })
  .describe('egress-proxy policy file');

export type PolicyFile = z.output<typeof policyFileSchema>;
