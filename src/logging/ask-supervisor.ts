let next = 0;

/**
 * In a worker: sends `{ type: ask, id, ...payload }` to the supervisor and resolves with the
 * `answer` message carrying the same id (rejects on its `error`, or when none comes in time).
 */
export function askSupervisor<T extends { error?: string }>(ask: string, answer: string, payload: Record<string, unknown>, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const id = next++;
    const onMessage = (m: T & { type?: unknown; id?: unknown }): void => {
      if (m?.type !== answer || m.id !== id) return;
      clearTimeout(timer);
      process.off('message', onMessage);
      if (m.error !== undefined) reject(new Error(m.error));
      else resolve(m);
    };
    const timer = setTimeout(() => {
      process.off('message', onMessage);
      reject(new Error('the supervisor did not answer'));
    }, timeoutMs);
    process.on('message', onMessage);
    process.send!({ ...payload, type: ask, id });
  });
}
