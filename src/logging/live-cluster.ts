import cluster, { type Worker } from 'node:cluster';
import { askSupervisor } from './ask-supervisor.js';
import { mergeSnapshots, type LiveSnapshot, type LiveStats } from './live-stats.js';

// A worker asks the supervisor (ASK); the supervisor asks every worker (GATHER), merges the
// answers (PART) and replies (ANSWER). Snapshots are small, bounded JSON.
const ASK = 'egress:live?';
const GATHER = 'egress:live-gather';
const PART = 'egress:live-part';
const ANSWER = 'egress:live';
const TIMEOUT_MS = 3000;

interface Msg { type?: unknown; id?: unknown; minutes?: unknown; snapshot?: LiveSnapshot; error?: string }

/** In a worker: answers the supervisor's gathering with this process's live view. */
export function answerLiveRequests(stats: LiveStats): void {
  if (!cluster.isWorker) return;
  process.on('message', (m: Msg) => {
    if (m?.type !== GATHER || typeof m.id !== 'number' || typeof m.minutes !== 'number') return;
    process.send!({ type: PART, id: m.id, snapshot: stats.snapshot(m.minutes) });
  });
}

/** In the supervisor: merges every worker's live view for the worker whose dashboard asked. */
export function serveClusterLive(): void {
  let next = 0;
  const pending = new Map<number, { parts: LiveSnapshot[]; waiting: number; done: () => void }>();
  cluster.on('message', (worker: Worker, m: Msg) => {
    if (m?.type === PART && typeof m.id === 'number' && m.snapshot) {
      const p = pending.get(m.id);
      if (!p) return;
      p.parts.push(m.snapshot);
      if (--p.waiting === 0) p.done();
      return;
    }
    if (m?.type !== ASK || typeof m.id !== 'number' || typeof m.minutes !== 'number') return;
    const reply = m.id;
    const id = next++;
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && w.isConnected());
    const entry = { parts: [] as LiveSnapshot[], waiting: workers.length, done: (): void => undefined };
    // Whatever has arrived by the deadline is merged: a stuck worker does not blank the page.
    const timer = setTimeout(() => entry.done(), TIMEOUT_MS);
    entry.done = (): void => {
      clearTimeout(timer);
      pending.delete(id);
      const msg = entry.parts.length > 0 ? { type: ANSWER, id: reply, snapshot: mergeSnapshots(entry.parts) } : { type: ANSWER, id: reply, error: 'no worker answered' };
      if (worker.isConnected()) worker.send(msg);
    };
    pending.set(id, entry);
    for (const w of workers) w.send({ type: GATHER, id, minutes: m.minutes });
    if (workers.length === 0) entry.done();
  });
}

/** In a worker: the live view of every worker on this node, through the supervisor. */
export async function clusterSnapshot(minutes: number): Promise<LiveSnapshot> {
  const m = await askSupervisor<Msg>(ASK, ANSWER, { minutes }, TIMEOUT_MS + 2000);
  if (!m.snapshot) throw new Error('no snapshot');
  return m.snapshot;
}
