import { hash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/** The `prev` of the first line of a new chain. */
export const CHAIN_START = '0'.repeat(64);

const PREV = /^\{"prev":"([0-9a-f]{64})"[,}]/;

/** SHA-256 hex of a line's bytes, without its newline. */
export function lineHash(line: string | Buffer): string {
  // One-shot hash: half the cost of createHash() per line.
  return hash('sha256', line, 'hex');
}

/**
 * Inserts `"prev":"<hash>"` right after the opening brace of a JSON line (ending in a newline)
 * and returns the new line with its own hash, which becomes the next line's `prev`.
 */
export function chainLine(line: string, prev: string): { line: string; hash: string } {
  const rest = line.charCodeAt(1) === 125 /* } */ ? line.slice(1) : `,${line.slice(1)}`;
  const chained = `{"prev":"${prev}"${rest}`;
  return { line: chained, hash: lineHash(chained.slice(0, -1)) };
}

/** The hash of the last complete line of a regular file, or undefined when it has none (or cannot be read). */
export function lastLineHash(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return undefined;
    // Lines are far below 64 KiB (access lines are clipped to stay below 4 KiB).
    const len = Math.min(st.size, 65_536);
    const buf = Buffer.alloc(len);
    readSync(fd, buf, 0, len, st.size - len);
    if (len === 0 || buf[len - 1] !== 10) return undefined; // empty, or a torn last line: start afresh
    const end = len - 1;
    const start = buf.lastIndexOf(10, end - 1) + 1;
    if (start === 0 && len < st.size) return undefined;
    return end > start ? lineHash(buf.subarray(start, end)) : undefined;
  } finally {
    closeSync(fd);
  }
}

/** The lines of a file (bytes, without newlines), read in 1 MiB chunks; a last line without newline is yielded too. */
export function* fileLines(path: string): Generator<Buffer> {
  const fd = openSync(path, 'r');
  try {
    const chunk = Buffer.alloc(1 << 20);
    let rest: Buffer = Buffer.alloc(0);
    for (let n = readSync(fd, chunk); n > 0; n = readSync(fd, chunk)) {
      const data = rest.length > 0 ? Buffer.concat([rest, chunk.subarray(0, n)]) : Buffer.from(chunk.subarray(0, n));
      let at = 0;
      for (let nl = data.indexOf(10, at); nl !== -1; nl = data.indexOf(10, at)) {
        yield data.subarray(at, nl);
        at = nl + 1;
      }
      rest = data.subarray(at);
    }
    if (rest.length > 0) yield rest;
  } finally {
    closeSync(fd);
  }
}

/** Where `logs verify` found the chain broken, or why it could not check it. */
export interface ChainBreak {
  file: string;
  line: number;
  message: string;
}

/** The outcome of checking a chain across files. */
export type VerifyResult =
  | { ok: true; lines: number; lastHash: string; anchored: string | undefined }
  | { ok: false; lines: number; problem: ChainBreak };

/** Checks the hash chain across `files`, in order; a first line that is not a chain start is accepted as an anchor. */
export function verifyChain(files: readonly string[], read: (file: string) => Iterable<Buffer>): VerifyResult {
  let expected: string | undefined;
  let anchored: string | undefined;
  let lines = 0;
  for (const file of files) {
    let n = 0;
    for (const raw of read(file)) {
      n++;
      const text = raw.toString('utf8');
      const fail = (message: string): VerifyResult => ({ ok: false, lines, problem: { file, line: n, message } });
      const m = PREV.exec(text);
      if (!m) {
        let json = true;
        try {
          JSON.parse(text);
        } catch {
          json = false;
        }
        return fail(json ? 'the line has no "prev" field first: not written with log.tamper_evident' : 'the line is not JSON (torn, truncated or edited)');
      }
      const found = m[1]!;
      if (expected === undefined) {
        if (found !== CHAIN_START) anchored = `${file} line ${n} continues an earlier chain (prev ${found}); accepted as the anchor`;
      } else if (found !== expected) {
        const before = n > 1 ? `line ${n - 1} of ${file}` : 'the last line of the previous file';
        return fail(`prev is ${found}, expected ${expected} (the hash of ${before}): the chain is broken between ${before} and this line — a line was edited, removed, inserted or reordered here`);
      }
      expected = lineHash(raw);
      lines++;
    }
  }
  if (expected === undefined) return { ok: false, lines, problem: { file: files[0] ?? '', line: 0, message: 'no lines to verify' } };
  return { ok: true, lines, lastHash: expected, anchored };
}
