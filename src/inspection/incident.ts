/** A short id that ties a block page, its access-log line and any alert line together. */
export function incidentId(): string {
  return `inc-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}
