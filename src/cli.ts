#!/usr/bin/env node
/** The `wgts` command. */
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { runConformanceCommand } from './cli/conformance.ts';
import { genkey, pubkey } from './cli/keys.ts';

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command()
  .name('wgts')
  .description('Userspace WireGuard in TypeScript')
  .version(version, '-v, --version');

program
  .command('genkey')
  .description('print a new base64 private key (like wg genkey)')
  .action(() => genkey(process.stdout));

program
  .command('pubkey')
  .description('read a base64 private key on stdin, print its public key (like wg pubkey)')
  .action(() => pubkey(process.stdin, process.stdout));

program
  .command('conformance')
  .description('check test vectors on every crypto backend (no FILE: the bundled set)')
  .argument('[files...]', 'vector files (JSON)')
  .option('--backend <name>', 'check only this backend (noble|sodium)')
  .action(async (files: string[], options: { backend?: string }) => {
    process.exitCode = await runConformanceCommand(files, options.backend);
  });

await program.parseAsync(process.argv);
