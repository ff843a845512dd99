import { countrySpecs, isValidIBAN } from 'ibantools';
import { DIGIT, UPPER, ALNUM, T as CLASSES, isDigit, isSep, contextHas } from './chars.js';

// A module-local binding: hot loops index it without the import indirection.
const T = CLASSES;

// Built-in detectors. Each works on a "segment": a string holding body bytes one per character
// (latin1), so offsets are byte offsets and every pattern is ASCII. Finders (the numeric ones
// here, the others in tokens.ts) are fast prefilters (sampling, indexOf) followed by exact validation of the few candidates; the
// scanner decides which matches belong to which chunk (see scanner.ts).

export const BUILTIN_IDS = [
  'credit_card', 'us_ssn', 'iban', 'email', 'aws_access_key_id', 'aws_secret_key', 'github_token',
  'slack_token', 'slack_webhook', 'google_api_key', 'private_key', 'jwt',
] as const;
export type BuiltinId = (typeof BUILTIN_IDS)[number];
export type Confidence = 'low' | 'medium' | 'high';
export const CONFIDENCE = { low: 1, medium: 2, high: 3 } as const;
export const CONFIDENCE_NAME = ['none', 'low', 'medium', 'high'] as const;
export type Conf = 1 | 2 | 3;

/** Where finders report a validated match: [start, end) in the segment, and the normalised value. */
export interface HitSink {
  hit(id: BuiltinId, start: number, end: number, value: string, conf: Conf): void;
}

/** Which built-ins a segment pass must look for, each with the lowest confidence any rule counts. */
export type Enabled = ReadonlyMap<BuiltinId, number>;

/** The longest match (plus context) any built-in needs; the scanner's overlap is sized from it. */
export const MAX_MATCH = 1024;

// ---------------------------------------------------------------------------------------------
// Masking: samples show the shape and a few characters, never the value.

/** Keeps `head` and `tail` characters and stars the rest; never more than half the value in clear. */
export function maskMiddle(v: string, head: number, tail: number): string {
  const clear = Math.floor(v.length / 2);
  if (head + tail > clear) {
    tail = Math.min(tail, Math.floor(clear / 2));
    head = Math.min(head, clear - tail);
  }
  return v.slice(0, head) + '*'.repeat(v.length - head - tail) + (tail > 0 ? v.slice(v.length - tail) : '');
}

const MASKS: Record<BuiltinId, (v: string) => string> = {
  credit_card: (v) => maskMiddle(v, 4, 4),
  us_ssn: (v) => `***-**-${v.slice(-4)}`,
  iban: (v) => maskMiddle(v, 4, 4),
  email: (v) => {
    const at = v.indexOf('@');
    return `${v[0]}***${v.slice(at)}`;
  },
  aws_access_key_id: (v) => maskMiddle(v, 4, 4),
  aws_secret_key: (v) => maskMiddle(v, 0, 4),
  github_token: (v) => maskMiddle(v, v.indexOf('_') + 1, 4),
  slack_token: (v) => maskMiddle(v, 5, 4),
  slack_webhook: (v) => `hooks.slack.com/${v.split('/')[0]}/***`,
  google_api_key: (v) => maskMiddle(v, 4, 4),
  // The value is the armour header (no key material) plus a prefix of the body for counting.
  private_key: (v) => v.slice(0, v.indexOf('\n') >= 0 ? v.indexOf('\n') : v.length),
  jwt: (v) => `${v.slice(0, 6)}${'*'.repeat(12)}`,
};

/** The masked sample of a built-in detector's value. */
export function maskBuiltin(id: BuiltinId, value: string): string {
  return MASKS[id](value);
}

/** The masked sample of a custom regex match. */
export function maskCustom(v: string): string {
  return v.length >= 12 ? maskMiddle(v, 2, 2) : v.length >= 6 ? maskMiddle(v, 1, 0) : '*'.repeat(v.length);
}

// ---------------------------------------------------------------------------------------------
// Payment cards

/** Luhn (mod 10) check over a string of digits. */
export function luhn(d: string): boolean {
  let sum = 0;
  for (let i = d.length - 1, dbl = false; i >= 0; i--, dbl = !dbl) {
    let x = d.charCodeAt(i) - 48;
    if (dbl && (x *= 2) > 9) x -= 9;
    sum += x;
  }
  return sum % 10 === 0;
}

/** Whether a card number's issuer prefix and length belong to a known scheme. */
export function cardScheme(d: string): string | undefined {
  const n = d.length;
  const c0 = d.charCodeAt(0) - 48;
  const p2 = c0 * 10 + d.charCodeAt(1) - 48;
  const p3 = p2 * 10 + d.charCodeAt(2) - 48;
  const p4 = p3 * 10 + d.charCodeAt(3) - 48;
  if (c0 === 4) return n === 13 || n === 16 || n === 19 ? 'visa' : undefined;
  if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) return n === 16 ? 'mastercard' : undefined;
  if (p2 === 34 || p2 === 37) return n === 15 ? 'amex' : undefined;
  if (p4 >= 2200 && p4 <= 2204) return n === 16 ? 'mir' : undefined;
  if (p4 === 6011 || (p3 >= 644 && p3 <= 649) || p2 === 65) return n >= 16 ? 'discover' : undefined;
  if (p4 >= 3528 && p4 <= 3589) return n >= 16 ? 'jcb' : undefined;
  if ((p3 >= 300 && p3 <= 305) || p2 === 36 || p2 === 38 || p2 === 39) return n >= 14 ? 'diners' : undefined;
  if (p2 === 62) return n >= 16 ? 'unionpay' : undefined;
  if (p2 === 50 || (p2 >= 56 && p2 <= 69)) return n >= 12 ? 'maestro' : undefined;
  return undefined;
}

