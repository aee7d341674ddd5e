#!/usr/bin/env node
// The qmesh command line: parses verbs and options (commander), then hands off
// to run.ts (the daemon), the iptables manager, pki/ or demo/. Every failure
// ends with one line "qmesh: <CODE>: <reason>" on stderr and a non-zero exit.
import { Command, Option } from 'commander';
import { isQmeshError } from '../errors.js';
import { parseLifetime } from './lifetime.js';

// Each verb loads only what it needs (the data plane addon and the daemon are slow to load).
const verbs = () => import('./verbs.js');

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

function fail(err: unknown): never {
  if (isQmeshError(err)) {
    process.stderr.write(`qmesh: ${err.code}: ${err.message}\n`);
    process.exit(err.code === 'QMESH_ERR_CONFIG' || err.code === 'QMESH_ERR_USAGE' ? EXIT_USAGE : EXIT_FAILURE);
  }
  process.stderr.write(`qmesh: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(EXIT_FAILURE);
}

const action =
  <A extends unknown[]>(fn: (...args: A) => Promise<void> | void) =>
  async (...args: A): Promise<void> => {
    try {
      await fn(...args);
    } catch (err) {
      fail(err);
    }
  };

const configOption = (): Option => new Option('-c, --config <file>', 'path to the JSON config file').makeOptionMandatory();

const program = new Command('qmesh')
  .description('Carries TCP between functions on different hosts inside mutually authenticated QUIC tunnels.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)')
  .configureOutput({ outputError: (str, write) => write(str) })
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE));

program
  .command('run')
  .description('Run the daemon in the foreground, logging JSON to stdout. Applies the iptables capture rules at start (capture.applyRules) and leaves them when it exits, so captured traffic fails closed. SIGTERM/SIGINT drain and exit 0.')
  .addOption(configOption())
  .action(action(async (opts: { config: string }) => (await import('./run.js')).runCommand(opts.config)));

program
  .command('check-config')
  .description('Validate a config file and the certificates it names, then exit (0 valid, 2 invalid, with the offending key).')
  .addOption(configOption())
  .action(action(async (opts: { config: string }) => (await verbs()).checkConfigCommand(opts.config)));

program
  .command('status')
  .description('Ask the running daemon (its admin listener, listen.admin) for its peers and tunnel health and print them as a table, or as JSON. Exit 0 if it answered, 1 if it is not reachable.')
  .addOption(configOption())
  .option('--json', 'print the /status JSON document as is', false)
  .action(action(async (opts: { config: string; json: boolean }) => (await import('../admin/status-command.js')).statusCommand(opts.config, { json: opts.json })));

const iptables = program.command('iptables').description('Install, remove or print the capture rules (chains QMESH_*, idempotent).');
for (const [verb, doc] of [
  ['apply', 'install or refresh the rules (idempotent)'],
  ['remove', 'remove every qmesh chain and jump; other rules are untouched'],
  ['print', 'print the iptables commands apply would run'],
  ['check', 'exit 0 if the rules are installed exactly, 1 and the differences otherwise'],
] as const) {
  iptables
    .command(verb)
    .description(doc)
    .addOption(configOption())
    .addOption(new Option('--backend <name>', 'iptables backend (default: detect what the host uses)').choices(['nft', 'legacy']))
    .action(action(async (opts: { config: string; backend?: 'nft' | 'legacy' }) => (await verbs()).iptablesCommand(verb, opts.config, opts.backend)));
}

const pki = program.command('pki').description('A mesh CA and per-host certificates (ECDSA P-256, SPIFFE ids).');
pki
  .command('init')
  .description('Create DIR/ca.crt and DIR/ca.key for trust domain TD.')
  .requiredOption('-d, --dir <dir>', 'folder for the CA files (created 0700)')
  .requiredOption('-t, --trust-domain <td>', 'SPIFFE trust domain, e.g. qmesh.test')
  .option('--lifetime-days <days>', 'CA validity in days', '3650')
  .option('--force', 'overwrite an existing CA (every host must then be reissued)', false)
  .action(action(async (opts: { dir: string; trustDomain: string; lifetimeDays: string; force: boolean }) => (await verbs()).pkiInitCommand(opts)));
pki
  .command('issue')
  .description('Issue DIR/NAME.crt and DIR/NAME.key, identity spiffe://TD/host/NAME (plus DNS SAN NAME), signed by DIR/ca.key.')
  .requiredOption('-d, --dir <dir>', 'folder holding ca.crt and ca.key')
  .requiredOption('-n, --name <name>', 'host name (DNS label), as in the config\'s node.name')
  .option('--lifetime <duration>', 'validity, e.g. 24h, 90m, 30d', '24h')
  .action(action(async (opts: { dir: string; name: string; lifetime: string }) => (await verbs()).pkiIssueCommand({ ...opts, lifetimeMs: parseLifetime(opts.lifetime) })));

program
  .command('demo')
  .description('Build 2 hosts with function namespaces on this machine (needs root), run a daemon on each, send real requests across, show the wire carries only QUIC, compare latency with plain TCP, then remove everything (also on Ctrl-C).')
  .option('--requests <n>', 'requests per latency sample', '200')
  .option('--keep', 'leave the namespaces and daemons running until Ctrl-C', false)
  .action(action(async (opts: { requests: string; keep: boolean }) => {
    const { runDemo } = await import('../demo/demo.js');
    await runDemo({ requests: Number(opts.requests), keep: opts.keep });
  }));

// With no verb at all, show the help rather than an error.
if (process.argv.length <= 2) {
  program.outputHelp();
  process.exit(0);
}
program.parseAsync(process.argv).catch(fail);
