#!/usr/bin/env node
import { Command } from 'commander';
import { registerCa } from './cli/ca.js';
import { registerDevices } from './cli/devices.js';
import { registerDoctor } from './cli/doctor.js';
import { registerLogs } from './cli/logs.js';
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
registerCa(program);
registerDevices(program);
registerLogs(program);

await program.parseAsync(process.argv);