const CARD_CONTEXT = /card|\bcc|\bpan\b|visa|master|amex|credit|debit|payment|kreditkarte|carte/;

/**
 * The confidence of a digit string as a card number, or 0: Luhn-valid with a known scheme is
 * medium, high when written in the usual groups or after a card word; an unknown scheme is low.
 * Below `min` the answer is 0 without further work.
 */
export function cardConfidence(d: string, grouped: boolean, context: () => boolean, min = 1): 0 | Conf {
  if (d.length < 13 || d.length > 19) return 0;
  const scheme = cardScheme(d);
  if (!scheme && min > 1) return 0;
  if (!luhn(d)) return 0;
  let same = true;
  for (let i = 1; i < d.length && same; i++) same = d.charCodeAt(i) === d.charCodeAt(0);
  if (same) return 0;
  if (!scheme) return 1;
  return grouped || context() ? 3 : 2;
}

// ---------------------------------------------------------------------------------------------
// US social security numbers

/** SSA rules: area 000, 666 and 900-999, group 00 and serial 0000 are never issued. */
export function ssnValid(area: string, group: string, serial: string): boolean {
  const a = Number(area);
  if (a === 0 || a === 666 || a >= 900 || group === '00' || serial === '0000') return false;
  // Numbers published in advertising and widely misused; never valid.
  const full = `${area}${group}${serial}`;
  return full !== '078051120' && full !== '219099999';
}

const SSN_CONTEXT = /ssn|social security|soc\.? ?sec|ss#|taxpayer|\btin\b/;

// Scratch space for numericRegion (single-threaded; regions of more groups are cut short).
const MAX_GROUPS = 64;
const GS = new Int32Array(MAX_GROUPS);
const GE = new Int32Array(MAX_GROUPS);

/** Cards and SSNs in one numeric region: digit groups joined by single spaces or dashes. */
function numericRegion(s: string, u: Uint8Array, ra: number, rb: number, en: Enabled, sink: HitSink): void {
  const before = ra > 0 ? u[ra - 1]! : 32;
  const after = rb < s.length ? u[rb]! : 32;
  // Glued to letters or a decimal point: an identifier or a float, not a card or SSN.
  if (T[before & 255]! & ALNUM || before === 46 || T[after & 255]! & ALNUM || (after === 46 && isDigit(u, rb + 1))) return;
  let m = 0;
  for (let i = ra; i < rb && m < MAX_GROUPS; m++) {
    GS[m] = i;
    while (i < rb && isDigit(u, i)) i++;
    GE[m] = i;
    i++; // the separator
  }
  const ssnMin = en.get('us_ssn');
  if (ssnMin !== undefined) {
    if (m === 3 && GE[0]! - GS[0]! === 3 && GE[1]! - GS[1]! === 2 && GE[2]! - GS[2]! === 4 && u[GE[0]!]! === u[GE[1]!]!) {
      const area = s.slice(GS[0]!, GE[0]!);
      const group = s.slice(GS[1]!, GE[1]!);
      const serial = s.slice(GS[2]!, GE[2]!);
      if (ssnValid(area, group, serial)) {
        const base = u[GE[0]!]! === 45 ? 2 : 1;
        const conf = (contextHas(s, ra, 48, SSN_CONTEXT) ? base + 1 : base) as Conf;
        if (conf >= ssnMin) sink.hit('us_ssn', ra, rb, `${area}-${group}-${serial}`, conf);
      }
    }
  }
  const cardMin = en.get('credit_card');
  if (cardMin === undefined) return;
  for (let i = 0; i < m;) {
    let found = -1;
    for (let j = Math.min(m - 1, i + 4); j >= i; j--) {
      let total = 0;
      for (let k = i; k <= j; k++) total += GE[k]! - GS[k]!;
      if (total < 13 || total > 19 || (j > i && !cardGroups(u, i, j))) continue;
      const st = GS[i]!;
      const d = j === i ? s.slice(st, GE[i]!) : digitsOf(s, i, j);
      const conf = cardConfidence(d, j > i, () => contextHas(s, st, 48, CARD_CONTEXT), cardMin);
      if (conf > 0) {
        sink.hit('credit_card', st, GE[j]!, d, conf as Conf);
        found = j;
        break;
      }
    }
    i = found >= 0 ? found + 1 : i + 1;
  }
}

