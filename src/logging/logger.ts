import { basename, dirname, extname, join, resolve } from 'node:path';
import pino, { type Logger } from 'pino';
import type { LoadedConfig } from '../config/load.js';
import { AccessPrefix } from './access-prefix.js';
import { FdOutput, PIPE_BLOCK } from './fd-output.js';
import { LineBytes } from './line-bytes.js';
import { FileOutput, openStdout, type Opened } from './file-sink.js';
import { LineSink, type SinkStats, type WhenFull } from './sink.js';

/** Process-wide logger settings. */
export interface LoggerOptions {
  level: string;
  nodeId: string;
  /** Worker number when several processes share the listeners (logged as `worker`). */
  worker?: number | undefined;
  /** The one destination, a file descriptor or a file path (no rotation); overrides `stdout` and `file`. */
  destination?: number | string;
  /** Write to stdout (default true). */
  stdout?: boolean;
  /** Also (or only) write to this file, rotated by size. The path is used as given. */
  file?: { path: string; rotate_bytes?: number; keep?: number } | undefined;
  /** Bytes of lines kept per destination while it does not take them (default 8 MiB). */
  buffer_bytes?: number;
  when_full?: WhenFull;
  /** Chain lines with `"prev":"<sha256 of the previous line>"`. */
  tamper_evident?: boolean;
}

/** An access line waiting to be encoded (see access-record.ts). */
export interface QueuedLine {
  /** Encodes the line into `out` after `prefix` (whose time it sets); returns its length in bytes. */
  encode(out: LineBytes, prefix: AccessPrefix): number;
  /** Called once the line is written (or would have been, above level info). */
  written(): void;
}

/** Back-pressure counters (see sink.ts). */
export type LogStats = SinkStats;

/** The process logger, the access-log writer that shares its destination, and back-pressure state. */
export interface ProxyLogger {
  log: Logger;
  /** Writes one pre-serialised access-log line (see access-record.ts); a no-op above level info. */
  writeAccess(line: string): void;
  /**
   * Queues an access line, encoded and written once the current turn of the event loop has run
   * its I/O callbacks (or at the next flush); above level info only its `written` is called.
   * `line` must not change after it is queued.
   */
  queueAccess(line: QueuedLine): void;
  /** JSON prefix every access line starts with: `{"level":"info","time":"…","node":…,"type":"access"`. */
  accessPrefix(): string;
  /** True while a destination is backlogged under `when_full: fail_closed`: new requests are refused. */
  readonly backlogged: boolean;
  /** True, and counted, when a new request must be refused (503 log_backlog, no access line). */
  refuseNew(): boolean;
  stats(): LogStats;
  /** Writes what can be written now, synchronously (best effort). */
  flush(): void;
  /** Resolves once everything buffered is written, or after `timeoutMs` (default 5 s). */
  flushed(timeoutMs?: number): Promise<void>;
  /** Reopens the log file (after an external logrotate; SIGHUP). */
  reopen(): void;
  close(): void;
}

/** `access.log` -> `access-w1.log`: with several workers, each writes its own file. */
export function workerLogPath(path: string, worker: number | undefined): string {
  if (worker === undefined) return path;
  const base = basename(path);
  const ext = extname(base);
  return join(dirname(path), `${base.slice(0, base.length - ext.length)}-w${worker}${ext}`);
}

/** Logger options from the `log` section: the file path resolved against the config file's directory, per worker. */
export function loggerOptions(config: LoadedConfig, worker: number | undefined): LoggerOptions {
  const l = config.log;
  return {
    level: l.level, nodeId: config.node_id, worker, stdout: l.stdout, buffer_bytes: l.buffer_bytes, when_full: l.when_full,
    tamper_evident: l.tamper_evident,
    file: l.file && { path: workerLogPath(resolve(config.baseDir, l.file.path), worker), rotate_bytes: l.file.rotate_bytes, keep: l.file.keep },
  };
}

function outputs(o: LoggerOptions, problem: (msg: string) => void): Opened[] {
  const chain = o.tamper_evident === true;
  const file = (path: string, rotateBytes: number, keep: number): Opened => ({ output: new FileOutput({ path, rotateBytes, keep, chain }, problem) });
  if (typeof o.destination === 'string') return [file(o.destination, 0, 1)];
  if (o.destination !== undefined && o.destination !== 1) return [{ output: new FdOutput(o.destination, `fd ${o.destination}`, PIPE_BLOCK) }];
  const list: Opened[] = [];
  if (o.destination === 1 || o.stdout !== false || o.file === undefined) list.push(openStdout(o.worker !== undefined));
  if (o.destination === undefined && o.file) list.push(file(o.file.path, o.file.rotate_bytes ?? 100 << 20, o.file.keep ?? 10));
  return list;
}

