import { MAX_MATCH, maskCustom, scanNumeric, type BuiltinId, type Enabled, type HitSink } from './detectors.js';
import { scanEmails, scanPrivateKeys, scanTokens } from './tokens.js';
import type { CompiledProfile } from './profile.js';
import { Tally, type Verdict } from './tally.js';

// Streaming: the body is cut into segments of up to SEGMENT bytes. Each segment is scanned with
// the tail of the previous one in front (CARRY_LEFT bytes before the last commit point), and
// only the matches that END in (previous commit, new commit] are counted, the new commit point
// being HOLD bytes before the segment's end (the whole of it at end of body). A match that
// straddles a chunk boundary is therefore seen whole, and counted exactly once. Memory per
// body: one segment, the carry, and the counters.
const SEGMENT = 64 * 1024;
const HOLD = MAX_MATCH;
const CARRY_LEFT = 2 * MAX_MATCH;
const SCRATCH = CARRY_LEFT + HOLD + SEGMENT;
/** Nested base64 (base64 of base64 ...) is decoded this many levels deep. */
const MAX_DEPTH = 2;

const NUMERIC: readonly BuiltinId[] = ['credit_card', 'us_ssn', 'iban'];
const TOKENS: readonly BuiltinId[] = ['aws_access_key_id', 'aws_secret_key', 'github_token', 'slack_token', 'slack_webhook', 'google_api_key', 'jwt'];

/** Decoded base64 a body may scan, shared by all its scanners; `capped` once some was skipped. */
export interface Base64Budget { left: number; capped: boolean }

interface OpenBase64 {
  child: Scanner;
  /** Absolute offset up to which run characters were decoded. */
  fedTo: number;
  /** Absolute start of the current line (wrapped base64: 64/76-character lines). */
  lineStart: number;
  rem: string;
}

/** Options for a Scanner. */
export interface ScannerOptions {
  /** Stop after this many bytes (default: the profile's max_scan_bytes). */
  maxBytes?: number;
  /** Share one base64 budget between the scanners of a body (default: the profile's, per scanner). */
  base64?: Base64Budget;
  /** Nesting level (base64 inside base64); internal. */
  depth?: number;
}

/**
 * Scans one body (or one multipart part) as it streams: `write(chunk)` any number of times,
 * then `end()`. Several scanners may share one Tally (a body's parts, decoded base64).
 */
export class Scanner implements HitSink {
  readonly tally: Tally;
  scannedBytes = 0;
  truncated = false;
  private readonly profile: CompiledProfile;
  private maxBytes: number;
  private readonly depth: number;
  private readonly shared: Base64Budget;
  private readonly enabled: Enabled;
  private readonly numeric: boolean;
  private readonly tokens: boolean;
  private readonly base64: boolean;
  /** Carry (the tail of the last segment) then the pending bytes of the next one. */
  private scratch: Buffer = EMPTY;
  private carryLen = 0;
  private child: Scanner | undefined;
  private base = 0;
  private committed = 0;
  private pendingLen = 0;
  private ended = false;
  private b64: OpenBase64 | undefined;
  /** Absolute end of the last decoded block: its runs are not decoded again. */
  private b64Done = 0;
  // The current segment, for hit() and the base64 callbacks.
  private segBase = 0;
  private from = 0;
  private to = 0;
  private seg = '';
  private u: Uint8Array = new Uint8Array(0);

  constructor(profile: CompiledProfile, tally: Tally = new Tally(profile), opts: ScannerOptions = {}) {
    this.profile = profile;
    this.tally = tally;
    this.maxBytes = opts.maxBytes ?? profile.maxScanBytes;
    this.depth = opts.depth ?? 0;
    this.shared = opts.base64 ?? { left: profile.decode.base64MaxBytes, capped: false };
    this.enabled = enabledOf(profile);
    this.numeric = NUMERIC.some((id) => this.enabled.has(id));
    this.base64 = profile.decode.base64 && this.depth < MAX_DEPTH;
    this.tokens = this.base64 || TOKENS.some((id) => this.enabled.has(id));
  }

  /** Makes an ended scanner ready for another stream (base64 children are reused). */
  reset(maxBytes: number): void {
    this.maxBytes = maxBytes;
    this.scannedBytes = 0;
    this.truncated = false;
    this.carryLen = 0;
    this.base = 0;
    this.committed = 0;
    this.pendingLen = 0;
    this.ended = false;
    this.b64 = undefined;
    this.b64Done = 0;
  }

