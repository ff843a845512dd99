/**
 * A JSON line written as UTF-8 straight into one reused buffer: numbers as digits, plain ASCII
 * values byte by byte, and pre-encoded pieces copied in. Building the line as a string first
 * (a dozen concatenations, then flattening it to encode it) cost the proxy 12% of its CPU per
 * small request, far more than the same work in a loop: see docs/benchmarks.md "Logging and metrics".
 */
/** A destination a line can be encoded straight into (the block it is filling). */
export interface LinePlace {
  /** Points `out` (`buf`, `begin`, `pos`) at room for a line of at most `bound` bytes; false when there is none. */
  place(out: LineBytes, bound: number): boolean;
}

export class LineBytes {
  /** Where the line is being written: a destination's block (see `place`) or this buffer's own. */
  buf: Buffer;
  /** Where the line starts in `buf`. */
  begin = 0;
  /** Where the next byte goes in `buf`. */
  pos = 0;
  /** Where lines go when there is room, to be written from there without a copy. */
  place: LinePlace | undefined;
  private own: Buffer;

  constructor(size: number) {
    this.own = this.buf = Buffer.allocUnsafe(size);
  }

  /** Starts a new line of at most `bound` bytes: in place when there is room there, else in the own buffer (grown, once, for a larger line). */
  start(bound: number): void {
    if (this.place?.place(this, bound) === true) return;
    if (bound > this.own.length) this.own = Buffer.allocUnsafe(Math.max(bound, 2 * this.own.length));
    this.buf = this.own;
    this.begin = 0;
    this.pos = 0;
  }

  /** Bytes of the line so far. */
  get length(): number {
    return this.pos - this.begin;
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
    this.buf[this.pos++] = 0x22;
    this.strRest(v, max);
  }

  /** The rest of a JSON string whose opening quote (and first characters) are already written: `v` clipped to `max`, then `"`. */
  strRest(v: string, max: number): void {
    const buf = this.buf;
    const n = v.length;
    if (n <= max) {
      let at = this.pos;
      let i = 0;
      for (; i < n; i++) {
        const c = v.charCodeAt(i);
        if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) break;
        buf[at++] = c;
      }
      if (i === n) {
        buf[at++] = 0x22;
        this.pos = at;
        return;
      }
    }
    this.text(quote(v, max).slice(1));
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
