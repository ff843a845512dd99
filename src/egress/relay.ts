import type { Socket } from 'node:net';

const BIG = 64 * 1024;
const SMALL = 2 * 1024;
// Free 64 KiB read buffers shared by all tunnels; bounded so a burst does not pin memory forever.
const pool: Buffer[] = [];
const POOL_MAX = 128;

/**
 * Reads the destination's bytes into a reused buffer (Node's `onread`) and writes them to the
 * client, instead of a fresh 64 KiB allocation per read: the download direction of a tunnel is
 * the hot byte path, and the garbage and page faults of per-read buffers cost more CPU than the
 * copy. A tunnel holds a 64 KiB buffer only while data streams (the last read filled its buffer)
 * and a 2 KiB one while idle, so 10,000 idle tunnels stay cheap. A buffer is never refilled
 * while a write of it is still queued: reading pauses until the client has taken the bytes.
 */
export class DownstreamRelay {
  private big: Buffer | undefined;
  private small: Buffer | undefined;
  private nextBig = false;
  private waiting = false;
  private upstream: Socket | undefined;

  constructor(private readonly client: Socket) {}

  /** The `onread` option for `net.connect`. */
  onread(): { buffer: () => Buffer; callback: (nread: number, buf: Buffer) => boolean } {
    return { buffer: this.nextBuffer, callback: this.onData };
  }

  /** Must be called with the socket created from `onread()`. */
  attach(upstream: Socket): void {
    this.upstream = upstream;
  }

  /** Gives the big buffer back to the pool (the tunnel is over). */
  release(): void {
    if (this.big && !this.waiting && pool.length < POOL_MAX) pool.push(this.big);
    this.big = undefined;
  }

  private readonly nextBuffer = (): Buffer => {
    if (this.nextBig || this.waiting) return (this.big ??= pool.pop() ?? Buffer.allocUnsafeSlow(BIG));
    if (this.big) this.release();
    return (this.small ??= Buffer.allocUnsafeSlow(SMALL));
  };

  private readonly onData = (nread: number, buf: Buffer): boolean => {
    this.nextBig = nread === buf.length;
    if (this.client.destroyed) return false;
    this.client.write(buf.subarray(0, nread), this.onWritten);
    if (this.client.writableLength > 0) {
      this.waiting = true;
      return false; // pause: `buf` is still queued for the client
    }
    return true;
  };

  private readonly onWritten = (): void => {
    if (this.waiting && this.client.writableLength === 0) {
      this.waiting = false;
      this.upstream?.resume();
    }
  };
}
