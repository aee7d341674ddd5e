// The short CLI verbs: check-config, iptables apply|remove|print|check, pki init|issue.
// Each prints a short human summary on success and throws QmeshError on failure.
import { loadConfig } from '../config/load.js';
import { ErrorCodes, QmeshError } from '../errors.js';
import { loadCredentials } from '../identity/credentials.js';
import { RuleManager } from '../iptables/manager.js';
import { initCa, issueHost } from '../pki/index.js';
import { checkWithDataPlane } from '../dataplane/data-plane.js';
import { readEtcdTls } from '../membership/etcd-session.js';

const out = (line: string): void => {
  process.stdout.write(line + '\n');
};

/** Validates exactly what `run` would load: the config, its certificate files and the rules. */
export function checkConfigCommand(file: string): void {
  const config = loadConfig(file, process.env);
  const creds = loadCredentials(config);
  new RuleManager(config); // builds the rule set: throws if it cannot be expressed
  // What the data plane itself would refuse (it checks every snapshot again), or that it is not built.
  const etcd = config.membership.source === 'etcd' ? readEtcdTls(config) : null;
  const addon = checkWithDataPlane(config, creds);
  out(`config OK: ${config.file}`);
  out(`  node ${config.node.name} (${creds.identity}), certificate valid until ${creds.notAfter.toISOString()}`);
  out(`  quic ${config.listen.quic.host}:${config.listen.quic.port}, capture port ${config.listen.capture}, admin ${config.listen.admin.host}:${config.listen.admin.port}`);
  out(`  local cidrs: ${config.local.cidrs.join(', ') || '(none)'}`);
  for (const p of config.peers) out(`  peer ${p.name} at ${p.endpoint.host}:${p.endpoint.port} owns ${p.cidrs.join(', ')}`);
  const failClosed = config.capture.failClosedCidrs;
  if (failClosed.length > 0) out(`  fail-closed cidrs (dropped unless local or a peer's): ${failClosed.join(', ')}`);
  if (etcd) {
    const e = config.membership.etcd;
    out(`  membership: etcd ${e.endpoints.join(', ')} as user "${etcd.user}", entries under ${e.prefix} (this host: ${e.prefix}${config.node.name}), lease ${e.leaseTtlMs / 1000} s, cache ${e.cacheFile}`);
    if (etcd.user !== config.node.name) out(`  warning: the etcd client certificate's CN "${etcd.user}" is not node.name "${config.node.name}": with the RBAC of README "Membership", etcd refuses its registration`);
  }
  if (addon) out(`  warning: ${addon}`);
}

export async function iptablesCommand(verb: 'apply' | 'remove' | 'print' | 'check', file: string, backend?: 'nft' | 'legacy'): Promise<void> {
  const config = loadConfig(file, process.env);
  const manager = new RuleManager(config, backend ? { backend } : {});
  switch (verb) {
    case 'print':
      process.stdout.write(manager.print());
      return;
    case 'apply':
      await manager.apply();
      out(`qmesh iptables rules applied (${await manager.backend()} backend)`);
      return;
    case 'remove':
      await manager.remove();
      out(`qmesh iptables rules removed (${await manager.backend()} backend)`);
      return;
    case 'check': {
      const { missing } = await manager.check();
      if (missing.length === 0) {
        out('qmesh iptables rules are installed exactly');
        return;
      }
      for (const m of missing) out(m);
      throw new QmeshError(ErrorCodes.IPTABLES, `${missing.length} difference(s) from the expected rules; run \`qmesh iptables apply\``);
    }
  }
}

export async function pkiInitCommand(opts: { dir: string; trustDomain: string; lifetimeDays: string; force: boolean }): Promise<void> {
  const days = Number(opts.lifetimeDays);
  if (!Number.isInteger(days) || days <= 0) throw new QmeshError(ErrorCodes.USAGE, `--lifetime-days ${opts.lifetimeDays}: expected a positive whole number`);
  const r = await initCa({ dir: opts.dir, trustDomain: opts.trustDomain, lifetimeDays: days, force: opts.force });
  out(`CA for trust domain ${r.trustDomain}: ${r.certPath} (key ${r.keyPath}), valid until ${r.notAfter.toISOString()}`);
}

export async function pkiIssueCommand(opts: { dir: string; name: string; lifetimeMs: number }): Promise<void> {
  const r = await issueHost({ dir: opts.dir, name: opts.name, lifetimeMs: opts.lifetimeMs });
  out(`${r.spiffeId}: ${r.certPath} (key ${r.keyPath}), valid until ${r.notAfter.toISOString()}`);
}
