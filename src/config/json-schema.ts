import { z } from 'zod';
import { policyFileSchema } from '../policy/schema.js';
import { configSchema } from './schema.js';

/** JSON Schema for editors, generated from the same schemas that validate at load time. */
export function jsonSchemas(): { policy: unknown; config: unknown } {
  const opts = { io: 'input', unrepresentable: 'any' } as const;
  return {
    policy: z.toJSONSchema(policyFileSchema, opts),
    config: z.toJSONSchema(configSchema, opts),
  };
}
