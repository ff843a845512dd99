import cluster from 'node:cluster';
import { askSupervisor } from './ask-supervisor.js';
import { AggregatorRegistry, type Registry } from 'prom-client';

const ASK = 'egress:metrics?';
const ANSWER = 'egress:metrics';
interface Answer { type: typeof ANSWER; id: number; text?: string; error?: string }

/** In a worker: lets the supervisor collect this registry when it aggregates. */
export function shareWithSupervisor(registry: Registry): void {
  if (!cluster.isWorker) return;
  AggregatorRegistry.setRegistries([registry]);
  // Constructing one installs prom-client's answering listener in this worker.
  new AggregatorRegistry();
}

/** In the supervisor: answers a worker's request for the metrics of all workers, summed (prom-client's aggregation). */
export function serveClusterMetrics(): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, msg: { type?: unknown; id?: unknown }) => {
    if (msg?.type !== ASK || typeof msg.id !== 'number') return;
    const id = msg.id;
    aggregator.clusterMetrics().then(
      (text) => worker.send({ type: ANSWER, id, text } satisfies Answer),
      (err: unknown) => worker.send({ type: ANSWER, id, error: String(err) } satisfies Answer),
    );
  });
}

/** In a worker: the metrics of every worker, through the supervisor (a scrape may reach any worker). */
export async function clusterMetricsText(timeoutMs = 6000): Promise<string> {
  const m = await askSupervisor<Answer>(ASK, ANSWER, {}, timeoutMs);
  if (m.text === undefined) throw new Error('no metrics');
  return m.text;
}
