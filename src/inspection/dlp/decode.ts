import { Busboy, type BusboyFileStream, type BusboyInstance } from '@fastify/busboy';
import { Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate, createInflateRaw } from 'node:zlib';
import { FileSniffer } from './filetype.js';
import type { CompiledProfile } from './profile.js';
import { Scanner, type Base64Budget } from './scanner.js';
import { Tally, type FileFinding, type Unscanned, type Verdict } from './tally.js';
import { decoderFor, type TextDecoder } from './text-decoders.js';

/** What the request path knows about a body. */
export interface BodyInfo {
  /** The Content-Type header (multipart boundary, JSON, form-urlencoded). */
  contentType?: string;
  /** The Content-Encoding header: gzip, x-gzip, deflate, br, identity, or a list of them. */
  contentEncoding?: string;
  /** upload: a request body; download: a response body (file_types.direction). */
  direction: 'upload' | 'download';
  /** Called once, as soon as the verdict is certain to be block (the caller may abort early). */
  onBlock?: () => void;
}

/** Content-Encoding output is not allowed to exceed the input this many times (plus 1 MiB). */
const RATIO_SLACK = 1 << 20;
const MULTIPART_PARTS = 1000;

/** Media type in lower case, without parameters. */
function mediaType(contentType: string | undefined): string {
  return (contentType ?? '').split(';')[0]!.trim().toLowerCase();
}

/** A scanner plus the text decoder its media type needs, and a sniffer when file types are checked. */
class Stream {
  private readonly decoder: TextDecoder;
  readonly scanner: Scanner;
  readonly sniffer: FileSniffer | undefined;
  constructor(insp: BodyInspector, type: string, readonly part?: { field: string; filename?: string }) {
    this.decoder = decoderFor(type);
    this.scanner = new Scanner(insp.profile, insp.tally, { maxBytes: Number.MAX_SAFE_INTEGER, base64: insp.base64 });
    this.sniffer = insp.sniffing ? new FileSniffer({ maxBytes: insp.profile.maxScanBytes }) : undefined;
  }

  write(chunk: Buffer): void {
    this.sniffer?.write(chunk);
    this.scanner.write(this.decoder.push(chunk, false));
  }

  end(): void {
    this.scanner.write(this.decoder.push(Buffer.alloc(0), true));
    this.scanner.end();
  }

  sync(): void {
    this.scanner.sync();
  }
}

/** Makes a decompressor emit all it can of what it was given; resolves when it has (or is gone). */
function flushed(z: Transform): Promise<void> {
  if (z.destroyed || z.writableEnded) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => { z.off('close', done); resolve(); };
    z.once('close', done);
    (z as Transform & { flush(cb: () => void): void }).flush(done);
  });
}

/**
 * Inspects one HTTP body as it streams: Content-Encoding is undone, multipart parts are
 * split out (each file typed by its magic bytes), JSON and form values are unescaped, base64
 * blocks decoded, and everything is scanned with the profile's detectors.
 *
 *   const insp = new BodyInspector(profile, { contentType, contentEncoding, direction: 'upload' });
 *   for await (const chunk of req) if (!insp.write(chunk)) await insp.drained();
 *   const verdict = await insp.end();
 */
export class BodyInspector {
  readonly profile: CompiledProfile;
  readonly tally: Tally;
  /** File types are checked for this body's direction. */
  readonly sniffing: boolean;
  /** Decoded base64 allowed for the whole body, shared by its parts. */
  readonly base64: Base64Budget;
  private readonly info: BodyInfo;
  private readonly blockKinds: ReadonlySet<string>;
  private rawBytes = 0;
  private decodedBytes = 0;
  private truncated = false;
  private unscanned: Unscanned | undefined;
  private error: string | undefined;
  private readonly files: FileFinding[] = [];
  private readonly zlib: Transform[] = [];
  private main: Stream | undefined;
  private busboy: BusboyInstance | undefined;
  private readonly waits: Promise<void>[] = [];
  /** Multipart parts still being written. */
  private readonly parts = new Set<Stream>();
  private ended = false;
  private blockSignalled = false;

