// Token, key and address detectors: runs of token characters, '@' and PEM armour.

import { DIGIT, TOKEN, UPPER, ALNUM, B64STD, B64URL, WORD, EMAIL_LOCAL, T as CLASSES, EMAIL_DOMAIN, B32, LOWER, INNER_SEP, URL_ONLY } from './chars.js';

// A module-local binding: hot loops index it without the import indirection.
const T = CLASSES;
import type { Conf, Enabled, HitSink } from './detectors.js';

// ---------------------------------------------------------------------------------------------
// Tokens and keys: runs of [A-Za-z0-9+/_-] of 20 or more characters.

const AWS_CONTEXT_HIGH = /secret.?access.?key|aws.{0,24}secret|secret.{0,24}aws/;
const AWS_CONTEXT = /aws|amazon/;

/** A run of `mask` characters starting at `p`; returns its end. */
function runEnd(s: string, u: Uint8Array, p: number, mask: number, max: number): number {
  const end = Math.min(s.length, p + max);
  while (p < end && T[u[p]!]! & mask) p++;
  return p;
}

function decodeJsonPart(part: string): unknown {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

/** End of the last JWT found in this segment pass (a header is reachable from two runs). */
let jwtEnd = -1;

/** A JWT whose header starts at `p`: base64url JSON with "alg", a dot, then a payload. */
function jwtAt(s: string, u: Uint8Array, p: number, sink: HitSink): number {
  if (p < jwtEnd) return -1;
  const h = runEnd(s, u, p, B64URL, 1001);
  if (h - p < 16 || h - p > 1000 || u[h]! !== 46 /* . */) return -1;
  if (p > 0 && T[u[p - 1]!]! & B64URL) return -1;
  const header = decodeJsonPart(s.slice(p, h));
  if (!header || typeof header !== 'object' || typeof (header as { alg?: unknown }).alg !== 'string') return -1;
  const pe = runEnd(s, u, h + 1, B64URL, 24);
  if (pe - (h + 1) < 8) return -1;
  const head = Buffer.from(s.slice(h + 1, h + 9), 'base64url').toString('latin1');
  const conf: Conf = head.startsWith('{"') || head.startsWith('{ "') ? 3 : 2;
  sink.hit('jwt', p, pe, s.slice(p, pe), conf);
  jwtEnd = pe;
  return pe;
}

/** Token formats that start with a fixed prefix at `p`; returns the end of a match or -1. */
function prefixedAt(s: string, u: Uint8Array, p: number, en: Enabled, sink: HitSink): number {
  if (p > 0 && T[u[p - 1]!]! & ALNUM) return -1;
  const c = u[p]!;
  if (c === 65 /* A */) {
    const four = s.slice(p, p + 4);
    if (en.has('aws_access_key_id') && (four === 'AKIA' || four === 'ASIA' || four === 'ABIA' || four === 'ACCA')) {
      // Key ids are upper-case letters and digits (base32 in practice, but AWS's own examples are not).
      const e = runEnd(s, u, p + 4, UPPER | DIGIT, 17);
      if (e - p === 20 && !(T[u[e]! & 255]! & ALNUM)) {
        const b32 = runEnd(s, u, p + 4, B32, 17) === e;
        sink.hit('aws_access_key_id', p, e, s.slice(p, e), (four === 'AKIA' || four === 'ASIA') && b32 ? 3 : 2);
        return e;
      }
    } else if (en.has('google_api_key') && four === 'AIza') {
      const e = runEnd(s, u, p + 4, B64URL, 36);
      if (e - p === 39) {
        sink.hit('google_api_key', p, e, s.slice(p, e), 3);
        return e;
      }
    }
  } else if (c === 103 /* g */ && en.has('github_token')) {
    if (s.startsWith('github_pat_', p)) {
      const e = runEnd(s, u, p + 11, WORD, 256);
      if (e - p >= 82 && !(T[u[e]!]! & ALNUM)) {
        sink.hit('github_token', p, e, s.slice(p, e), 3);
        return e;
      }
    } else if (u[p + 1]! === 104 && 'pousr'.includes(s[p + 2]!) && u[p + 3]! === 95) {
      const e = runEnd(s, u, p + 4, ALNUM, 256);
      if (e - p === 40 && !(T[u[e]!]! & WORD)) {
        sink.hit('github_token', p, e, s.slice(p, e), 3);
        return e;
      }
    }
  } else if (c === 120 /* x */ && en.has('slack_token') && s.startsWith('xox', p) && 'abprse'.includes(s[p + 3]!) && s[p + 4] === '-') {
    const e = runEnd(s, u, p + 5, ALNUM | B64URL, 256);
    if (e - p >= 20) {
      const v = s.slice(p, e);
      sink.hit('slack_token', p, e, v, /^xox[bp]-\d+-\d+-/.test(v) || /^xoxe\.?/.test(v) ? 3 : 2);
      return e;
    }
  } else if (c === 101 /* e */ && en.has('jwt') && s.startsWith('eyJ', p)) {
    return jwtAt(s, u, p, sink);
  }
  return -1;
}

/** Token formats inside one run [a, b) of TOKEN characters; `acc` ORs the classes of its characters. */
function tokenRun(s: string, u: Uint8Array, a: number, b: number, acc: number, en: Enabled, sink: HitSink): void {
  const len = b - a;
  prefixedAt(s, u, a, en, sink);
  // A token may also start after a separator inside the run (path/ghp_..., key_AKIA...).
  if (acc & INNER_SEP) {
    for (let k = a + 1; k < b - 19; k++) {
      if (!(T[u[k]! & 255]! & INNER_SEP)) continue;
      const nx = u[k + 1]!;
      if (nx === 65 || nx === 103 || nx === 120 || nx === 101) {
        const e = prefixedAt(s, u, k + 1, en, sink);
        if (e > 0) k = e - 1;
      }
    }
  }
  // A JWT whose header is too short to be a run of its own is found from its payload.
  if (en.has('jwt') && a > 1 && u[a - 1]! === 46 && s.startsWith('ey', a)) {
    let h = a - 1;
    const limit = Math.max(0, a - 1001);
    while (h > limit && T[u[h - 1]!]! & B64URL) h--;
    if (a - 1 - h < 20 && s.startsWith('eyJ', h)) jwtAt(s, u, h, sink);
  }
  if (en.has('slack_webhook') && (s.startsWith('com/services/T', a) || s.startsWith('com/workflows/T', a)) && s.slice(a - 12, a) === 'hooks.slack.') {
    const v = s.slice(a + 4, b);
    if (/^(services|workflows)\/T[A-Z0-9]{6,12}\/[AB][A-Z0-9]{6,12}\/[A-Za-z0-9]{16,}$/.test(v)) sink.hit('slack_webhook', a - 12, b, v, 3);
  }
  if (len === 40 && en.has('aws_secret_key') && !(acc & URL_ONLY) && acc & LOWER && acc & UPPER && acc & DIGIT) {
    const v = s.slice(a, b);
    if (u[b]! !== 61 /* = */) {
      const ctx = s.slice(Math.max(0, a - 96), a).toLowerCase();
      const conf = AWS_CONTEXT_HIGH.test(ctx) ? 3 : AWS_CONTEXT.test(ctx) ? 2 : 0;
      if (conf) sink.hit('aws_secret_key', a, b, v, conf);
    }
  }
}

/**
 * Tokens, keys, JWTs and base64 blocks. Each lives in a run of 20+ TOKEN characters, which
 * holds two probes ten apart; probes that land in ordinary words fail within a few characters.
 * `onBase64(a, b)` receives runs of 64+ characters (with any `=` padding).
 */
export function scanTokens(s: string, u: Uint8Array, from: number, to: number, en: Enabled, sink: HitSink,
  onBase64?: (a: number, b: number) => void): void {
  const n = s.length;
  let done = 0;
  jwtEnd = -1;
  const start = Math.max(0, from - 20);
  for (let i = start + 9; i < to; i += 10) {
    if (i < done || i + 10 >= n) continue;
    // Six probes ANDed without branching: text almost always has a space among them.
    const t = T[u[i]! & 255]! & T[u[i + 2]! & 255]! & T[u[i + 4]! & 255]!
      & T[u[i + 6]! & 255]! & T[u[i + 8]! & 255]! & T[u[i + 10]! & 255]!;
    if (!(t & TOKEN)) continue;
    let k = i + 1;
    while (k < i + 10 && T[u[k]! & 255]! & TOKEN) k += 2;
    if (k < i + 10) continue;
    let a = i;
    while (a > 0 && T[u[a - 1]! & 255]! & TOKEN) a--;
    let acc = 0;
    let b = a;
    for (let t2 = T[u[b]! & 255]!; t2 & TOKEN && b < n; t2 = T[u[++b]! & 255]!) acc |= t2;
    done = b;
    tokenRun(s, u, a, b, acc, en, sink);
    if (onBase64 && b - a >= 64) {
      let e = b;
      while (e < n && e - b < 2 && u[e]! === 61) e++;
      const keep = jwtEnd; // the decoded block is scanned right away, by a nested pass
      onBase64(a, e);
      jwtEnd = keep;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// E-mail addresses and PEM private keys: anchored on '@' and 'PRIVATE KEY'.

const FILE_TLDS = new Set(['png', 'jpg', 'jpeg', 'gif', 'svg', 'webp', 'js', 'css', 'ico', 'map', 'min']);

/** E-mail addresses around each '@'. */
export function scanEmails(s: string, u: Uint8Array, from: number, to: number, sink: HitSink): void {
  const n = s.length;
  for (let at = s.indexOf('@', Math.max(0, from - 254)); at !== -1 && at < to; at = s.indexOf('@', at + 1)) {
    let l = at;
    while (l > 0 && at - l < 64 && T[u[l - 1]!]! & EMAIL_LOCAL) l--;
    while (l < at && u[l]! === 46) l++;
    if (l === at || u[at - 1]! === 46) continue;
    let r = at + 1;
    while (r < n && r - at <= 253 && T[u[r]!]! & EMAIL_DOMAIN) r++;
    while (r > at + 1 && (u[r - 1]! === 46 || u[r - 1]! === 45)) r--;
    // Labels: non-empty, no leading or trailing '-'; the last one alphabetic, 2 to 24 letters.
    let ok = true;
    let dots = 0;
    let label = at + 1;
    for (let k = at + 1; k <= r && ok; k++) {
      if (k === r || u[k]! === 46) {
        if (k === label || k - label > 63 || u[label]! === 45 || u[k - 1]! === 45) ok = false;
        if (k < r) dots++;
        label = k + 1;
      }
    }
    if (!ok || dots === 0) continue;
    const tldStart = s.lastIndexOf('.', r - 1) + 1;
    if (r - tldStart < 2 || r - tldStart > 24) continue;
    for (let k = tldStart; k < r && ok; k++) ok = (T[u[k]!]! & (ALNUM | DIGIT)) === ALNUM;
    if (!ok) continue;
    const tld = s.slice(tldStart, r).toLowerCase();
    sink.hit('email', l, r, s.slice(l, r).toLowerCase(), FILE_TLDS.has(tld) ? 1 : 2);
  }
}

const PEM_KINDS = /^-----BEGIN ((?:RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP) )?PRIVATE KEY( BLOCK)?-----$/;

/** PEM / OpenSSH / PGP private keys: the armour header, high when key material follows. */
export function scanPrivateKeys(s: string, u: Uint8Array, from: number, to: number, sink: HitSink): void {
  for (let k = s.indexOf('PRIVATE KEY', Math.max(0, from - 48)); k !== -1 && k < to; k = s.indexOf('PRIVATE KEY', k + 11)) {
    const b = s.lastIndexOf('-----BEGIN ', k);
    if (b < 0 || k - b > 30) continue;
    const close = s.indexOf('-----', k + 11);
    if (close < 0 || close - k > 17) continue;
    const header = s.slice(b, close + 5);
    if (!PEM_KINDS.test(header)) continue;
    // Key material: after optional "Proc-Type:"-style header lines and blank lines (or JSON \n escapes).
    let p = close + 5;
    const limit = Math.min(s.length, p + 400);
    let body = '';
    while (p < limit && body.length < 48) {
      const c = u[p]!;
      if (c === 92 /* \ */ && (s[p + 1] === 'n' || s[p + 1] === 'r')) { p += 2; continue; }
      if (c === 10 || c === 13 || c === 32 || c === 9) { p++; continue; }
      if (T[c]! & B64STD || c === 61) { body += s[p]; p++; continue; }
      // A header line such as "Proc-Type: 4,ENCRYPTED": skip to its end.
      if (body.length === 0 || /^[A-Za-z-]+$/.test(body)) {
        const eol = s.indexOf('\n', p);
        const esc = s.indexOf('\\n', p);
        const next = eol < 0 ? esc : esc < 0 ? eol : Math.min(eol, esc);
        if (next < 0 || next > limit) break;
        body = '';
        p = next;
        continue;
      }
      break;
    }
    const conf: Conf = body.length >= 48 ? 3 : 1;
    sink.hit('private_key', b, close + 5, `${header}\n${body}`, conf);
  }
}
