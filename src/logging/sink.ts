import { writeSync } from 'node:fs';
import { chainLine } from './chain.js';
import type { FdOutput } from './fd-output.js';
import { LineBytes, type LinePlace } from './line-bytes.js';

/** What to do when a destination stops taking lines and the buffer is full. */
export type WhenFull = 'fail_closed' | 'drop';

/** Counters for metrics and the admin listener. */
export interface SinkStats {
  buffered_bytes: number;
  dropped_lines: number;
  refused_requests: number;
  backlog_episodes: number;
  written_lines: number;
}

/** How one backlog episode ended: what the summary line says. */
export interface EpisodeSummary {
  refused: number;
  dropped: number;
  ms: number;
  whenFull: WhenFull;
}

export interface SinkOptions {
  outputs: FdOutput[];
  /** Bytes of whole lines kept per destination while it does not take them. */
  bufferBytes: number;
  whenFull: WhenFull;
  tamperEvident: boolean;
  /** Called (outside any write) when an episode ends, to write its summary line. */
  onEpisodeEnd?: (s: EpisodeSummary) => void;
  /** Where alerts go; default: fd 2, synchronously. */
  alert?: (line: string) => void;
}

/** Longest wait before a destination that stopped taking bytes is tried again (the first wait is 1 ms). */
const RETRY_MS = 15;
const FLUSH_MS = 250;

function stderr(line: string): void {
  try {
    writeSync(2, line);
  } catch {
    // Nothing else to tell it to.
  }
}

/**
 * Lines to one or more destinations, written synchronously in blocks of whole lines. A
 * destination that stops taking bytes keeps its lines in a bounded buffer, retried on a timer;
 * when that buffer is full, `fail_closed` reports `backlogged` (the listeners then refuse new
 * requests, so memory stays bounded by the buffer plus lines of requests already admitted, at
 * most twice the buffer) and `drop` drops lines, counted. Either way stderr hears of it once.
 */
export class LineSink {
  private readonly outputs: FdOutput[];
  private readonly limit: number;
  /** fail_closed: lines of admitted requests may go past the buffer up to here; beyond, they are dropped. */
  private readonly hardLimit: number;
  private readonly alert: (line: string) => void;
  private episode: { start: number; refused: number; dropped: number } | undefined;
  private dropped = 0;
  private refused = 0;
  private episodes = 0;
  private retry: NodeJS.Timeout | undefined;
  private retryMs = 1;
  private flushTimer: NodeJS.Timeout | undefined;
  private waiters: Array<() => void> = [];
  private closed = false;
  /** Where lines given as text are encoded before they are copied into the destinations' blocks. */
  private readonly text = new LineBytes(4096);

  constructor(private readonly o: SinkOptions) {
    this.outputs = o.outputs;
    this.limit = o.bufferBytes;
    // A destination that takes every block must never look backlogged: a block is at most a quarter of the buffer.
    for (const out of this.outputs) out.capBlock(Math.floor(o.bufferBytes / 4));
    this.hardLimit = 2 * o.bufferBytes;
    this.alert = o.alert ?? stderr;
  }

  /** Takes one line (ending in a newline). */
  write(line: string): void {
    if (this.closed) return;
    if (this.o.tamperEvident) return this.writeChained(line);
    this.put(this.encoded(line), 0, this.text.pos);
  }

  /**
   * Where lines may be encoded straight into a destination's block (then given to `writeBytes`
   * from there): there is one destination and lines are not hash-chained. Undefined otherwise.
   */
  get place(): LinePlace | undefined {
    return this.outputs.length === 1 && !this.o.tamperEvident ? this.outputs[0] : undefined;
  }

  /** Takes one line already encoded, `buf[start, start + bytes)` (ending in a newline), copied (or kept in place) before this returns. */
  writeBytes(buf: Buffer, start: number, bytes: number): void {
    if (this.closed) return;
    if (this.o.tamperEvident) return this.writeChained(buf.toString('utf8', start, start + bytes));
    this.put(buf, start, bytes);
  }

  /** Gives `buf[start, start + bytes)` to every destination that has room for it. */
  private put(buf: Buffer, start: number, bytes: number): void {
    let lost = false;
    for (const out of this.outputs) {
      if (!this.admit(out, bytes)) {
        lost = true;
        continue;
      }
      out.addBytes(buf, start, bytes);
      this.wrote(out);
    }
    if (lost) this.lose();
  }

  /** `line` encoded as UTF-8 into the reused `text` buffer (its bytes end at `text.pos`). */
  private encoded(line: string): Buffer {
    this.text.start(3 * line.length);
    this.text.text(line);
    return this.text.buf;
  }

  private writeChained(line: string): void {
    let chained: { prev: string; hash: string; bytes: number } | undefined;
    let lost = false;
    for (const out of this.outputs) {
      // Outputs that saw the same lines share one hash computation (and its encoding in `text`).
      if (chained?.prev !== out.lastHash) {
        const c = chainLine(line, out.lastHash);
        this.encoded(c.line);
        chained = { prev: out.lastHash, hash: c.hash, bytes: this.text.pos };
      }
      if (!this.admit(out, chained.bytes)) {
        lost = true;
        continue;
      }
      out.lastHash = chained.hash;
      out.addBytes(this.text.buf, 0, chained.bytes);
      this.wrote(out);
    }
    if (lost) this.lose();
  }

