import { createDecipheriv } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { EncryptJWT } from 'jose';

/** What a sealed value is for: an auth cookie or a ticket can never be replayed as a session cookie. */
export type Purpose = 'session' | 'auth' | 'ticket';

/**
 * Reads the session key: exactly 32 bytes, given raw, as 64 hex characters or as base64.
 * Anything else is a start-up error, never a silently weaker key.
 */
export function loadSessionKey(file: string): Uint8Array {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (err) {
    throw new Error(`identity.sign_in.session_key_file ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  if (raw.length === 32) return new Uint8Array(raw);
  const text = raw.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return new Uint8Array(Buffer.from(text, 'hex'));
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(text)) {
    const b = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (b.length === 32) return new Uint8Array(b);
  }
  throw new Error(`identity.sign_in.session_key_file ${file}: must hold a 32-byte key (32 raw bytes, 64 hex characters or base64); it has ${raw.length} bytes. Make one with: openssl rand -hex 32`);
}

const B64URL = /^[A-Za-z0-9_-]+$/;
const HEADER = Buffer.from(JSON.stringify({ alg: 'dir', enc: 'A256GCM' })).toString('base64url');

/**
 * Opens a compact JWE (dir + A256GCM) synchronously, as the hot path needs. Only the exact header
 * jose writes is accepted (no zip, no other algorithms), so nothing in the token picks how it is read.
 */
export function openSealed(value: string, key: Uint8Array, purpose: Purpose, nowS: number, maxLength = 4096): Record<string, unknown> | undefined {
  if (value.length > maxLength) return undefined;
  const parts = value.split('.');
  if (parts.length !== 5 || parts[0] !== HEADER || parts[1] !== '') return undefined;
  const [, , ivB, ctB, tagB] = parts as [string, string, string, string, string];
  if (!B64URL.test(ivB) || !B64URL.test(ctB) || !B64URL.test(tagB)) return undefined;
  const iv = Buffer.from(ivB, 'base64url');
  const tag = Buffer.from(tagB, 'base64url');
  if (iv.length !== 12 || tag.length !== 16) return undefined;
  let claims: unknown;
  try {
    const d = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: 16 });
    d.setAAD(Buffer.from(HEADER, 'ascii'));
    d.setAuthTag(tag);
    claims = JSON.parse(Buffer.concat([d.update(Buffer.from(ctB, 'base64url')), d.final()]).toString('utf8'));
  } catch {
    return undefined; // wrong key, tampered, or not ours
  }
  if (typeof claims !== 'object' || claims === null) return undefined;
  const c = claims as Record<string, unknown>;
  if (c.pur !== purpose || typeof c.exp !== 'number' || c.exp <= nowS) return undefined;
  return c;
}

/** Reads one cookie from a Cookie header (the first one of that name wins, as browsers send the most specific first). */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined || !header.includes(name)) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** Seals `payload` (with its purpose in `pur`) as a compact JWE, dir + A256GCM, valid from `iat` to `exp` (epoch s). */
export function seal(payload: Record<string, unknown>, key: Uint8Array, iat: number, exp: number): Promise<string> {
  return new EncryptJWT(payload).setProtectedHeader({ alg: 'dir', enc: 'A256GCM' }).setIssuedAt(iat).setExpirationTime(exp).encrypt(key);
}
