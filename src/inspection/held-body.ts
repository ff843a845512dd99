import type { SpoolFile } from './spool.js';

/** Bytes came for a body already let go (its exchange ended). */
export class LetGoError extends Error {}

/**
 * A request body held back from the destination while DLP decides: in memory, and past
 * `hold_bytes` in a spool file (then later bytes join it until `stopSpooling`). Bytes leave in
 * the order they came, and only as far as the caller allows (`letOut`).
 */
export class HeldBody {
  /** Bytes added so far. */
  size = 0;
  private mem: Buffer[] = [];
  private file: SpoolFile | undefined;
  private spooling = false;
  private reader: AsyncGenerator<Buffer> | undefined;
  /** Read back from the file, not let out yet. */
  private next: Buffer | undefined;
  private fileDone = false;
  private out = 0;
  private closed = false;

  /** True once the body went to disk. */
  get onDisk(): boolean {
    return this.file !== undefined;
  }

  /** True while `bytes` more may go to disk (the spool directory's total). */
  fitsOnDisk(bytes: number): boolean {
    return this.spooling && this.file!.fits(bytes);
  }

  /** Moves what is held in memory to `file`; bytes added later go there too. */
  async spill(file: SpoolFile): Promise<void> {
    this.file = file;
    this.spooling = true;
    for (const c of this.mem) await file.write(c);
    this.mem = [];
  }

  /** Later bytes are kept in memory: they leave soon (after what is on disk). */
  stopSpooling(): void {
    this.spooling = false;
  }

  async add(chunk: Buffer): Promise<void> {
    if (this.closed) throw new LetGoError('the held body was let go');
    this.size += chunk.length;
    if (this.spooling) await this.file!.write(chunk);
    else this.mem.push(chunk);
  }

  /** The whole body, when nothing went to disk (null when empty). */
  whole(): Buffer | null {
    return this.mem.length === 0 ? null : this.mem.length === 1 ? this.mem[0]! : Buffer.concat(this.mem, this.size);
  }

  /** Lets out held bytes from the front, in order, while each piece ends at or before byte `upTo` of the body. */
  async *letOut(upTo: number): AsyncGenerator<Buffer> {
    if (this.file !== undefined && !this.fileDone) {
      this.stopSpooling();
      this.reader ??= this.file.read();
      for (;;) {
        if (this.next === undefined) {
          const r = await this.reader.next();
          if (r.done) break;
          this.next = r.value;
        }
        if (this.out + this.next.length > upTo) return;
        const piece = this.next;
        this.next = undefined;
        this.out += piece.length;
        yield piece;
      }
      this.fileDone = true;
      await this.file.close();
    }
    while (this.mem.length > 0 && this.out + this.mem[0]!.length <= upTo) {
      const c = this.mem.shift()!;
      this.out += c.length;
      yield c;
    }
  }

  /** Lets go of everything held (the spool file is freed); safe to call more than once. */
  async close(): Promise<void> {
    this.closed = true;
    this.mem = [];
    this.next = undefined;
    await this.file?.close();
  }
}
