import pino, { type Logger } from 'pino';

/** Process-wide logger settings. */
export interface LoggerOptions {
  level: string;
  nodeId: string;
  /** Worker number when several processes share the listeners (logged as `worker`). */
  worker?: number | undefined;
  /** File descriptor or path; defaults to stdout. */
  destination?: number | string;
}

/** The process logger, the access-log writer that shares its destination, and a flush for exit. */
export interface ProxyLogger {
  log: Logger;
  /** Writes one pre-serialised access-log line (see access-record.ts); a no-op above level info. */
  writeAccess(line: string): void;
  /** JSON prefix every access line starts with: `{"level":"info","time":"…","node":…,"type":"access"`. */
  accessPrefix(): string;
  flush(): void;
}

let lastMs = 0;
let lastIso = '';
/** ISO time, formatted at most once per millisecond (many lines share one). */
function isoNow(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastIso = new Date(now).toISOString();
  }
  return lastIso;
}

/**
 * Creates the JSON logger: asynchronous writes (the hot path never waits on the disk), flushed on
 * exit. Access lines bypass pino's generic serialiser (a fixed schema serialises faster by hand,
 * see docs/decisions.md) but go to the same destination, so lines never interleave mid-line.
 */
export function createLogger(o: LoggerOptions): ProxyLogger {
  // Lines are batched and written synchronously in blocks of at most 4 KiB of whole lines:
  // - one write per ~12 lines instead of a thread-pool round trip per line (a quarter of the
  //   per-request CPU, measured with bench/run.mjs --only small, see docs/decisions.md);
  // - a block of at most 4 KiB is atomic on a pipe, so workers sharing stdout never interleave;
  // - a sink that stops taking lines stops the proxy rather than growing memory (fail closed);
  // - a partial block is flushed within 250 ms, on drain and at exit.
  const dest = pino.destination({ dest: o.destination ?? 1, sync: true, minLength: 4000, maxWrite: 4096, periodicFlush: 250 });
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
    dest,
  );
  const node = o.worker === undefined ? JSON.stringify(o.nodeId) : `${JSON.stringify(o.nodeId)},"worker":${o.worker}`;
  const enabled = log.isLevelEnabled('info');
  return {
    log,
    writeAccess: (line) => {
      if (enabled) dest.write(line);
    },
    accessPrefix: () => `{"level":"info","time":"${isoNow()}","node":${node},"type":"access"`,
    flush: () => {
      try {
        dest.flushSync();
      } catch {
        // flushSync throws if the stream is not ready yet; nothing was buffered then.
      }
    },
  };
}
