import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { jsonSchemas } from '../config/json-schema.js';

/** `egress-proxy schema`: writes the JSON Schemas that editors use to check and complete YAML files. */
export function registerSchema(program: Command): void {
  program
    .command('schema')
    .description('Write JSON Schemas for policy files (policies/schema.json) and the config file (config.schema.json).')
    .option('--policies <dir>', 'where to write schema.json for policy files', 'policies')
    .option('--config-out <file>', 'where to write the config file schema', 'docs/config.schema.json')
    .action((opts: { policies: string; configOut: string }) => {
      const s = jsonSchemas();
      writeFileSync(join(opts.policies, 'schema.json'), JSON.stringify(s.policy, null, 2) + '\n');
      writeFileSync(opts.configOut, JSON.stringify(s.config, null, 2) + '\n');
      process.stdout.write(`wrote ${join(opts.policies, 'schema.json')} and ${opts.configOut}\n`);
    });
}
