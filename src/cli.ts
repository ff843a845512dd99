#!/usr/bin/env node
import { Command } from 'commander';
import { registerDoctor } from './cli/doctor.js';
import { registerPolicy } from './cli/policy.js';
import { registerSchema } from './cli/schema.js';
import { registerStart } from './cli/start.js';

const program = new Command()
  .name('egress-proxy')
  .description('Zero-trust, identity-aware egress proxy.')
  .version('0.1.0')
  .showHelpAfterError();

registerStart(program);
registerDoctor(program);
registerSchema(program);
registerPolicy(program);

await program.parseAsync(process.argv);