  constructor(profile: CompiledProfile, info: BodyInfo) {
    this.profile = profile;
    this.info = info;
    this.tally = new Tally(profile);
    this.tally.onBlock = () => this.signalBlock();
    this.base64 = { left: profile.decode.base64MaxBytes, capped: false };
    const ft = profile.fileTypes;
    this.sniffing = ft !== undefined && (ft.direction === 'both' || ft.direction === info.direction);
    this.blockKinds = ft?.block ?? new Set();
    this.setupEncodings();
    if (this.unscanned) return;
    const type = mediaType(info.contentType);
    if (type.startsWith('multipart/')) this.setupMultipart(info.contentType!);
    else this.main = new Stream(this, type);
  }

  /** True once the verdict is certain to be block. */
  get blocked(): boolean {
    return this.blockSignalled;
  }

  /** Feeds raw body bytes. false: wait for drained() before writing more (decompression lags). */
  write(chunk: Uint8Array): boolean {
    if (this.ended) throw new Error('BodyInspector.write after end');
    const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    this.rawBytes += buf.length;
    if (this.unscanned) return true;
    const first = this.zlib[0];
    if (first) return first.write(buf);
    this.decoded(buf);
    return true;
  }

  /** Resolves when the decompressor has room again. */
  drained(): Promise<void> {
    const first = this.zlib[0];
    if (!first || !first.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => { first.off('drain', done); first.off('close', done); resolve(); };
      first.on('drain', done);
      first.on('close', done);
    });
  }

  /**
   * Resolves once everything written so far is decoded and scanned, but for a short tail (the
   * last MAX_MATCH bytes a scanner keeps for matches that go on, a partial escape or multipart
   * boundary): what a streamed upload may release before the verdict.
   */
  async sync(): Promise<void> {
    for (const z of this.zlib) await flushed(z);
    this.main?.sync();
    for (const st of this.parts) st.sync();
  }

  /** Ends the body and returns the verdict (after decompression and multipart parsing finish). */
  async end(): Promise<Verdict> {
    if (!this.ended) {
      this.ended = true;
      const first = this.zlib[0];
      if (first && !first.destroyed) {
        const last = this.zlib[this.zlib.length - 1]!;
        const done = new Promise<void>((resolve) => { last.once('end', resolve); last.once('close', resolve); });
        first.end();
        await done;
      }
      this.finishContent();
      // Parts found while the parser finishes add waits of their own.
      for (let i = 0; i < this.waits.length; i++) await this.waits[i];
      if (this.base64.capped && !this.unscanned) this.stop('oversize');
    }
    return this.tally.verdict({
      files: this.files,
      scannedBytes: this.decodedBytes,
      truncated: this.truncated,
      ...(this.unscanned ? { unscanned: this.unscanned } : {}),
      ...(this.error ? { error: this.error } : {}),
    });
  }

  private signalBlock(): void {
    if (this.blockSignalled) return;
    this.blockSignalled = true;
    this.info.onBlock?.();
  }

  private stop(reason: Unscanned, error?: string): void {
    if (!this.unscanned) this.unscanned = reason;
    if (error && !this.error) this.error = error;
    this.truncated = true;
    for (const z of this.zlib) z.destroy();
    if (reason === 'undecodable' && this.profile.undecodable === 'block') this.signalBlock();
    if (reason !== 'undecodable' && this.profile.oversize === 'block') this.signalBlock();
  }

  // Content-Encoding: each listed coding undone in reverse order, through zlib streams.

  private setupEncodings(): void {
    const codings = (this.info.contentEncoding ?? '').split(',').map((c) => c.trim().toLowerCase()).filter((c) => c && c !== 'identity');
    if (codings.length > 4) return this.stop('undecodable', `too many content codings: ${codings.length}`);
    for (const c of codings.reverse()) {
      let z: Transform;
      if (c === 'gzip' || c === 'x-gzip') z = createGunzip();
      else if (c === 'br') z = createBrotliDecompress();
      else if (c === 'deflate') z = new DeflateEither();
      else return this.stop('undecodable', `unsupported content coding: ${c.slice(0, 32)}`);
      const prev = this.zlib[this.zlib.length - 1];
      if (prev) prev.pipe(z);
      this.zlib.push(z);
      z.on('error', (err: Error) => this.stop('undecodable', `${c}: ${err.message}`));
    }
    this.zlib[this.zlib.length - 1]?.on('data', (b: Buffer) => this.decoded(b));
  }

  /** Bytes after Content-Encoding: counted against the limits, then parsed and scanned. */
  private decoded(buf: Buffer): void {
    if (this.truncated) return;
    const room = this.profile.maxScanBytes - this.decodedBytes;
    if (buf.length > room) {
      if (room > 0) this.content(buf.subarray(0, room));
      this.decodedBytes += Math.max(0, room);
      return this.stop('oversize');
    }
    this.decodedBytes += buf.length;
    if (this.zlib.length > 0 && this.decodedBytes > RATIO_SLACK && this.decodedBytes > this.profile.decode.maxRatio * this.rawBytes) {
      this.content(buf);
      return this.stop('decompression_ratio');
    }
    this.content(buf);
  }

  private content(buf: Buffer): void {
    if (this.busboy) this.busboy.write(buf);
    else this.main?.write(buf);
    if (this.main) this.checkEarly(this.main);
  }

  private finishContent(): void {
    if (this.main) this.closeStream(this.main);
    if (this.busboy && !this.busboy.destroyed) {
      const bb = this.busboy;
      this.waits.push(new Promise<void>((resolve) => {
        bb.once('finish', resolve);
        bb.once('close', resolve);
        bb.once('error', () => resolve());
      }));
      bb.end();
    }
  }

  private closeStream(st: Stream): void {
    st.end();
    const sniffed = st.sniffer?.end();
    if (sniffed && sniffed.kinds.length > 0) {
      const blocked = sniffed.kinds.some((k) => this.blockKinds.has(k));
      this.files.push({ ...(st.part ? { part: st.part } : {}), type: sniffed.type, kinds: sniffed.kinds, blocked });
      if (blocked) this.signalBlock();
    }
  }

  /** Executables and other settled types can be blocked from their first bytes. */
  private checkEarly(st: Stream): void {
    if (this.blockSignalled || !st.sniffer?.settled) return;
    if (st.sniffer.result().kinds.some((k) => this.blockKinds.has(k))) this.signalBlock();
  }

  // multipart/form-data: every part (field or file) scanned on its own, files sniffed.

  private setupMultipart(contentType: string): void {
    let bb: BusboyInstance;
    try {
      bb = Busboy({
        headers: { 'content-type': contentType },
        isPartAFile: () => true,
        limits: { parts: MULTIPART_PARTS, headerPairs: 100 },
      });
    } catch (err) {
      return this.stop('undecodable', `multipart: ${(err as Error).message}`);
    }
    this.busboy = bb;
    bb.on('file', (field: string, file: BusboyFileStream, filename: string | undefined, _enc: string, mime: string) => {
      const st = new Stream(this, (mime ?? '').toLowerCase(), { field, ...(filename !== undefined ? { filename } : {}) });
      this.parts.add(st);
      file.on('data', (b: Buffer) => {
        st.write(b);
        this.checkEarly(st);
      });
      this.waits.push(new Promise<void>((resolve) => {
        const done = (): void => {
          file.off('end', done);
          file.off('error', done);
          this.parts.delete(st);
          this.closeStream(st);
          resolve();
        };
        file.on('end', done);
        file.on('error', done);
      }));
    });
    bb.on('partsLimit', () => this.stop('oversize'));
    bb.on('error', (err: Error) => {
      // Cut short by max_scan_bytes, the multipart data is incomplete: that is not an error.
      if (!this.truncated) this.stop('undecodable', `multipart: ${err.message}`);
    });
  }
}

/**
 * HTTP "deflate" should be zlib-wrapped, but some servers send raw deflate: the first byte
 * tells them apart (a zlib header has compression method 8 in its low nibble).
 */
class DeflateEither extends Transform {
  private inner: Transform | undefined;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (chunk.length === 0) return cb(); // a flush marker: no byte to tell the format by
    if (!this.inner) {
      this.inner = (chunk[0]! & 0x0f) === 8 ? createInflate() : createInflateRaw();
      this.inner.on('data', (d: Buffer) => this.push(d));
      this.inner.on('error', (e: Error) => this.destroy(e));
    }
    if (this.inner.write(chunk)) cb();
    else this.inner.once('drain', () => cb());
  }

  override _flush(cb: (err?: Error | null) => void): void {
    if (!this.inner) return cb();
    this.inner.once('end', () => cb());
    this.inner.end();
  }

  /** As zlib's flush: what was written so far comes out, then `cb`. */
  flush(cb: () => void): void {
    // Writes reach `inner` through _transform: queue behind them, then flush it.
    this.write(Buffer.alloc(0), () => (this.inner ? flushed(this.inner).then(cb) : cb()));
  }
}