/**
 * Creates the JSON logger. Access lines bypass pino's generic serialiser (a fixed schema
 * serialises faster by hand, see docs/decisions.md) but go to the same sink, so lines never
 * interleave mid-line.
 */
export function createLogger(o: LoggerOptions): ProxyLogger {
  // Lines are batched and written synchronously in blocks of whole lines, at most 4 KiB to a pipe:
  // - one write per ~12 lines instead of a thread-pool round trip per line (a quarter of the
  //   per-request CPU, measured with bench/run.mjs --only small, see docs/decisions.md);
  // - a block of at most 4 KiB is atomic on a pipe, so workers sharing stdout never interleave;
  // - a destination that stops taking lines never blocks the event loop: its lines wait in a
  //   bounded buffer, and when that is full the proxy refuses new requests (fail closed) or drops;
  // - a partial block is flushed within 250 ms, on drain and at exit.
  const later: string[] = [];
  let ready: Logger | undefined;
  const problem = (msg: string): void => {
    // Often said from inside a write: logged once that write is over.
    if (ready) setImmediate((l: Logger) => l.warn(msg), ready);
    else later.push(msg);
  };
  const opened = outputs(o, problem);
  const sink = new LineSink({
    outputs: opened.map((x) => x.output),
    bufferBytes: o.buffer_bytes ?? 8 << 20,
    whenFull: o.when_full ?? 'fail_closed',
    tamperEvident: o.tamper_evident === true,
    onEpisodeEnd: (e) => {
      const extra = e.whenFull === 'fail_closed' && e.dropped > 0 ? ` (and dropped ${e.dropped} lines past twice the buffer)` : '';
      ready?.warn({ refused_requests: e.refused, dropped_lines: e.dropped, backlog_ms: e.ms },
        e.whenFull === 'fail_closed'
          ? `refused ${e.refused} requests while the access log was backlogged${extra}`
          : `dropped ${e.dropped} lines while the access log was backlogged`);
    },
  });
  const log = pino(
    {
      level: o.level,
      base: o.worker === undefined ? { node: o.nodeId } : { node: o.nodeId, worker: o.worker },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      // Belt and braces: no field by these names is ever written in clear.
      redact: {
        paths: ['authorization', 'proxy_authorization', 'cookie', 'set_cookie', 'headers.authorization',
          'headers["proxy-authorization"]', 'headers.cookie'],
        censor: '[REDACTED]',
      },
    },
    { write: (line: string) => sink.write(line) },
  );
  ready = log;
  for (const msg of later.concat(opened.flatMap((x) => (x.notice ? [x.notice] : [])))) log.warn(msg);
  const node = o.worker === undefined ? JSON.stringify(o.nodeId) : `${JSON.stringify(o.nodeId)},"worker":${o.worker}`;
  const enabled = log.isLevelEnabled('info');
  const prefix = AccessPrefix.live(node);
  // Lines are encoded in batches, once per turn of the event loop: running the encoder for a
  // batch, rather than between every two requests, cost measurably less CPU per request
  // (docs/benchmarks.md "Logging and metrics").
  const out = new LineBytes(8192);
  out.place = sink.place;
  let queue: QueuedLine[] = [];
  let scheduled = false;
  const drain = (): void => {
    scheduled = false;
    const q = queue;
    if (q.length === 0) return;
    queue = [];
    for (let i = 0; i < q.length; i++) {
      const line = q[i]!;
      // A bug in one line's encoder or observers must cost neither the process nor the lines after it.
      try {
        if (enabled) {
          const n = line.encode(out, prefix);
          sink.writeBytes(out.buf, out.begin, n);
        }
      } catch (err) {
        ready?.error({ err }, 'an access line could not be encoded and is lost');
      }
      try {
        line.written();
      } catch (err) {
        ready?.error({ err }, 'an access-line observer failed');
      }
    }
  };
  return {
    log,
    writeAccess: (line) => {
      if (enabled) sink.write(line);
    },
    queueAccess: (line) => {
      queue.push(line);
      if (!scheduled) {
        scheduled = true;
        setImmediate(drain);
      }
    },
    accessPrefix: () => prefix.now().text(),
    get backlogged() {
      return sink.backlogged;
    },
    refuseNew: () => sink.refuse(),
    stats: () => sink.stats(),
    flush: () => {
      drain();
      sink.flush();
    },
    flushed: (timeoutMs) => {
      drain();
      return sink.flushed(timeoutMs);
    },
    reopen: () => sink.reopen(),
    close: () => {
      drain();
      sink.close();
    },
  };
}
