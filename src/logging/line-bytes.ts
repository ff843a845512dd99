/**
 * A JSON line written as UTF-8 straight into one reused buffer: numbers as digits, plain ASCII
 * values byte by byte, and pre-encoded pieces copied in. Building the line as a string first
 * (a dozen concatenations, then flattening it to encode it) cost the proxy 12% of its CPU per
 * small request, far more than the same work in a loop: see docs/benchmarks.md "Logging and metrics".
 */
export class LineBytes {
  buf: Buffer;
  pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  /** Starts a new line of at most `bound` bytes (the buffer grows, once, for a larger one). */
  start(bound: number): void {
    if (bound > this.buf.length) this.buf = Buffer.allocUnsafe(Math.max(bound, 2 * this.buf.length));
    this.pos = 0;
  }

  /** Copies bytes already encoded (a cached piece of a line). */
  raw(b: Uint8Array): void {
    const n = b.length;
    // A field name is cheaper to copy byte by byte than through TypedArray#set's checks.
    if (n <= 24) {
      this.over(this.pos, b);
    } else {
      this.buf.set(b, this.pos);
    }
    this.pos += n;
  }

  /** Copies `b` over bytes already written, at `at` (the time in a cached prefix). */
  over(at: number, b: Uint8Array): void {
    const buf = this.buf;
    for (let i = 0; i < b.length; i++) buf[at + i] = b[i]!;
  }

  /** Text already in JSON form, encoded as UTF-8. */
  text(s: string): void {
    this.pos += this.buf.write(s, this.pos);
  }

  /** A non-negative integer as decimal digits (anything else as `String(n)` would write it). */
  int(n: number): void {
    if (!(n >= 0 && n <= 0x7fffffff && (n | 0) === n)) return this.text(String(n));
    const buf = this.buf;
    let at = this.pos + digits(n);
    this.pos = at;
    let x = n;
    do {
      const q = (x / 10) | 0;
      buf[--at] = 48 + x - q * 10;
      x = q;
    } while (x > 0);
  }

  /** Milliseconds with at most two decimals, trailing zeros dropped (12, 12.5, 12.05). */
  ms2(ms: number): void {
    const c = Math.round(ms * 100);
    if (!(c >= 0 && c <= Number.MAX_SAFE_INTEGER)) return this.text(String(Math.round(ms * 100) / 100));
    const i = Math.floor(c / 100);
    const f = c - i * 100;
    this.int(i);
    if (f === 0) return;
    const buf = this.buf;
    buf[this.pos++] = 46; // .
    buf[this.pos++] = 48 + Math.floor(f / 10);
    if (f % 10 !== 0) buf[this.pos++] = 48 + (f % 10);
  }

  /**
   * `v` as a JSON string, clipped to `max` characters (then `…`). Printable ASCII without quotes
   * or backslashes, the usual case, is copied byte by byte; anything else goes through `quote`.
   */
  str(v: string, max: number): void {
    const buf = this.buf;
    const n = v.length;
    if (n <= max) {
      let at = this.pos + 1;
      let i = 0;
      for (; i < n; i++) {
        const c = v.charCodeAt(i);
        if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) break;
        buf[at++] = c;
      }
      if (i === n) {
        buf[this.pos] = 0x22;
        buf[at++] = 0x22;
        this.pos = at;
        return;
      }
    }
    this.text(quote(v, max));
  }
}

function digits(n: number): number {
  let d = 1;
  for (let x = n; x >= 10; x = (x / 10) | 0) d++;
  return d;
}

// Escaped: what JSON requires, the line separators JavaScript source does not allow, and lone
// surrogates (UTF-8 encoding would turn them into U+FFFD).
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u2028\u2029\ud800-\udfff]/;

/** `v` as a JSON string, clipped to `max` characters (then `…`). */
export function quote(v: string, max: number): string {
  const c = v.length > max ? `${v.slice(0, max)}…` : v;
  return NEEDS_ESCAPE.test(c) ? JSON.stringify(c) : `"${c}"`;
}

/** Most bytes `quote(v, max)` can take: six per character (`\u001f`), the quotes and the ellipsis. */
export function quotedBound(v: string | undefined, max: number): number {
  return v === undefined ? 0 : 6 * Math.min(v.length, max) + 8;
}
