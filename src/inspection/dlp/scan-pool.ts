import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { BodyInspector, type BodyInfo } from './decode.js';
import type { CompiledProfile } from './profile.js';
import type { FromWorker, ToWorker } from './scan-worker.js';
import type { Verdict } from './tally.js';

/** What the upload path needs of an inspector, on the event loop or in a scan worker. */
export interface Inspector {
  /** Feeds body bytes (copied). false: wait for drained() before writing more. */
  write(chunk: Uint8Array): boolean;
  drained(): Promise<void>;
  /** Resolves once all written so far is scanned but a short tail (BodyInspector.sync), so `blocked` covers it. */
  sync(): Promise<void>;
  /** True once the verdict is certain to be block. */
  readonly blocked: boolean;
  end(): Promise<Verdict>;
  /** Forgets a body that will not be ended (the client went away); nothing after it counts. */
  drop(): void;
}

/** Chunks a body may have on their way to its worker before the request path waits. */
const IN_FLIGHT = 8;
/** A body nobody has written to, synced or ended for this long was abandoned: its worker forgets it. */
const IDLE_MS = 5 * 60_000;

/** The verdict when a scan worker fails: fail closed, and say why in the log. */
const failed = (error: string): Verdict =>
  ({ action: 'block', reason: 'dlp_error', findings: [], files: [], scannedBytes: 0, truncated: true, error });

/** The in-process inspector behind the same interface: scans as it is written. */
class LocalInspector extends BodyInspector implements Inspector {
  drop(): void {
    void this.end().catch(() => undefined); // closes its decompressors and parsers
  }
}

/** One body scanned in a worker: chunks are copied over and acknowledged once taken; sync() waits for the scan. */
class RemoteInspector implements Inspector {
  blocked = false;
  private inFlight = 0;
  private waiting: (() => void)[] = [];
  /** Callers of sync(), answered in order by the worker's `synced`. */
  private syncs: (() => void)[] = [];
  private ended = false;
  /** The verdict is in (or the worker failed): nothing more is sent or waited for. */
  private finished = false;
  private readonly verdict: Promise<Verdict>;
  private settle!: (v: Verdict) => void;
  /** Last write, sync or end (for the pool's sweep of abandoned bodies). */
  touched = Date.now();

  constructor(private readonly slot: Slot, readonly id: number) {
    this.verdict = new Promise((resolve) => { this.settle = resolve; });
  }

  write(chunk: Uint8Array): boolean {
    if (this.ended) throw new Error('Inspector.write after end');
    if (this.finished || this.slot.worker === undefined) return true;
    this.touched = Date.now();
    const copy = new Uint8Array(chunk); // the caller's buffer may be pooled or reused: send our own
    this.inFlight++;
    this.slot.worker.postMessage({ op: 'write', id: this.id, chunk: copy } satisfies ToWorker, [copy.buffer]);
    return this.inFlight < IN_FLIGHT;
  }

  drained(): Promise<void> {
    return this.inFlight < IN_FLIGHT ? Promise.resolve() : new Promise((r) => this.waiting.push(r));
  }

  sync(): Promise<void> {
    if (this.finished || this.slot.worker === undefined) return Promise.resolve();
    this.touched = Date.now();
    this.slot.worker.postMessage({ op: 'sync', id: this.id } satisfies ToWorker);
    return new Promise((r) => this.syncs.push(r));
  }

  /** The worker has synced this body (see sync()). */
  synced(blocked: boolean): void {
    this.blocked ||= blocked;
    this.syncs.shift()?.();
  }

  end(): Promise<Verdict> {
    if (!this.ended) {
      this.ended = true;
      this.touched = Date.now();
      if (!this.finished) this.slot.worker?.postMessage({ op: 'end', id: this.id } satisfies ToWorker);
    }
    return this.verdict;
  }

  drop(): void {
    if (this.finished) return;
    this.slot.bodies.delete(this.id);
    this.slot.worker?.postMessage({ op: 'drop', id: this.id } satisfies ToWorker);
    this.done(failed('dropped'));
  }

  /** A chunk was scanned. */
  acked(blocked: boolean): void {
    this.inFlight--;
    this.blocked ||= blocked;
    this.wake();
  }

  /** The last word for this body: its verdict, or a block when the worker failed. */
  done(v: Verdict): void {
    this.finished = true;
    if (v.action === 'block') this.blocked = true;
    this.inFlight = 0;
    this.wake();
    this.settle(v);
  }

  private wake(): void {
    const w = this.finished ? [...this.waiting, ...this.syncs] : this.waiting;
    this.waiting = [];
    if (this.finished) this.syncs = [];
    for (const r of w) r();
  }
}

