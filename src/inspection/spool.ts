import { createCipheriv, createDecipheriv, randomBytes, type Cipher } from 'node:crypto';
import { lstatSync, mkdirSync } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

/** Bytes read back from a spool file at a time. */
const READ_BYTES = 256 * 1024;
/** Encrypted chunks gathered before one write to the file (fewer thread-pool round trips and syscalls). */
const WRITE_BYTES = 1024 * 1024;

/**
 * Where large request bodies wait on disk for their DLP verdict (inspection.spool_*): each body
 * in a file of its own, opened 0600 and unlinked at once (nothing is left behind, even by a
 * crash), encrypted with a key that lives only in this process's memory (a secret in an upload
 * never lands on disk in clear), and counted against a total.
 */
export class SpoolDir {
  /** Bytes held on disk now, by all bodies. */
  used = 0;
  /** Bodies that went to disk. */
  opened = 0;
  /** Bodies that streamed instead, or stopped spooling, because the total was reached. */
  full = 0;
  private made = false;

  constructor(readonly dir: string, readonly totalBytes: number) {}

  /** Makes the directory if need be and checks that it is the proxy user's own, mode 0700; throws otherwise. */
  prepare(): void {
    if (this.made) return;
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    // In a shared temp dir someone else may have made it first: only our own private directory will do.
    const st = lstatSync(this.dir);
    const uid = process.getuid?.();
    if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (st.mode & 0o077) !== 0) {
      throw new Error(`spool directory ${this.dir} must be a directory of this user's with mode 0700`);
    }
    this.made = true;
  }

  /** True while `bytes` more fit under the total. */
  fits(bytes: number): boolean {
    return this.used + bytes <= this.totalBytes;
  }

  /** A new spool file for one body, or undefined when `bytes` more would pass the total. */
  async open(bytes: number): Promise<SpoolFile | undefined> {
    if (!this.fits(bytes)) {
      this.full++;
      return undefined;
    }
    this.prepare();
    const path = join(this.dir, `body-${randomBytes(12).toString('hex')}`);
    const fh = await open(path, 'wx+', 0o600);
    try {
      await unlink(path);
    } catch (err) {
      await fh.close();
      throw err;
    }
    this.opened++;
    return new SpoolFile(this, fh);
  }
}

/** One body on disk: appended to while held, then read back once, in order. */
export class SpoolFile {
  /** Bytes written (or waiting in `pending` to be). */
  size = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly key = randomBytes(32);
  private readonly iv = randomBytes(16);
  private readonly cipher: Cipher;
  private closed = false;

  constructor(private readonly owner: SpoolDir, private readonly fh: FileHandle) {
    this.cipher = createCipheriv('aes-256-ctr', this.key, this.iv);
  }

  /** True while `bytes` more fit under the directory's total. */
  fits(bytes: number): boolean {
    return this.owner.fits(bytes);
  }

  /** Appends `chunk` (encrypted); it reaches the file with the next megabyte or so. */
  async write(chunk: Buffer): Promise<void> {
    const data = this.cipher.update(chunk);
    this.owner.used += data.length;
    this.size += data.length;
    this.pending.push(data);
    this.pendingBytes += data.length;
    if (this.pendingBytes >= WRITE_BYTES) await this.flush();
  }

  /** Writes what waits in memory (one writev). */
  private async flush(): Promise<void> {
    if (this.pendingBytes === 0) return;
    const bufs = this.pending;
    const bytes = this.pendingBytes;
    const at = this.size - bytes;
    this.pending = [];
    this.pendingBytes = 0;
    const { bytesWritten } = await this.fh.writev(bufs, at);
    if (bytesWritten !== bytes) throw new Error(`short write to the spool file: ${bytesWritten} of ${bytes} bytes`);
  }

  /** The bytes written, decrypted, in pieces of up to 256 KiB. */
  async *read(): AsyncGenerator<Buffer> {
    await this.flush();
    const decipher = createDecipheriv('aes-256-ctr', this.key, this.iv);
    const buf = Buffer.allocUnsafe(Math.min(READ_BYTES, this.size));
    for (let at = 0; at < this.size;) {
      const { bytesRead } = await this.fh.read(buf, 0, Math.min(buf.length, this.size - at), at);
      if (bytesRead === 0) throw new Error(`spool file ended at ${at} of ${this.size} bytes`);
      at += bytesRead;
      yield decipher.update(buf.subarray(0, bytesRead)); // a new buffer: `buf` is read into again
    }
  }

  /** Frees the file (its space returns to the total); safe to call more than once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.owner.used -= this.size;
    this.pending = [];
    await this.fh.close();
  }
}
