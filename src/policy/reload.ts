import { watch, type FSWatcher } from 'node:fs';
import { FileValidationError, formatProblem } from '../config/validate.js';
import { AddressGuard } from '../egress/addresses.js';
import type { ProxyRuntime } from '../runtime.js';
import { loadPolicyDirOffThread } from './load.js';

/** What `/policy/status` shows: the policy in force and the last failed attempt, if any. */
export interface PolicyStatus {
  version: string;
  files: readonly string[];
  loaded_at: string;
  rules: number;
  /** Problems of the last reload attempt that failed (the previous policy stayed in force); empty after a success. */
  errors: string[];
  last_attempt_at: string | undefined;
  /** Reloads since start that took effect, and those that failed (for metrics). */
  reloads: number;
  reload_failures: number;
}

/**
 * Reloads the policy directory when a file in it changes (and on SIGHUP): the new set is read,
 * validated and compiled first, then swapped in with its address guard in one assignment, so a
 * request sees either the old policy or the new one. A broken change keeps the last good policy
 * in force and shows its errors at /policy/status.
 */
export class PolicyReloader {
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly rt: ProxyRuntime) {
    const p = rt.current.policy;
    rt.policyStatus = { version: p.version, files: p.files, loaded_at: new Date().toISOString(), rules: p.rules.length, errors: [], last_attempt_at: undefined, reloads: 0, reload_failures: 0 };
  }

  private running: Promise<boolean> | undefined;
  private again = false;

  /** Loads now (reading off the main thread); resolves true when a new policy is in force. */
  reload(trigger: 'file change' | 'SIGHUP'): Promise<boolean> {
    // One load at a time; a change during a load triggers exactly one more.
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = this.load(trigger).finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        void this.reload(trigger);
      }
    });
    return this.running;
  }

  private async load(trigger: string): Promise<boolean> {
    const { rt } = this;
    const log = rt.logger.log;
    const started = performance.now();
    const status = rt.policyStatus!;
    status.last_attempt_at = new Date().toISOString();
    try {
      const policy = await loadPolicyDirOffThread(rt.config.policiesDir);
      const previous = rt.current.policy.version;
      rt.current = { policy, guard: new AddressGuard([...rt.config.allow_ranges, ...policy.allowRanges]) };
      rt.policyStatus = {
        version: policy.version, files: policy.files, loaded_at: status.last_attempt_at, rules: policy.rules.length, errors: [],
        last_attempt_at: status.last_attempt_at, reloads: status.reloads + 1, reload_failures: status.reload_failures,
      };
      log.info({ trigger, previous, policy_version: policy.version, ms: Math.round(performance.now() - started) }, 'policy reloaded');
      return true;
    } catch (err) {
      status.reload_failures++;
      status.errors = err instanceof FileValidationError ? err.problems.map(formatProblem) : [(err as Error).message];
      log.error({ trigger, errors: status.errors, policy_version: rt.current.policy.version }, 'policy reload failed; the last good policy stays in force');
      return false;
    }
  }

  /** Watches the policy directory (recursively: category lists count), reloading 200 ms after the last change. */
  watch(): void {
    try {
      this.watcher = watch(this.rt.config.policiesDir, { recursive: true }, () => {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => void this.reload('file change'), 200);
      });
      this.watcher.on('error', (err) => this.rt.logger.log.warn({ err: err.message }, 'policy watcher failed; reload with SIGHUP'));
    } catch (err) {
      this.rt.logger.log.warn({ err: (err as Error).message }, 'cannot watch the policy directory; reload with SIGHUP');
    }
  }

  /** Stops watching. */
  close(): void {
    clearTimeout(this.timer);
    this.watcher?.close();
  }
}
