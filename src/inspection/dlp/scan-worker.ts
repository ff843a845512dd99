// A DLP scan worker (worker_threads): runs BodyInspectors for bodies the event loop hands over,
// so scanning uses other cores and never holds up the proxy's requests. See scan-pool.ts.
import { parentPort } from 'node:worker_threads';
import { BodyInspector, type BodyInfo } from './decode.js';
import { compileProfile, type CompiledProfile } from './compile.js';
import type { ProfileSpec } from './profile.js';

/** What the pool sends. A body's messages arrive, and are handled, in order. */
export type ToWorker =
  | { op: 'open'; id: number; name: string; file: string; spec: ProfileSpec; info: Omit<BodyInfo, 'onBlock'> }
  | { op: 'write'; id: number; chunk: Uint8Array }
  | { op: 'sync'; id: number }
  | { op: 'end'; id: number }
  | { op: 'drop'; id: number };

/** What the worker answers: an `ack` per write, a `synced` per sync, then one `verdict` or `failed` per body. */
export type FromWorker =
  | { op: 'ack'; id: number; blocked: boolean }
  | { op: 'synced'; id: number; blocked: boolean }
  | { op: 'verdict'; id: number; verdict: import('./tally.js').Verdict }
  | { op: 'failed'; id: number; error: string };

const port = parentPort;
if (!port) throw new Error('scan-worker.ts runs as a worker thread');

// Profiles compiled here from the very spec the proxy's policy compiled; a few versions kept.
const compiled = new Map<string, CompiledProfile>();
const profileOf = (name: string, file: string, spec: ProfileSpec): CompiledProfile => {
  const key = `${file}\0${name}\0${JSON.stringify(spec)}`;
  let p = compiled.get(key);
  if (!p) {
    p = compileProfile(name, spec, file);
    if (compiled.size >= 32) compiled.delete(compiled.keys().next().value!);
    compiled.set(key, p);
  }
  return p;
};

interface Session { insp: BodyInspector; chain: Promise<void> }
const sessions = new Map<number, Session>();

const send = (m: FromWorker): void => port.postMessage(m);

async function step(id: number, s: Session, m: ToWorker): Promise<void> {
  if (m.op === 'write') {
    if (!s.insp.write(m.chunk)) await s.insp.drained();
    send({ op: 'ack', id, blocked: s.insp.blocked });
  } else if (m.op === 'sync') {
    await s.insp.sync();
    send({ op: 'synced', id, blocked: s.insp.blocked });
  } else if (m.op === 'end') {
    sessions.delete(id);
    send({ op: 'verdict', id, verdict: await s.insp.end() });
  }
}

port.on('message', (m: ToWorker) => {
  if (m.op === 'open') {
    try {
      sessions.set(m.id, { insp: new BodyInspector(profileOf(m.name, m.file, m.spec), m.info), chain: Promise.resolve() });
    } catch (err) {
      send({ op: 'failed', id: m.id, error: (err as Error).message });
    }
    return;
  }
  const s = sessions.get(m.id);
  if (!s) return; // failed at open, or dropped: the pool already answered
  if (m.op === 'drop') {
    sessions.delete(m.id);
    void s.insp.end().catch(() => undefined);
    return;
  }
  // One body's steps run one after another (a write may wait for its decompressor).
  s.chain = s.chain.then(() => step(m.id, s, m)).catch((err: unknown) => {
    sessions.delete(m.id);
    send({ op: 'failed', id: m.id, error: (err as Error).message });
  });
});
