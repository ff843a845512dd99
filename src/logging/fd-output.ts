import { closeSync, writeSync } from 'node:fs';
import { CHAIN_START } from './chain.js';
import type { LineBytes, LinePlace } from './line-bytes.js';

/** A pipe's block is written once this many bytes of whole lines are waiting (one write per ~7 access lines). */
export const MIN_BLOCK = 4000;
/** Largest write to a pipe that other processes write to as well: PIPE_BUF, so a block is atomic and workers sharing stdout never interleave. */
export const PIPE_BLOCK = 4096;
/**
 * Largest write to a pipe, socket or terminal this process alone writes to (stdout with one
 * worker): atomicity is not needed there. Each write wakes the reader, and with 4 KiB writes the
 * log cost three times as much on a pipe as with 64 KiB (docs/benchmarks.md "Logging and metrics").
 */
export const STREAM_BLOCK = 65_536;
/**
 * Largest write to a regular file. Files fill whole blocks of this size: a write syscall costs
 * about as much as building ten lines, so 4 KiB blocks made writing a third of the log's cost.
 */
export const FILE_BLOCK = 65_536;

interface Block {
  data: Buffer;
  lines: number;
}

/**
 * One destination: a file descriptor written synchronously (never blocking when it is a pipe
 * opened O_NONBLOCK), with a queue of whole-line blocks kept while it does not take bytes.
 * Lines are encoded straight into one reused block buffer (`place`, when the output is the
 * only one) or copied into it, and written from it: no string per block to build, flatten and
 * encode again, and nothing left for the garbage collector unless the destination stalls (then
 * the block is copied into the queue).
 */
export class FdOutput implements LinePlace {
  /** Bytes waiting: queued blocks, the part-written block and the block being filled. */
  queued = 0;
  /** Whole lines written. */
  written = 0;
  /** Hash of the last line given to this output (tamper-evident mode). */
  lastHash = CHAIN_START;
  /** Code of the error that stopped the last write (EAGAIN when a pipe is full), undefined when writing. */
  stalled: string | undefined;
  private blocks: Block[] = [];
  private next = 0;
  /** The rest of a block the destination took only part of; it goes out before anything else. */
  protected head: Block | undefined;
  /** The block being filled: `cur[0, curBytes)`. */
  private readonly cur: Buffer;
  private curBytes = 0;
  private curLines = 0;

  /** `maxBlock`: largest single write (PIPE_BLOCK for pipes, whose writes must stay atomic). */
  constructor(protected fd: number, readonly name: string, private maxBlock: number) {
    this.cur = Buffer.allocUnsafe(maxBlock);
  }

  /**
   * Keeps blocks to at most `bytes` (never below PIPE_BLOCK): the block being filled counts as
   * buffered, so a block near the buffer's size would look like a stalled destination.
   */
  capBlock(bytes: number): void {
    this.maxBlock = Math.min(this.maxBlock, Math.max(PIPE_BLOCK, bytes));
  }

  /** Marks the descriptor as this output's own, to be closed with it. */
  own(): void {
    this.owned = true;
  }

  /**
   * Queues one line already encoded, `src[start, start + bytes)`: copied, unless it was encoded
   * right where it goes (see `place`); writes a block once enough lines wait.
   */
  addBytes(src: Buffer, start: number, bytes: number): void {
    if (src === this.cur && start === this.curBytes) return this.filled(bytes);
    if (this.curBytes > 0 && this.curBytes + bytes > this.limit()) this.seal();
    if (bytes > this.cur.length) {
      this.alone(Buffer.from(src.subarray(start, start + bytes)), bytes);
      return;
    }
    src.copy(this.cur, this.curBytes, start, start + bytes);
    this.filled(bytes);
  }

  /**
   * Lets `out` encode a line of at most `bound` bytes at the end of the block being filled, so
   * `addBytes` takes it from there with no copy (a line not taken is overwritten by the next);
   * false when the bound does not fit, and the line is copied in, which fills blocks to the byte.
   */
  place(out: LineBytes, bound: number): boolean {
    if (this.curBytes + bound > this.limit()) return false;
    out.buf = this.cur;
    out.begin = out.pos = this.curBytes;
    return true;
  }

  /** True when lines are waiting in the block being filled (a flush timer should come). */
  get filling(): boolean {
    return this.curBytes > 0;
  }

