// Character classes for the detectors: one table lookup per probe of a body byte.

export const DIGIT = 1;
export const TOKEN = 2; // [A-Za-z0-9+/_-]: every token format and both base64 alphabets
export const UPPER = 4;
export const ALNUM = 8;
export const B64STD = 16; // [A-Za-z0-9+/]
export const B64URL = 32; // [A-Za-z0-9_-]
export const WORD = 64; // [A-Za-z0-9_]
export const EMAIL_LOCAL = 128; // [A-Za-z0-9._%+-]
/** Class bits of each byte value. */
export const T = new Uint16Array(256);
export const EMAIL_DOMAIN = 256; // [A-Za-z0-9.-]
export const B32 = 512; // [A-Z2-7]
export const LOWER = 1024;
export const INNER_SEP = 2048; // [/+_-]: a token may start right after one inside a run
export const URL_ONLY = 4096; // [_-]: not in the standard base64 alphabet
for (let c = 0; c < 256; c++) {
  const ch = String.fromCharCode(c);
  let f = 0;
  const digit = c >= 48 && c <= 57;
  const up = c >= 65 && c <= 90;
  const low = c >= 97 && c <= 122;
  if (digit) f |= DIGIT;
  if (up) f |= UPPER;
  if (digit || up || low) f |= ALNUM | TOKEN | B64STD | B64URL | WORD | EMAIL_LOCAL | EMAIL_DOMAIN;
  if ('+/'.includes(ch)) f |= TOKEN | B64STD;
  if ('_-'.includes(ch)) f |= TOKEN | B64URL;
  if (ch === '_') f |= WORD;
  if ('._%+-'.includes(ch)) f |= EMAIL_LOCAL;
  if ('.-'.includes(ch)) f |= EMAIL_DOMAIN;
  if (up || (c >= 50 && c <= 55)) f |= B32;
  if (low) f |= LOWER;
  if ('/+_-'.includes(ch)) f |= INNER_SEP;
  if ('_-'.includes(ch)) f |= URL_ONLY;
  T[c] = f;
}
/** The byte at `i` is an ASCII digit. */
export const isDigit = (u: Uint8Array, i: number): boolean => { const c = u[i]!; return c >= 48 && c <= 57; };
/** The byte at `i` is a space or a dash (card and SSN separators). */
export const isSep = (u: Uint8Array, i: number): boolean => { const c = u[i]!; return c === 32 || c === 45; };

/** True when the `width` characters before `start` contain one of `words` (lower-case). */
export function contextHas(s: string, start: number, width: number, words: RegExp): boolean {
  return words.test(s.slice(Math.max(0, start - width), start).toLowerCase());
}
