// Streaming text decoders that sit between a body and its Scanner. Each takes bytes and returns
// what the scanner should see (bytes, or a string of one byte per character), keeping only an
// incomplete escape between chunks, so memory stays bounded whatever the body size.

/** Turns one chunk into scanner input; `final` is set on the last call. */
export interface TextDecoder {
  push(chunk: Buffer, final: boolean): Buffer | string;
}

/** No decoding. */
export class Passthrough implements TextDecoder {
  push(chunk: Buffer): Buffer {
    return chunk;
  }
}

/** UTF-8 bytes of one code point, as a string of one byte per character. */
function utf8Latin1(cp: number): string {
  if (cp < 0x80) return String.fromCharCode(cp);
  if (cp < 0x800) return String.fromCharCode(0xc0 | (cp >> 6), 0x80 | (cp & 63));
  if (cp < 0x10000) return String.fromCharCode(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
  return String.fromCharCode(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
}

const JSON_ESCAPE = /\\(?:u([0-9A-Fa-f]{4})(?:\\u([0-9A-Fa-f]{4}))?|([\s\S]))/g;
const SIMPLE: Record<string, string> = { n: '\n', t: '\t', r: '\r', b: '\b', f: '\f' };
/** The longest escape: a surrogate pair, \uD83D\uDE00. */
const LONGEST_ESCAPE = 12;

/**
 * JSON string escapes (\u0034, \n, \/, surrogate pairs) decoded in place: the structure stays
 * as it is, so a secret split into escapes (4\u0031\u0031\u0031...) reads like the plain one.
 */
export class JsonUnescaper implements TextDecoder {
  private carry = '';

  push(chunk: Buffer, final: boolean): Buffer | string {
    if (this.carry === '' && chunk.indexOf(0x5c /* \ */) === -1) return chunk;
    const text = this.carry + chunk.toString('latin1');
    this.carry = '';
    let out = '';
    let last = 0;
    JSON_ESCAPE.lastIndex = 0;
    for (let m = JSON_ESCAPE.exec(text); m; m = JSON_ESCAPE.exec(text)) {
      if (!final && m.index > text.length - LONGEST_ESCAPE) {
        this.carry = text.slice(m.index);
        return out + text.slice(last, m.index);
      }
      out += text.slice(last, m.index);
      last = JSON_ESCAPE.lastIndex;
      if (m[1] !== undefined) {
        const hi = parseInt(m[1], 16);
        const lo = m[2] !== undefined ? parseInt(m[2], 16) : -1;
        if (hi >= 0xd800 && hi < 0xdc00 && lo >= 0xdc00 && lo < 0xe000) out += utf8Latin1(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00));
        else {
          out += hi >= 0xd800 && hi < 0xe000 ? '?' : utf8Latin1(hi);
          if (lo >= 0) out += lo >= 0xd800 && lo < 0xe000 ? '?' : utf8Latin1(lo);
        }
      } else {
        const c = m[3]!;
        out += SIMPLE[c] ?? c;
      }
    }
    const rest = text.slice(last);
    // A lone backslash at the very end starts an escape that continues in the next chunk.
    if (!final && rest.endsWith('\\')) {
      this.carry = '\\';
      return out + rest.slice(0, -1);
    }
    return out + rest;
  }
}

const PERCENT = /%([0-9A-Fa-f]{2})|\+/g;

/** application/x-www-form-urlencoded: %XX and + decoded, so values are scanned as sent. */
export class UrlDecoder implements TextDecoder {
  private carry = '';

  push(chunk: Buffer, final: boolean): Buffer | string {
    if (this.carry === '' && chunk.indexOf(0x25 /* % */) === -1 && chunk.indexOf(0x2b /* + */) === -1) return chunk;
    let text = this.carry + chunk.toString('latin1');
    this.carry = '';
    if (!final) {
      const pct = text.lastIndexOf('%');
      if (pct >= 0 && pct > text.length - 3) {
        this.carry = text.slice(pct);
        text = text.slice(0, pct);
      }
    }
    return text.replace(PERCENT, (m, hex: string | undefined) => (m === '+' ? ' ' : String.fromCharCode(parseInt(hex!, 16))));
  }
}

/** The decoder a media type calls for (JSON, form-urlencoded, or none). */
export function decoderFor(mediaType: string): TextDecoder {
  if (/(^|[/+])json$|^application\/(x-)?ndjson$|^application\/json-seq$/.test(mediaType)) return new JsonUnescaper();
  if (mediaType === 'application/x-www-form-urlencoded') return new UrlDecoder();
  return new Passthrough();
}
