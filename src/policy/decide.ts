import type { ReasonId } from '../errors/reasons.js';
import type { CompiledPolicy } from './load.js';

/** What the policy is asked about: one request or tunnel, before any byte goes upstream. */
export interface PolicyQuery {
  kind: 'http' | 'connect' | 'websocket';
  host: string;
  port: number;
}

/** The answer: a value, never an exception. `rule` names what decided, for the log and block page. */
export interface Decision {
  action: 'allow' | 'deny';
  reason: ReasonId;
  rule: string;
  version: string;
}

/**
 * Decides one request. Order: (1) the destination port against the port list for its kind,
 * (2) the default action. Address checks happen later, on the resolved address.
 */
export function decide(policy: CompiledPolicy, q: PolicyQuery): Decision {
  const ports = q.kind === 'connect' ? policy.connectPorts : policy.httpPorts;
  if (!ports.has(q.port)) {
    return {
      action: 'deny',
      reason: 'port_not_allowed',
      rule: q.kind === 'connect' ? 'network.connect_ports' : 'network.http_ports',
      version: policy.version,
    };
  }
  return {
    action: policy.defaultAction,
    reason: policy.defaultAction === 'allow' ? 'allowed' : 'policy_denied',
    rule: 'default',
    version: policy.version,
  };
}