  /** False when `out` has no room for `bytes` more and the line is lost to it. */
  private admit(out: FdOutput, bytes: number): boolean {
    if (out.queued + bytes <= this.limit) return true;
    this.startEpisode(out);
    return this.o.whenFull !== 'drop' && out.queued + bytes <= this.hardLimit;
  }

  /** After a line went to `out`: retry a stalled destination, or flush a part-filled block soon. */
  private wrote(out: FdOutput): void {
    if (out.stalled !== undefined) this.retryLater();
    else if (out.filling && this.flushTimer === undefined) this.flushTimer = setTimeout(() => this.tick(), FLUSH_MS).unref();
  }

  private lose(): void {
    this.dropped++;
    if (this.episode) this.episode.dropped++;
  }

  /** True while new requests must be refused (fail_closed, buffer full until it drains below half). */
  get backlogged(): boolean {
    return this.episode !== undefined && this.o.whenFull === 'fail_closed';
  }

  /** True (and counted) when a new request must be refused because the log is backlogged. */
  refuse(): boolean {
    if (!this.backlogged) return false;
    this.refused++;
    this.episode!.refused++;
    return true;
  }

  stats(): SinkStats {
    let buffered = 0;
    let written = Infinity;
    for (const out of this.outputs) {
      buffered += out.queued;
      written = Math.min(written, out.written);
    }
    return {
      buffered_bytes: buffered, dropped_lines: this.dropped, refused_requests: this.refused,
      backlog_episodes: this.episodes, written_lines: written === Infinity ? 0 : written,
    };
  }

  /** Writes what it can now, without waiting (best effort: a stalled destination keeps its lines). */
  flush(): boolean {
    let done = true;
    for (const out of this.outputs) {
      out.seal();
      if (!out.pump()) done = false;
    }
    this.settle();
    if (done) this.retryMs = 1;
    else this.retryLater();
    return done;
  }

  /** Resolves once everything buffered is written, or after `timeoutMs`. */
  flushed(timeoutMs = 5000): Promise<void> {
    if (this.flush()) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, timeoutMs);
      function done(): void {
        clearTimeout(t);
        resolve();
      }
      this.waiters.push(done);
    });
  }

  reopen(): void {
    for (const out of this.outputs) out.reopen();
  }

  close(): void {
    this.flush();
    this.closed = true;
    clearTimeout(this.retry);
    clearTimeout(this.flushTimer);
    for (const out of this.outputs) out.close();
    for (const w of this.waiters.splice(0)) w();
  }

  private startEpisode(out: FdOutput): void {
    if (this.episode) return;
    this.episode = { start: Date.now(), refused: 0, dropped: 0 };
    this.episodes++;
    const why = out.stalled ?? 'not keeping up';
    this.alert(this.o.whenFull === 'fail_closed'
      ? `egress-proxy: ALERT access log backlogged: ${out.name} is not taking lines (${why}); ${out.queued} bytes buffered; refusing new requests with 503 log_backlog until it drains (log.when_full: fail_closed)\n`
      : `egress-proxy: ALERT access log backlogged: ${out.name} is not taking lines (${why}); dropping lines until it drains (log.when_full: drop)\n`);
  }

  /** Ends the episode once every destination is below half the buffer; resolves waiters when all is written. */
  private settle(): void {
    let max = 0;
    let behind = false;
    for (const out of this.outputs) {
      max = Math.max(max, out.queued);
      if (out.behind || out.filling) behind = true;
    }
    if (this.episode && max < this.limit / 2) {
      const e = this.episode;
      this.episode = undefined;
      const summary: EpisodeSummary = { refused: e.refused, dropped: e.dropped, ms: Date.now() - e.start, whenFull: this.o.whenFull };
      this.alert(`egress-proxy: access log caught up after ${summary.ms} ms; ${this.o.whenFull === 'fail_closed' ? `refused ${e.refused} requests` : `dropped ${e.dropped} lines`} meanwhile\n`);
      // Outside the write in progress: the summary is itself a line.
      if (this.o.onEpisodeEnd) setImmediate(this.o.onEpisodeEnd, summary);
    }
    if (!behind && this.waiters.length > 0) for (const w of this.waiters.splice(0)) w();
  }

  /**
   * Tries again soon, then less and less often: a reader that lags for a moment (a pipe filled
   * by one 64 KiB block) is caught up with at once, and one that stalls costs a timer every 15 ms.
   */
  private retryLater(): void {
    if (this.retry !== undefined) return;
    this.retry = setTimeout(() => this.tick(), this.retryMs).unref();
    this.retryMs = Math.min(RETRY_MS, 2 * this.retryMs);
  }

  private tick(): void {
    clearTimeout(this.retry);
    clearTimeout(this.flushTimer);
    this.retry = undefined;
    this.flushTimer = undefined;
    if (this.closed) return;
    this.flush();
  }
}
