import type { z } from 'zod';
import type { trustSchema } from './schema.js';

type Attr = string | number | boolean;
type Predicate = z.output<typeof trustSchema>[string];

/** Compares dotted versions segment by segment ("14.10" > "14.9"); plain numbers too. */
export function compareVersions(a: Attr, b: Attr): number {
  const pa = String(a).split('.').map(Number);
  const pb = String(b).split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? 0;
    const y = pb[i] ?? 0;
    if (Number.isNaN(x) || Number.isNaN(y)) return String(a).localeCompare(String(b));
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** Milliseconds in "30m", "12h" or "7d". */
export function durationMs(text: string): number {
  const m = /^(\d+)([mhd])$/.exec(text)!;
  return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
}

/** Why the attribute value fails the predicate, or undefined when it holds. */
export function checkPredicate(name: string, value: Attr | undefined, p: Predicate, now: Date): string | undefined {
  if (typeof p !== 'object') return value === p ? undefined : `${name} is ${String(value)}, not ${String(p)}`;
  if (value === undefined) return `${name} is unknown`;
  if (p.in && !p.in.some((v) => v === value)) return `${name} ${String(value)} is not one of ${p.in.join(', ')}`;
  if (p.gte !== undefined && compareVersions(value, p.gte) < 0) return `${name} ${String(value)} is below ${String(p.gte)}`;
  if (p.lte !== undefined && compareVersions(value, p.lte) > 0) return `${name} ${String(value)} is above ${String(p.lte)}`;
  if (p.within !== undefined) {
    const t = Date.parse(String(value));
    if (Number.isNaN(t) || now.getTime() - t > durationMs(p.within)) return `${name} ${String(value)} is older than ${p.within}`;
  }
  return undefined;
}
