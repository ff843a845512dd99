const ISO_LENGTH = 24; // 2026-11-26T17:50:00.123Z

/**
 * The start of every access line, `{"level":"info","time":"…","node":…,"type":"access"`,
 * encoded once. Its time is kept apart, 24 bytes updated in place (three digits when only the
 * millisecond changed), so lines need no new prefix each millisecond: encoding a fresh one was
 * the largest single cost of a line (docs/benchmarks.md "Logging and metrics").
 */
export class AccessPrefix {
  /** The encoded prefix; when `timeAt` >= 0 its time is a placeholder that `time` goes over. */
  bytes: Buffer;
  /** Where the time's bytes go in `bytes`, or -1 when the time is written into `bytes` itself. */
  timeAt = -1;
  /** The current time, ISO 8601 with milliseconds (when `timeAt` >= 0). */
  readonly time = Buffer.alloc(ISO_LENGTH);
  private ms = Number.NaN;

  /** `node`: the JSON text of the node id and what follows it (`"n1"` or `"n1","worker":2`); undefined: a fixed prefix. */
  private constructor(private readonly node: string | undefined, text: string) {
    this.bytes = Buffer.from(text);
  }

  /** A prefix whose time follows the clock. */
  static live(node: string): AccessPrefix {
    return new AccessPrefix(node, '').now();
  }

  /** A prefix that never changes (tests and tools). */
  static fixed(text: string): AccessPrefix {
    return new AccessPrefix(undefined, text);
  }

  /** Brings the time to the current millisecond; returns this. */
  now(): this {
    return this.at(Date.now());
  }

  /** Sets the time to `now` (epoch milliseconds); returns this. */
  at(now: number): this {
    if (this.node === undefined || now === this.ms) return this;
    const t = this.time;
    if (this.timeAt >= 0 && now >= 0 && Math.floor(now / 1000) === Math.floor(this.ms / 1000)) {
      const m = now % 1000;
      t[20] = 48 + Math.floor(m / 100);
      t[21] = 48 + (Math.floor(m / 10) % 10);
      t[22] = 48 + (m % 10);
    } else {
      const iso = new Date(now).toISOString();
      if (iso.length === ISO_LENGTH) {
        if (this.timeAt < 0) this.setText(this.text0('0'.repeat(ISO_LENGTH)), true);
        t.write(iso, 0, 'latin1');
      } else {
        // A year outside 0000-9999 (a clock gone wrong): the time goes into the prefix itself.
        this.setText(this.text0(iso), false);
      }
    }
    this.ms = now;
    return this;
  }

  /** The prefix as text, with its current time. */
  text(): string {
    if (this.timeAt < 0) return this.bytes.toString();
    const b = Buffer.from(this.bytes);
    this.time.copy(b, this.timeAt);
    return b.toString();
  }

  private text0(time: string): string {
    return `{"level":"info","time":"${time}","node":${this.node},"type":"access"`;
  }

  private setText(text: string, placeholder: boolean): void {
    this.bytes = Buffer.from(text);
    this.timeAt = placeholder ? text.indexOf('"time":"') + 8 : -1;
  }
}
