import { closeSync, constants, fstatSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlink } from 'node:fs';
import { dirname } from 'node:path';
import { CHAIN_START, lastLineHash } from './chain.js';
import { FdOutput, FILE_BLOCK, PIPE_BLOCK, STREAM_BLOCK } from './fd-output.js';

/** A destination and what its set-up wants the admin to know. */
export interface Opened {
  output: FdOutput;
  notice?: string;
}

/** True when the open file description behind `fd` has O_NONBLOCK (from /proc/self/fdinfo). */
function nonBlocking(fd: number): boolean {
  try {
    const m = /^flags:\s*([0-7]+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    return m !== null && (parseInt(m[1]!, 8) & constants.O_NONBLOCK) !== 0;
  } catch {
    return false;
  }
}

/**
 * Stdout: a pipe or FIFO is reopened through /proc/self/fd/1 with O_NONBLOCK — a new open file
 * description, so the flag does not leak to the supervisor or other workers sharing the pipe —
 * and a full pipe then stalls the output instead of the event loop. A socket (journald, or a
 * parent's socketpair) cannot be reopened that way (ENXIO): Node's own stdout stream makes it
 * non-blocking (on the shared description, as any Node process writing to it does). A regular
 * file or a tty is written as is. `shared`: other workers write to the same stdout, so blocks
 * stay atomic (PIPE_BLOCK); alone, larger blocks (STREAM_BLOCK) wake the reader less often.
 */
export function openStdout(shared: boolean): Opened {
  const block = shared ? PIPE_BLOCK : STREAM_BLOCK;
  let socket: boolean;
  try {
    const st = fstatSync(1);
    if (st.isFile()) return { output: new FdOutput(1, 'stdout', FILE_BLOCK) };
    if (!st.isFIFO() && !st.isSocket()) return { output: new FdOutput(1, 'stdout', block) };
    socket = st.isSocket();
  } catch {
    return { output: new FdOutput(1, 'stdout', block) };
  }
  if (!socket) {
    try {
      const out = new FdOutput(openSync('/proc/self/fd/1', constants.O_WRONLY | constants.O_NONBLOCK), 'stdout', block);
      out.own();
      return { output: out };
    } catch {
      // No /proc, or the reader is gone: written as is below.
    }
  } else {
    void process.stdout; // libuv opens fd 1 as a stream, which sets O_NONBLOCK; nothing is written through it
  }
  const out = new FdOutput(1, 'stdout', block);
  return nonBlocking(1) ? { output: out } : {
    output: out,
    notice: `stdout (a ${socket ? 'socket' : 'pipe'}) could not be made non-blocking: writes to it block while its reader stalls; prefer log.file`,
  };
}

/** Where and how a log file is kept. */
export interface FileOptions {
  path: string;
  /** Rotate before a write would take the file past this size; 0 = never (external rotation with SIGHUP). */
  rotateBytes: number;
  /** Rotated files kept: path.1 (newest) … path.<keep>. */
  keep: number;
  /** Continue the hash chain from the file's last line. */
  chain: boolean;
}

function openFile(path: string): { fd: number; fifo: boolean; size: number } {
  mkdirSync(dirname(path), { recursive: true });
  let fifo = false;
  try {
    fifo = statSync(path).isFIFO();
  } catch {
    // Absent: created below.
  }
  // A FIFO is opened read-write so that opening never waits for (or fails without) a reader,
  // and non-blocking so that a reader that stalls stalls this output, not the event loop.
  const fd = fifo ? openSync(path, constants.O_RDWR | constants.O_NONBLOCK) : openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o640);
  return { fd, fifo, size: fifo ? 0 : fstatSync(fd).size };
}

/** A log file, rotated by size (access.log -> access.log.1 -> … -> access.log.<keep>), reopened on SIGHUP. */
export class FileOutput extends FdOutput {
  private size: number;
  private fifo: boolean;
  private reopenWanted = false;
  /** Size at which rotation is tried next (moved on after a failed rotation, so it is not retried per block). */
  private rotateAt: number;

  constructor(private readonly o: FileOptions, private readonly problem: (msg: string) => void) {
    const f = openFile(o.path);
    super(f.fd, o.path, f.fifo ? PIPE_BLOCK : FILE_BLOCK);
    this.owned = true;
    this.size = f.size;
    this.fifo = f.fifo;
    this.rotateAt = o.rotateBytes;
    // After a restart the chain goes on from the last line written (or the last rotated file's).
    if (o.chain && !f.fifo) this.lastHash = lastLineHash(o.path) ?? lastLineHash(`${o.path}.1`) ?? CHAIN_START;
  }

  override reopen(): void {
    // Never in the middle of a block: the rest of a part-written one goes to the old file first.
    if (this.head) this.reopenWanted = true;
    else this.swap();
  }

  protected override beforeBlock(bytes: number): void {
    if (this.reopenWanted) {
      this.reopenWanted = false;
      this.swap();
    }
    if (this.o.rotateBytes > 0 && !this.fifo && this.size > 0 && this.size + bytes > this.rotateAt) this.rotate();
  }

  protected override room(): number {
    return this.o.rotateBytes > 0 && !this.fifo ? Math.max(this.rotateAt - this.size, 0) : FILE_BLOCK;
  }

  protected override wrote(bytes: number): void {
    this.size += bytes;
  }

  private rotate(): void {
    const p = this.o.path;
    try {
      // The oldest is moved aside and deleted off the event loop, so that no rename replaces a
      // file: a rename over a file, or deleting it here, frees its pages synchronously (25–30 ms
      // for 64 MiB here, and ext4 may first write out the renamed file's data).
      const doomed = `${p}.${this.o.keep}.deleting`;
      try {
        renameSync(`${p}.${this.o.keep}`, doomed);
        unlink(doomed, () => undefined); // best effort: a leftover is deleted at the next rotation
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      for (let k = this.o.keep - 1; k >= 1; k--) {
        try {
          renameSync(`${p}.${k}`, `${p}.${k + 1}`);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      renameSync(p, `${p}.1`);
    } catch (err) {
      this.rotateAt = this.size + this.o.rotateBytes;
      this.problem(`cannot rotate ${p}: ${(err as Error).message}; writing on`);
      return;
    }
    this.swap();
  }

  /** Opens the path afresh; on failure the old descriptor stays in use (lines go on to the renamed file). */
  private swap(): void {
    let f;
    try {
      f = openFile(this.o.path);
    } catch (err) {
      this.problem(`cannot reopen ${this.o.path}: ${(err as Error).message}; writing on to the old file`);
      return;
    }
    closeSync(this.fd);
    this.fd = f.fd;
    this.size = f.size;
    this.fifo = f.fifo;
    this.rotateAt = this.o.rotateBytes;
  }
}
