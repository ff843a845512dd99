import pino, { type Logger } from 'pino';

/** Process-wide logger settings. */
export interface LoggerOptions {
  level: string;
  nodeId: string;
  /** File descriptor or path; defaults to stdout. */
  destination?: number | string;
}

/** A logger plus the means to flush it before exit (SIGTERM must not lose lines). */
export interface ProxyLogger {
  log: Logger;
  access: Logger;
  flush(): void;
}

/** Creates the JSON logger: asynchronous writes (the hot path never waits on the disk), flushed on exit. */
export function createLogger(o: LoggerOptions): ProxyLogger {
  const dest = pino.destination({ dest: o.destination ?? 1, sync: false, minLength: 0 });
  const log = pino(
    {
      level: o.level,
      base: { node: o.nodeId },
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
  return {
    log,
    access: log.child({ type: 'access' }),
    flush: () => {
      try {
        dest.flushSync();
      } catch {
        // flushSync throws if the stream is not ready yet; nothing was buffered then.
      }
    },
  };
}
