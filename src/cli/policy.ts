import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { FileValidationError } from '../config/validate.js';
import { explain } from '../policy/decide.js';
import { loadPolicyDir, type CompiledPolicy } from '../policy/load.js';
import { queryFromSpec, requestSpecSchema } from '../policy/query.js';
import { replay } from '../policy/replay.js';
import { loadInventory, runPolicyTests } from '../policy/testcases.js';

/** Runs `fn`; a validation error is printed as file:line:col lines and ends the command with exit 1. */
function orExit<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof FileValidationError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
}

const load = (dir: string): CompiledPolicy => orExit(() => loadPolicyDir(dir));

const list = (v: string, prev: string[] = []): string[] => [...prev, ...v.split(',').map((x) => x.trim()).filter(Boolean)];

/** `egress-proxy policy …`: check, test, explain and replay, the admin's tools for policy-as-code. */
export function registerPolicy(program: Command): void {
  const policy = program.command('policy').description('Validate, test, explain and replay policy files.');

  policy
    .command('check')
    .description('Validate every policy file; print problems as file:line:col field: message; exit 1 if any.')
    .argument('[dir]', 'policy directory', 'policies')
    .action((dir: string) => {
      const p = load(resolve(dir));
      process.stdout.write(`ok: ${p.files.length} files, ${p.rules.length} rules, ${p.apps.length} apps, ${p.hosts.size} host entries, version ${p.version}\n`);
    });

  policy
    .command('test')
    .description('Run the test cases in DIR/tests/*.yaml against the policy; ends with "N passed, N failed".')
    .argument('[dir]', 'policy directory', 'policies')
    .action((dir: string) => {
      const p = load(resolve(dir));
      const results = orExit(() => runPolicyTests(p, resolve(dir)));
      for (const r of results) {
        process.stdout.write(r.ok ? `ok   ${r.name}\n` : `FAIL ${r.name}\n     want ${r.want}\n     got  ${r.got}\n     (${r.file})\n`);
      }
      const failed = results.filter((r) => !r.ok).length;
      process.stdout.write(`${results.length - failed} passed, ${failed} failed\n`);
      process.exitCode = failed > 0 || results.length === 0 ? 1 : 0;
    });

  policy
    .command('explain')
    .description('Show every rule in order with why it matched or not, and the final decision.')
    .requiredOption('--url <url>', 'destination URL, e.g. https://github.com/acme')
    .option('--method <method>', 'HTTP method', 'GET')
    .option('--kind <kind>', 'http | connect | websocket (connect: a tunnel, no method or path)', 'http')
    .option('--user <name>', 'user name')
    .option('--email <email>', 'user email')
    .option('--groups <list>', 'groups, comma-separated (repeatable)', list)
    .option('--service <id>', 'workload client id')
    .option('--device <id>', 'device id from devices.yaml (omit: no device certificate)')
    .option('--source <ip>', 'client address')
    .option('--time <iso>', 'when (default now)')
    .option('--policies <dir>', 'policy directory', 'policies')
    .option('--json', 'print JSON')
    .action((o: Record<string, string | string[] | boolean | undefined>) => {
      const dir = resolve(String(o.policies));
      const p = load(dir);
      const spec = requestSpecSchema.safeParse({
        url: o.url, method: o.method, kind: o.kind, user: o.user, email: o.email, groups: o.groups ?? [],
        service: o.service, device: o.device, source: o.source, time: o.time,
      });
      if (!spec.success) {
        process.stderr.write(`invalid request: ${spec.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}\n`);
        process.exit(2);
      }
      let q;
      try {
        q = queryFromSpec(spec.data, loadInventory(dir));
      } catch (err) {
        process.stderr.write(`${(err as Error).message}\n`);
        process.exit(2);
      }
      const e = explain(p, q);
      if (o.json) {
        process.stdout.write(JSON.stringify(e, null, 2) + '\n');
        return;
      }
      process.stdout.write(`request: ${q.method ?? 'CONNECT'} ${String(o.url)} as ${q.identity?.user ?? q.identity?.email ?? q.identity?.service ?? 'anonymous'}` +
        ` (groups: ${q.identity?.groups?.join(',') || '-'}; device: ${e.deviceLevels.join(',')})\napps: ${e.apps.join(', ') || '-'}\n\n`);
      e.lines.forEach((l, i) => {
        process.stdout.write(`${String(i + 1).padStart(3)}. ${l.matched ? 'MATCH' : 'skip '} ${l.rule} (${l.action}${l.mode === 'report' ? ', report' : ''}): ${l.why}\n`);
      });
      const d = e.decision;
      process.stdout.write(`\ndecision: ${d.action} by ${d.rule} (reason ${d.reason}, policy ${d.version})` +
        `${d.report.length ? `; report-mode: ${d.report.map((r) => `${r.rule} would ${r.action}`).join(', ')}` : ''}` +
        `${Object.keys(d.modifiers).length ? `; modifiers ${JSON.stringify(d.modifiers)}` : ''}\n`);
    });

  policy
    .command('replay')
    .description('Re-decide past access-log lines with a changed policy and list the requests whose decision would change.')
    .requiredOption('--log <file>', 'access log (JSON lines, as the proxy writes them)')
    .option('--policies <dir>', 'the changed policy directory', 'policies')
    .option('--json', 'print JSON')
    .action((o: { log: string; policies: string; json?: boolean }) => {
      const p = load(resolve(o.policies));
      let text: string;
      try {
        text = readFileSync(o.log, 'utf8');
      } catch (err) {
        process.stderr.write(`cannot read ${o.log}: ${(err as Error).message}\n`);
        process.exit(2);
      }
      const r = replay(text.split('\n'), p);
      if (o.json) {
        process.stdout.write(JSON.stringify(r, null, 2) + '\n');
        return;
      }
      for (const c of r.changes) process.stdout.write(`${c.time} ${c.method} ${c.target} ${c.who}: ${c.before} -> ${c.after}\n`);
      process.stdout.write(`${r.replayed} requests replayed against policy ${p.version}, ${r.changes.length} would change${r.skipped ? `, ${r.skipped} lines skipped` : ''}\n`);
    });
}
