import { connect, type Socket } from 'node:net';
import { IcapFailure } from './icap-wire.js';

// Past this many unread bytes the socket is paused: a server that floods cannot grow memory.
const HIGH_WATER = 1 << 20;
const MAX_LINE = 4096;
const EMPTY = Buffer.alloc(0);
const CRLF = Buffer.from('\r\n', 'latin1');

/**
 * One TCP connection to an ICAP server with a pull-style reader. Every wait for bytes is bounded
 * by `idleMs` and by the caller's deadline; a timeout rejects with `icap_timeout`.
 */
export class IcapConnection {
  private buf: Buffer = EMPTY;
  private closed: string | null = null;
  private wake: (() => void) | null = null;
  private parkTimer: NodeJS.Timeout | null = null;
  /** Transactions started on this connection (more than one means it came from the pool). */
  uses = 0;
  /** Bytes received in the current transaction. */
  received = 0;

  private constructor(private readonly socket: Socket, private readonly idleMs: number, private readonly onGone: (c: IcapConnection) => void) {
    socket.on('data', (d: Buffer) => {
      // Bytes nobody asked for mean the two sides disagree on framing: never reuse it.
      if (this.parkTimer) { this.destroy(); return; }
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.received += d.length;
      if (this.buf.length > HIGH_WATER) socket.pause();
      this.notify();
    });
    socket.on('end', () => this.gone('closed by the ICAP server'));
    socket.on('error', (e: NodeJS.ErrnoException) => this.gone(e.code ?? e.message));
    socket.on('close', () => this.gone('closed'));
  }

  /** Connects, bounded by `idleMs` and the deadline. */
  static open(host: string, port: number, idleMs: number, deadline: number, onGone: (c: IcapConnection) => void): Promise<IcapConnection> {
    const wait = Math.min(idleMs, deadline - Date.now());
    if (wait <= 0) return Promise.reject(new IcapFailure('icap_timeout', 'no time left to connect to the ICAP server'));
    return new Promise((resolve, reject) => {
      const s = connect({ host, port });
      const timer = setTimeout(() => { s.destroy(); reject(new IcapFailure('icap_timeout', `connect to ${host}:${port} took longer than ${wait}ms`)); }, wait);
      const onError = (e: NodeJS.ErrnoException): void => {
        clearTimeout(timer);
        s.destroy();
        reject(new IcapFailure('icap_unavailable', `connect to ${host}:${port}: ${e.code ?? e.message}`));
      };
      s.once('error', onError);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeListener('error', onError);
        s.setNoDelay(true);
        resolve(new IcapConnection(s, idleMs, onGone));
      });
    });
  }

  /** True while the socket can carry another transaction. */
  get usable(): boolean { return this.closed === null && !this.socket.destroyed; }

  /** Everything written was handed to the kernel; an answer that came earlier leaves the stream state unknown. */
  get drained(): boolean { return this.socket.writableLength === 0; }

  /** Starts a transaction: counts it and resets the received-bytes counter. */
  begin(): void {
    if (this.parkTimer) { clearTimeout(this.parkTimer); this.parkTimer = null; }
    this.uses += 1;
    this.received = 0;
  }

  /** Queues bytes; a failed write surfaces as the connection closing, seen by the next read. */
  write(parts: Buffer[]): void {
    if (!this.usable) return;
    for (const p of parts) if (p.length > 0) this.socket.write(p);
  }

  /** Parks an idle keep-alive connection; it closes itself after `keepMs`. */
  park(keepMs: number): void {
    this.parkTimer = setTimeout(() => this.destroy(), keepMs);
    this.parkTimer.unref();
    this.socket.unref();
  }

  /** Takes a parked connection back into use. */
  unpark(): void {
    this.socket.ref();
    this.begin();
  }

  /** Closes the socket now. */
  destroy(): void {
    this.gone('destroyed');
    this.socket.destroy();
  }

  /** Reads through `delim` (included); a head longer than `max` is a protocol error. */
  async readUntil(delim: Buffer, max: number, deadline: number, what: string): Promise<Buffer> {
    for (;;) {
      const i = this.buf.indexOf(delim);
      if (i >= 0 && i + delim.length <= max) return this.take(i + delim.length);
      if (i >= 0 || this.buf.length > max) throw new IcapFailure('icap_protocol', `${what} longer than ${max} bytes`);
      await this.more(deadline, what);
    }
  }

  /** Reads exactly `n` bytes. */
  async readExact(n: number, deadline: number, what: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    let need = n;
    for (;;) {
      const got = this.take(Math.min(need, this.buf.length));
      if (got.length > 0) parts.push(got);
      need -= got.length;
      if (need === 0) return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      await this.more(deadline, what);
    }
  }

  /** Reads a chunked body; more than `max` decoded bytes is `icap_too_large`. */
  async readChunked(max: number, deadline: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let total = 0;
    for (;;) {
      const line = (await this.readUntil(CRLF, MAX_LINE, deadline, 'chunk size line')).toString('latin1');
      const m = /^([0-9a-fA-F]{1,8})[ \t]*(?:;[^\r\n]*)?\r\n$/.exec(line);
      if (!m) throw new IcapFailure('icap_protocol', `bad chunk size line ${JSON.stringify(line.slice(0, 40))}`);
      const size = parseInt(m[1]!, 16);
      if (size === 0) {
        // Trailer fields (rare in ICAP) up to the empty line.
        for (let i = 0; ; i++) {
          const t = await this.readUntil(CRLF, MAX_LINE, deadline, 'chunk trailer');
          if (t.length === 2) break;
          if (i >= 64) throw new IcapFailure('icap_protocol', 'too many chunk trailer lines');
        }
        return Buffer.concat(parts, total);
      }
      total += size;
      if (total > max) throw new IcapFailure('icap_too_large', `ICAP response body larger than ${max} bytes`);
      parts.push(await this.readExact(size, deadline, 'chunk data'));
      const end = await this.readExact(2, deadline, 'chunk end');
      if (!end.equals(CRLF)) throw new IcapFailure('icap_protocol', 'chunk data not followed by CRLF');
    }
  }

  private take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const out = this.buf.subarray(0, n);
    this.buf = n === this.buf.length ? EMPTY : this.buf.subarray(n);
    return out;
  }

  private more(deadline: number, what: string): Promise<void> {
    if (this.closed !== null) {
      // Nothing at all on a reused connection: the server dropped it while idle; a retry is safe.
      return Promise.reject(this.received === 0
        ? new IcapFailure('icap_unavailable', `ICAP connection ${this.closed} before any answer`, this.uses > 1)
        : new IcapFailure('icap_protocol', `ICAP connection ${this.closed} in the middle of the ${what}`));
    }
    const wait = Math.min(this.idleMs, deadline - Date.now());
    if (wait <= 0) return Promise.reject(new IcapFailure('icap_timeout', `ICAP server did not send the ${what} in time`));
    if (this.socket.isPaused()) this.socket.resume();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.wake = null;
        reject(new IcapFailure('icap_timeout', `ICAP server did not send the ${what} within ${wait}ms`));
      }, wait);
      this.wake = () => { clearTimeout(timer); this.wake = null; resolve(); };
    });
  }

  private notify(): void { this.wake?.(); }

  private gone(why: string): void {
    if (this.closed !== null) return;
    this.closed = why;
    if (this.parkTimer) { clearTimeout(this.parkTimer); this.parkTimer = null; }
    this.onGone(this);
    this.notify();
  }
}