/** Groups i..j in a way people write cards (4-4-4-4(-3), Amex 4-6-5, Diners 4-6-4), one separator. */
function cardGroups(u: Uint8Array, i: number, j: number): boolean {
  const len = (k: number): number => GE[k]! - GS[k]!;
  const sep = u[GE[i]!]!;
  for (let k = i + 1; k < j; k++) if (u[GE[k]!]! !== sep) return false;
  if (j - i === 2 && len(i) === 4 && len(i + 1) === 6 && (len(j) === 5 || len(j) === 4)) return true;
  for (let k = i; k < j; k++) if (len(k) !== 4) return false;
  return len(j) >= 1 && len(j) <= 4;
}

function digitsOf(s: string, i: number, j: number): string {
  let d = '';
  for (let k = i; k <= j; k++) d += s.slice(GS[k]!, GE[k]!);
  return d;
}

/** An IBAN starting at `p` (two upper-case letters, two digits), written compact or in groups. */
function ibanAt(s: string, u: Uint8Array, p: number, sink: HitSink): number {
  const spec = (countrySpecs as Record<string, { chars?: number | null } | undefined>)[s.slice(p, p + 2)];
  const want = spec?.chars;
  if (!want) return -1;
  let out = '';
  let k = p;
  const n = s.length;
  while (out.length < want && k < n) {
    const c = u[k]!;
    if ((c >= 48 && c <= 57) || (c >= 65 && c <= 90)) { out += s[k]; k++; }
    else if (c === 32 && out.length > 0 && k + 1 < n && (T[u[k + 1]!]! & (UPPER | DIGIT))) k++;
    else break;
  }
  if (out.length !== want || (k < n && T[u[k]!]! & ALNUM)) return -1;
  if (!isValidIBAN(out)) return -1;
  sink.hit('iban', p, k, out, 3);
  return k;
}

/** An IBAN whose country code lies at most a few groups left of `p`; returns its end or -1. */
function ibanNear(s: string, u: Uint8Array, p: number, after: number, sink: HitSink): number {
  let l = p;
  const limit = Math.max(0, p - 44);
  while (l > limit && (T[u[l - 1]! & 255]! & (UPPER | DIGIT) || (u[l - 1]! === 32 && l >= 2 && T[u[l - 2]! & 255]! & (UPPER | DIGIT)))) l--;
  for (let q = Math.max(l, after); q <= p; q++) {
    if ((T[u[q]! & 255]! & (UPPER | DIGIT)) === UPPER && (T[u[q + 1]! & 255]! & (UPPER | DIGIT)) === UPPER
      && isDigit(u, q + 2) && isDigit(u, q + 3) && (q === 0 || !(T[u[q - 1]! & 255]! & ALNUM))) {
      const end = ibanAt(s, u, q, sink);
      if (end > 0) return end;
    }
  }
  return -1;
}

/**
 * Cards, SSNs and IBANs. Each spans at least 11 characters of digits and separators (an IBAN:
 * capitals, digits and spaces, with digit groups), so probing every 11th character finds them
 * all; only probes that land on a digit look closer, and text and JSON structure are skipped.
 */
export function scanNumeric(s: string, u: Uint8Array, from: number, to: number, en: Enabled, sink: HitSink): void {
  const n = s.length;
  let done = 0;
  let ibanDone = 0;
  const ssnOrCard = en.has('credit_card') || en.has('us_ssn');
  const iban = en.has('iban');
  for (let i = Math.max(0, from - 48) + 10; i < to; i += 11) {
    const c = u[i]!;
    let p = i;
    if (c >= 48 && c <= 57) { /* a digit */ } else if (c === 32 || c === 45) {
      if (isDigit(u, i - 1)) p = i - 1;
      else if (isDigit(u, i + 1)) p = i + 1;
      else continue;
    } else continue;
    if (p < done) continue;
    let a = p;
    while (a > 0 && isDigit(u, a - 1)) a--;
    let b = p + 1;
    while (b < n && isDigit(u, b)) b++;
    let ra = a;
    let rb = b;
    let digits = b - a;
    while (ra >= 2 && isSep(u, ra - 1) && isDigit(u, ra - 2)) {
      ra -= 2;
      digits++;
      while (ra > 0 && isDigit(u, ra - 1)) { ra--; digits++; }
    }
    while (rb + 1 < n && isSep(u, rb) && isDigit(u, rb + 1)) {
      rb += 2;
      digits++;
      while (rb < n && isDigit(u, rb)) { rb++; digits++; }
    }
    done = rb;
    if (ssnOrCard && digits >= 9 && rb - ra >= 11) numericRegion(s, u, ra, rb, en, sink);
    // An IBAN's country code is to the left, joined by capitals or a single space.
    const l1 = ra > 0 ? T[u[ra - 1]! & 255]! : 0;
    if (iban && rb > ibanDone && (l1 & UPPER || (u[ra - 1]! === 32 && ra >= 2 && T[u[ra - 2]! & 255]! & UPPER))) {
      const e = ibanNear(s, u, ra, ibanDone, sink);
      if (e > 0) { ibanDone = e; done = Math.max(done, e); }
    }
  }
}
