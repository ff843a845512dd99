import { statSync } from 'node:fs';
import type { Command } from 'commander';
import { fileLines, verifyChain } from '../logging/chain.js';

/** `egress-proxy logs verify`: checks the hash chain of a tamper-evident log (log.tamper_evident). */
export function registerLogs(program: Command): void {
  const logs = program.command('logs').description('Work with the proxy\'s log files.');
  logs.command('verify')
    .description('Check the hash chain of logs written with log.tamper_evident: each line\'s "prev" must be the SHA-256 of the line before, across the files in the order given (oldest first, e.g. access.log.2 access.log.1 access.log). Exit 0 when intact, 1 at the first broken link, 2 when a file cannot be read.')
    .argument('<files...>', 'log files, oldest first')
    .action((files: string[]) => {
      for (const f of files) {
        let problem: string | undefined;
        try {
          if (!statSync(f).isFile()) problem = 'not a regular file';
        } catch (err) {
          problem = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
        }
        if (problem) {
          process.stderr.write(`egress-proxy logs verify: cannot read ${f}: ${problem}\n`);
          process.exit(2);
        }
      }
      let result;
      try {
        result = verifyChain(files, fileLines);
      } catch (err) {
        process.stderr.write(`egress-proxy logs verify: cannot read: ${(err as Error).message}\n`);
        process.exit(2);
      }
      if (result.ok) {
        if (result.anchored) process.stdout.write(`note: ${result.anchored}\n`);
        process.stdout.write(`ok: ${result.lines} lines, last hash ${result.lastHash}\n`);
        return;
      }
      const p = result.problem;
      process.stdout.write(`broken: ${p.file} line ${p.line}: ${p.message}\n(${result.lines} lines verified before it)\n`);
      process.exit(1);
    });
}
