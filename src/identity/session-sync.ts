import cluster from 'node:cluster';
import type { SessionEvent, SessionStore } from './sessions.js';

/** Tag of the messages the supervisor relays between workers. */
export const SESSION_SYNC = 'egress-proxy.sessions';

interface SyncMessage {
  tag: typeof SESSION_SYNC;
  event: SessionEvent;
}

const isSync = (m: unknown): m is SyncMessage => typeof m === 'object' && m !== null && (m as SyncMessage).tag === SESSION_SYNC;

/**
 * With `workers > 1`, each worker keeps its own session store: a browser signs in on one worker
 * and its next request lands on another. Every change (address or device binding, sign-out,
 * refreshed groups, used ticket) is sent to the supervisor, which relays it to the other workers.
 * A worker started later (a restart) begins empty: the browser signs in again or uses its cookie.
 */
export function workerSessionSync(): { announce(e: SessionEvent): void; attach(store: SessionStore): () => void } | undefined {
  if (!cluster.isWorker || typeof process.send !== 'function') return undefined;
  return {
    announce: (event) => {
      process.send!({ tag: SESSION_SYNC, event } satisfies SyncMessage);
    },
    attach: (store) => {
      const onMessage = (m: unknown): void => {
        if (isSync(m)) store.apply(m.event);
      };
      process.on('message', onMessage);
      return () => process.off('message', onMessage);
    },
  };
}

/** In the supervisor: relays each worker's session changes to the other workers. */
export function relaySessionSync(): void {
  cluster.on('message', (from, m: unknown) => {
    if (!isSync(m)) return;
    for (const w of Object.values(cluster.workers ?? {})) if (w && w !== from && w.isConnected()) w.send(m);
  });
}