interface Slot {
  worker: Worker | undefined;
  bodies: Map<number, RemoteInspector>;
  /** When its worker started, and how many in a row died young (for the restart back-off). */
  started: number;
  failures: number;
}

/** A worker that dies sooner than this after starting counts towards the restart back-off. */
const YOUNG_MS = 5_000;

/**
 * Scan workers for DLP (`inspection.dlp_workers`): each body goes to one worker (the least busy)
 * for its whole life, since an inspector keeps state across chunks. A worker that fails takes its
 * bodies' verdicts to block (`dlp_error`), and a new one takes its place.
 */
export class ScanPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;
  private readonly script: URL;
  private readonly sweeper: NodeJS.Timeout | undefined;

  constructor(size: number, private readonly onError: (err: Error) => void) {
    const local = new URL('./scan-worker.js', import.meta.url);
    // From TypeScript sources (the test runner) the compiled worker is the one under dist/.
    this.script = existsSync(local) ? local : new URL('../../../dist/inspection/dlp/scan-worker.js', import.meta.url);
    if (size > 0 && !existsSync(this.script)) throw new Error(`DLP scan worker missing (${this.script.pathname}): run npm run build`);
    for (let i = 0; i < size; i++) this.slots.push(this.spawn({ worker: undefined, bodies: new Map(), started: 0, failures: 0 }));
    // A body whose upload was abandoned without a word (its release never ran to its end) would
    // otherwise keep its scan state in the worker for good.
    if (size > 0) this.sweeper = setInterval(() => this.sweep(Date.now() - IDLE_MS), 30_000).unref();
  }

  /** The worker threads, for status pages and tests. */
  get threads(): readonly Worker[] {
    return this.slots.map((s) => s.worker).filter((w): w is Worker => w !== undefined);
  }

  /** An inspector for one body: in a worker, or on the event loop when there is none. */
  inspector(profile: CompiledProfile, info: BodyInfo): Inspector {
    const ready = this.slots.filter((s) => s.worker !== undefined);
    // No worker (none configured, closing, or all restarting after failures): scan here, as safely.
    if (ready.length === 0 || this.closed) return new LocalInspector(profile, info);
    const slot = ready.reduce((a, b) => (b.bodies.size < a.bodies.size ? b : a));
    const body = new RemoteInspector(slot, this.nextId++);
    slot.bodies.set(body.id, body);
    const { onBlock: _, ...plain } = info;
    slot.worker!.postMessage({ op: 'open', id: body.id, name: profile.name, file: profile.file, spec: profile.spec, info: plain } satisfies ToWorker);
    return body;
  }

  /** Stops the workers; bodies still being scanned get a block verdict. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    await Promise.all(this.slots.map((s) => {
      const w = s.worker;
      s.worker = undefined;
      this.fail(s, 'the proxy is stopping');
      return w?.terminate();
    }));
  }

  private spawn(slot: Slot): Slot {
    const w = new Worker(this.script);
    slot.worker = w;
    slot.started = Date.now();
    w.on('message', (m: FromWorker) => {
      const body = slot.bodies.get(m.id);
      if (!body) return;
      if (m.op === 'ack') body.acked(m.blocked);
      else if (m.op === 'synced') body.synced(m.blocked);
      else {
        slot.bodies.delete(m.id);
        body.done(m.op === 'verdict' ? m.verdict : failed(m.error));
      }
    });
    const lost = (why: string): void => {
      if (slot.worker !== w) return; // already replaced, or closing
      slot.worker = undefined;
      this.onError(new Error(`DLP scan worker ${w.threadId} ${why}`));
      this.fail(slot, why);
      if (this.closed) return;
      // A worker that keeps dying at once (a broken install) must not spin: back off to 30 s.
      slot.failures = Date.now() - slot.started < YOUNG_MS ? slot.failures + 1 : 0;
      const delay = slot.failures <= 1 ? 0 : Math.min(30_000, 100 * 2 ** slot.failures);
      if (delay === 0) this.spawn(slot);
      else setTimeout(() => { if (!this.closed && slot.worker === undefined) this.spawn(slot); }, delay).unref();
    };
    w.on('error', (err) => lost(`failed: ${err.message}`));
    w.on('exit', (code) => lost(`exited (${code})`));
    w.unref();
    return slot;
  }

  /** Drops the bodies untouched since `before` (ms since the epoch). */
  sweep(before: number): void {
    for (const s of this.slots) for (const b of [...s.bodies.values()]) if (b.touched < before) b.drop();
  }

  private fail(slot: Slot, why: string): void {
    const bodies = [...slot.bodies.values()];
    slot.bodies.clear();
    for (const b of bodies) b.done(failed(`scan worker ${why}`));
  }
}