  /** Scans a chunk: bytes, or a string holding one byte per character (latin1). */
  write(chunk: Uint8Array | string): void {
    if (this.ended) throw new Error('Scanner.write after end');
    let buf = typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.scannedBytes + buf.length > this.maxBytes) {
      buf = buf.subarray(0, Math.max(0, this.maxBytes - this.scannedBytes));
      this.truncated = true;
      if (buf.length === 0) return;
    }
    this.scannedBytes += buf.length;
    for (let off = 0; off < buf.length;) {
      const take = Math.min(buf.length - off, SEGMENT - this.pendingLen);
      const at = this.carryLen + this.pendingLen;
      this.room(at + take);
      buf.copy(this.scratch, at, off, off + take);
      this.pendingLen += take;
      off += take;
      if (this.pendingLen >= SEGMENT) this.flushPending(false);
    }
  }

  /** Grows the scratch buffer (carry + pending segment) up to its bound, as bodies need it. */
  private room(n: number): void {
    if (n <= this.scratch.length) return;
    const grown = Buffer.allocUnsafe(Math.min(SCRATCH, Math.max(n, this.scratch.length * 2, 4096)));
    this.scratch.copy(grown, 0, 0, this.carryLen + this.pendingLen);
    this.scratch = grown;
  }

  /**
   * Scans what is pending now instead of waiting for a whole segment: afterwards every byte
   * written is scanned but the last MAX_MATCH, which may still be the start of a match.
   */
  sync(): void {
    if (this.ended) return;
    if (this.pendingLen > 0) this.flushPending(false);
    this.b64?.child.sync();
  }

  /** Scans what is left; later writes throw. Returns this scanner's part of the verdict. */
  end(): { scannedBytes: number; truncated: boolean } {
    if (!this.ended) {
      this.ended = true;
      this.flushPending(true);
      this.closeBase64();
    }
    return { scannedBytes: this.scannedBytes, truncated: this.truncated };
  }

  /** A whole-body verdict for a scanner used on its own (BodyInspector adds decoders and file types). */
  verdict(): Verdict {
    this.end();
    const partial = this.truncated || this.shared.capped;
    return this.tally.verdict({ files: [], scannedBytes: this.scannedBytes, truncated: partial,
      ...(partial ? { unscanned: 'oversize' as const } : {}) });
  }

  /** True once some block entry of the profile has reached its threshold. */
  get blocked(): boolean {
    return this.tally.blocked;
  }

  private flushPending(final: boolean): void {
    // One flat string over the scratch bytes: finders read bytes from the array and slice or
    // search the string (a concatenated string would make every access take the slow path).
    const total = this.carryLen + this.pendingLen;
    this.pendingLen = 0;
    const s = this.scratch.toString('latin1', 0, total);
    const base = this.base;
    const from = this.committed - base;
    const to = final ? total : total - HOLD;
    if (to > from) {
      this.scanSegment(s, new Uint8Array(this.scratch.buffer, this.scratch.byteOffset, total), base, from, to);
      this.committed = base + to;
    }
    const keep = Math.max(0, this.committed - base - CARRY_LEFT);
    this.scratch.copyWithin(0, keep, total);
    this.carryLen = total - keep;
    this.base = base + keep;
  }

  private scanSegment(s: string, u: Uint8Array, base: number, from: number, to: number): void {
    this.seg = s;
    this.u = u;
    this.segBase = base;
    this.from = from;
    this.to = to;
    const en = this.enabled;
    if (this.b64) this.pumpBase64();
    if (this.numeric) scanNumeric(s, u, from, to, en, this);
    if (this.tokens) scanTokens(s, u, from, to, en, this, this.base64 ? (a, b) => this.onBase64(a, b) : undefined);
    if (en.has('email')) scanEmails(s, u, from, to, this);
    if (en.has('private_key')) scanPrivateKeys(s, u, from, to, this);
    for (const rx of this.profile.regexes) {
      const input = rx.utf8 ? Buffer.from(s, 'latin1') : s;
      if (!rx.re.test(input)) continue;
      const m = rx.re.matcher(input);
      while (m.find()) {
        const st = m.start();
        const e = m.end();
        if (e > to) break;
        if (e <= from || e === st) continue;
        const v = rx.utf8 ? (input as Buffer).toString('latin1', st, e) : s.slice(st, e);
        this.tally.rule(rx.rule, v, { sample: maskCustom(v) }, rx.confidence);
      }
    }
    for (const kw of this.profile.keywords) {
      kw.re.lastIndex = Math.max(0, from - kw.maxLen);
      for (let m = kw.re.exec(s); m; m = kw.re.exec(s)) {
        const e = m.index + m[0].length;
        if (e > to) break;
        if (e > from) this.tally.rule(kw.rule, m[0].toLowerCase(), { sample: m[0] }, kw.confidence);
      }
    }
  }

  /** HitSink: counts a built-in match if it ends in this segment's commit range. */
  hit(id: BuiltinId, _start: number, end: number, value: string, conf: 1 | 2 | 3): void {
    if (end > this.from && end <= this.to) this.tally.builtin(id, value, conf);
  }

  // Base64 blocks: a run of 64+ characters (or lines of them, as MIME and PEM wrap it) is
  // decoded as it streams and scanned by a child scanner that shares this body's tally.

  private onBase64(a: number, b: number): void {
    const absA = this.segBase + a;
    if ((this.b64 && absA < this.b64.fedTo) || absA < this.b64Done) return; // already decoded
    if (b <= this.from) return; // ended before this segment's range: done last time
    this.closeBase64();
    if (this.shared.left <= 0) {
      this.shared.capped = true;
      return;
    }
    const child = (this.child ??= new Scanner(this.profile, this.tally, { depth: this.depth + 1, base64: this.shared }));
    child.reset(this.shared.left);
    this.b64 = { child, fedTo: absA, lineStart: absA, rem: '' };
    this.pumpBase64();
  }

  /** Decodes the open block from where it stopped up to this segment's commit point. */
  private pumpBase64(): void {
    const open = this.b64!;
    const s = this.seg;
    const u = this.u;
    const to = this.to;
    let p = open.fedTo - this.segBase;
    for (;;) {
      let e = p;
      while (e < s.length && isB64(u[e]!)) e++;
      const stop = Math.min(e, to);
      if (stop > p) this.feedBase64(s.slice(p, stop));
      open.fedTo = this.segBase + stop;
      if (e > to || (e === s.length && !this.ended)) return; // may continue in the next segment
      // Wrapped base64: a full line (a multiple of 4) then a newline and another line.
      const lineLen = this.segBase + e - open.lineStart;
      let q = e;
      if (u[q] === 13) q++;
      if (lineLen % 4 === 0 && lineLen >= 16 && u[q] === 10 && q + 1 < s.length && isB64(u[q + 1]!)) {
        p = q + 1;
        open.lineStart = this.segBase + p;
        open.fedTo = open.lineStart;
        if (p >= to) return;
        continue;
      }
      this.closeBase64();
      return;
    }
  }

  private feedBase64(text: string): void {
    const open = this.b64!;
    const all = open.rem + text;
    const usable = all.length - (all.length % 4);
    open.rem = all.slice(usable);
    if (usable === 0) return;
    const bytes = Buffer.from(all.slice(0, usable), 'base64');
    this.writeChild(bytes);
  }

  private writeChild(bytes: Buffer): void {
    const open = this.b64!;
    const room = this.shared.left;
    if (bytes.length > room) this.shared.capped = true;
    const use = bytes.length > room ? bytes.subarray(0, Math.max(0, room)) : bytes;
    this.shared.left -= use.length;
    if (use.length > 0) open.child.write(use);
  }

  private closeBase64(): void {
    const open = this.b64;
    if (!open) return;
    this.b64 = undefined;
    this.b64Done = open.fedTo;
    if (open.rem.length > 1) {
      this.b64 = open;
      this.writeChild(Buffer.from(open.rem, 'base64'));
      this.b64 = undefined;
    }
    open.child.end();
  }

  /** The shared base64 budget ran out: some decoded content went unscanned. */
  get base64Capped(): boolean {
    return this.shared.capped;
  }
}

const EMPTY = Buffer.alloc(0);
const enabledCache = new WeakMap<CompiledProfile, Enabled>();

/** The built-ins a profile uses, each with the lowest confidence one of its entries counts. */
function enabledOf(profile: CompiledProfile): Enabled {
  let en = enabledCache.get(profile);
  if (!en) {
    en = new Map([...profile.builtins].map(([id, rules]) => [id, Math.min(...rules.map((r) => profile.rules[r]!.minConfidence))]));
    enabledCache.set(profile, en);
  }
  return en;
}

function isB64(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 43 || c === 47 || c === 45 || c === 95 || c === 61;
}
