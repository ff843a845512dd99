import { isIP } from 'node:net';
import { z } from 'zod';

/** Parses "host:port" / "[v6]:port" into parts, or undefined when malformed. */
export function parseHostPort(value: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(value);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  const host = m[1] ?? m[2]!;
  if (m[1] && isIP(m[1]) !== 6) return undefined;
  return { host, port };
}

/** Parses "a.b.c.d/n" or "v6/n" (a bare address means a single host). */
export function parseCidr(value: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const [address, prefixText, ...rest] = value.split('/');
  if (rest.length > 0 || !address) return undefined;
  const version = isIP(address);
  if (version === 0) return undefined;
  const max = version === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (prefixText !== undefined && !/^\d+$/.test(prefixText))) {
    return undefined;
  }
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}


/** Turns ::ffff:a.b.c.d into a.b.c.d so one rule covers both spellings. */
export function unmapV4(address: string): string {
  if (address.length > 7 && address.charCodeAt(0) === 58 /* : */) {
    const m = /^::ffff:(?:0:)?(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (m) return m[1]!;
    const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
    if (hex) {
      const hi = parseInt(hex[1]!, 16);
      const lo = parseInt(hex[2]!, 16);
      return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
    }
  }
  return address;
}

export const hostPort = z
  .string()
  .refine((v) => parseHostPort(v) !== undefined, { message: 'expected HOST:PORT, e.g. 127.0.0.1:3128 or [::1]:3128' })
  .describe('HOST:PORT');

export const cidr = z
  .string()
  .refine((v) => parseCidr(v) !== undefined, { message: 'expected an IP address or CIDR, e.g. 10.0.0.0/8 or fd00::/8' })
  .describe('IP address or CIDR');

export const port = z.number().int().min(1).max(65535);
export const millis = (def: number, what: string) =>
  z.number().int().min(1).max(86_400_000).default(def).describe(`${what} (milliseconds)`);
