import { closeSync, writeSync } from 'node:fs';
import { CHAIN_START } from './chain.js';

/** A pipe's block is written once this many bytes of whole lines are waiting (one write per ~7 access lines). */
export const MIN_BLOCK = 4000;
/** Largest write to a pipe: PIPE_BUF, so a block is atomic and workers sharing stdout never interleave. */
export const PIPE_BLOCK = 4096;
/**
 * Largest write to a regular file. Files fill whole blocks of this size: a write syscall costs
 * about as much as building ten lines, so 4 KiB blocks made writing a third of the log's cost.
 */
export const FILE_BLOCK = 65_536;

interface Block {
  s: string;
  bytes: number;
  lines: number;
}

/**
 * One destination: a file descriptor written synchronously (never blocking when it is a pipe
 * opened O_NONBLOCK), with a queue of whole-line blocks kept while it does not take bytes.
 */
export class FdOutput {
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
  protected head: { data: Buffer; lines: number } | undefined;
  private cur = '';
  private curBytes = 0;
  private curLines = 0;

  /** `maxBlock`: largest single write (PIPE_BLOCK for pipes, whose writes must stay atomic). */
  constructor(protected fd: number, readonly name: string, private readonly maxBlock: number) {}

  /** Marks the descriptor as this output's own, to be closed with it. */
  own(): void {
    this.owned = true;
  }

  /** Queues one line; writes a block once enough lines wait, unless the destination is stalled. */
  add(line: string, bytes: number): void {
    // A file's block also stops where the file would pass its rotation size.
    const max = Math.min(this.maxBlock, this.room());
    if (this.curBytes + bytes > max && this.curBytes > 0) {
      this.seal();
      if (this.stalled === undefined) this.pump();
    }
    this.cur += line;
    this.curBytes += bytes;
    this.curLines++;
    this.queued += bytes;
    if (this.curBytes >= max - (PIPE_BLOCK - MIN_BLOCK)) {
      this.seal();
      if (this.stalled === undefined) this.pump();
    }
  }

  /** True when lines are waiting in the block being filled (a flush timer should come). */
  get filling(): boolean {
    return this.curBytes > 0;
  }

  /** True when whole blocks wait for a stalled destination. */
  get behind(): boolean {
    return this.head !== undefined || this.next < this.blocks.length;
  }

  /** Closes the block being filled so the next pump writes it. */
  seal(): void {
    if (this.curBytes === 0) return;
    this.blocks.push({ s: this.cur, bytes: this.curBytes, lines: this.curLines });
    this.cur = '';
    this.curBytes = 0;
    this.curLines = 0;
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
      this.beforeBlock(first.bytes);
      let data = first.s;
      let bytes = first.bytes;
      let lines = first.lines;
      let count = 1;
      // Catching up on a file: several blocks in one write.
      if (this.maxBlock > PIPE_BLOCK && this.next + 1 < this.blocks.length) {
        const limit = Math.min(this.maxBlock, this.room());
        const parts = [first.s];
        for (let b = this.blocks[this.next + count]; b && bytes + b.bytes <= limit; b = this.blocks[this.next + count]) {
          parts.push(b.s);
          bytes += b.bytes;
          lines += b.lines;
          count++;
        }
        if (count > 1) data = parts.join('');
      }
      const done = this.put(data, bytes, lines);
      // Written whole or in part, the blocks left the queue (the rest, if any, is now the head).
      if (done || this.head) this.next += count;
      if (!done) {
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

  /** One write: true when all of `data` went out; a part-write keeps the rest as the head. */
  private put(data: string | Buffer, bytes: number, lines: number): boolean {
    let n: number;
    try {
      n = typeof data === 'string' ? writeSync(this.fd, data) : writeSync(this.fd, data);
    } catch (err) {
      this.stalled = (err as NodeJS.ErrnoException).code ?? 'EIO';
      if (typeof data !== 'string') this.head = { data, lines };
      return false;
    }
    this.wrote(n);
    this.queued -= n;
    if (n >= bytes) {
      this.written += lines;
      return true;
    }
    this.head = { data: (typeof data === 'string' ? Buffer.from(data) : data).subarray(n), lines };
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