  /** True when whole blocks wait for a stalled destination. */
  get behind(): boolean {
    return this.head !== undefined || this.next < this.blocks.length;
  }

  /** Closes the block being filled: written now if the destination takes bytes, else queued. */
  seal(): void {
    if (this.curBytes === 0) return;
    const bytes = this.curBytes;
    const lines = this.curLines;
    this.curBytes = 0;
    this.curLines = 0;
    if (this.stalled === undefined && !this.behind) {
      this.beforeBlock(bytes);
      this.put(this.cur, bytes, lines);
    } else {
      this.blocks.push({ data: Buffer.from(this.cur.subarray(0, bytes)), lines });
    }
  }

  /** Writes queued blocks until done or the destination stops taking bytes; true when nothing is left. */
  pump(): boolean {
    for (;;) {
      if (this.head) {
        const { data, lines } = this.head;
        this.head = undefined;
        if (!this.put(data, data.length, lines)) return false;
        continue;
      }
      if (this.next >= this.blocks.length) {
        this.blocks = [];
        this.next = 0;
        this.stalled = undefined;
        return this.curBytes === 0;
      }
      const first = this.blocks[this.next]!;
      this.beforeBlock(first.data.length);
      let data = first.data;
      let lines = first.lines;
      let count = 1;
      // Catching up on a file: several blocks in one write.
      if (this.maxBlock > PIPE_BLOCK && this.next + 1 < this.blocks.length) {
        const limit = this.limit();
        const parts = [first.data];
        let bytes = first.data.length;
        for (let b = this.blocks[this.next + count]; b && bytes + b.data.length <= limit; b = this.blocks[this.next + count]) {
          parts.push(b.data);
          bytes += b.data.length;
          lines += b.lines;
          count++;
        }
        if (count > 1) data = Buffer.concat(parts, bytes);
      }
      // Written whole or in part, the blocks leave the queue (what is left of them becomes the head).
      this.next += count;
      if (!this.put(data, data.length, lines)) {
        // Written blocks must not stay referenced while a long stall goes on.
        if (this.next >= 1024) {
          this.blocks = this.blocks.slice(this.next);
          this.next = 0;
        }
        return false;
      }
    }
  }

  /** Hook run before a new block is written (not before the rest of a part-written one): file rotation. */
  protected beforeBlock(_bytes: number): void {}

  /** How many bytes the next write may join (a file stops short of its rotation size). */
  protected room(): number {
    return this.maxBlock;
  }

  /** Hook run after bytes reached the destination. */
  protected wrote(_bytes: number): void {}

  /** Where the block being filled is written: at its size, or where the file would pass its rotation size. */
  private limit(): number {
    return Math.min(this.maxBlock, this.room());
  }

  /** Counts a line of `bytes` just put at the end of the block. */
  private filled(bytes: number): void {
    this.curBytes += bytes;
    this.curLines++;
    this.queued += bytes;
    if (this.curBytes >= this.limit() - (PIPE_BLOCK - MIN_BLOCK)) this.seal();
  }

  /** A line longer than a block is a block of its own (the block being filled is empty: see `addBytes`). */
  private alone(data: Buffer, bytes: number): void {
    this.queued += bytes;
    this.blocks.push({ data, lines: 1 });
    if (this.stalled === undefined) this.pump();
  }

  /**
   * One write of `data[0, bytes)`: true when all of it went out. Otherwise what is left becomes
   * the head, copied when `data` is the reused block buffer.
   */
  private put(data: Buffer, bytes: number, lines: number): boolean {
    const reused = data === this.cur;
    let n: number;
    try {
      n = writeSync(this.fd, data, 0, bytes);
    } catch (err) {
      this.stalled = (err as NodeJS.ErrnoException).code ?? 'EIO';
      this.head = { data: reused ? Buffer.from(data.subarray(0, bytes)) : data, lines };
      return false;
    }
    this.wrote(n);
    this.queued -= n;
    if (n >= bytes) {
      this.written += lines;
      return true;
    }
    this.head = { data: reused ? Buffer.from(data.subarray(n, bytes)) : data.subarray(n, bytes), lines };
    this.stalled = 'partial write';
    return false;
  }

  /** Reopens the destination (files only; see FileOutput). */
  reopen(): void {}

  /** Closes the descriptor if this output opened it. */
  close(): void {
    if (this.owned) closeSync(this.fd);
    this.owned = false;
  }

  /** True when this output opened its descriptor (and closes it). */
  protected owned = false;
}
