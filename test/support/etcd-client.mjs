// Runs a list of etcd operations with the npm `etcd3` client (the client the daemon uses)
// as one etcd user, and prints one JSON line with the outcome of each. Plain Node ESM:
// daemon/demo/etcd-cluster.ts starts it with `ip netns exec <ns> node etcd-client.mjs`,
// because the cluster's addresses are reachable only from inside the test's namespaces.
//
//   node etcd-client.mjs '<json>'   json: { hosts, ca, cert, key, ops: [...] }
//
// Each op runs in order and never stops the run; its result is
//   { ok: true, value? }  or  { ok: false, error: <error class name>, message }.
// Ops:
//   { op: 'put', key, value }            { op: 'get', key }  -> value or null
//   { op: 'delete', key }                { op: 'getPrefix', prefix } -> { key: value }
//   { op: 'lease', key, value, ttl }     grant a lease, put key under it, keepaliveOnce,
//                                        read the key's lease back, revoke, read the key
//                                        again -> { granted, putLease, keptAlive, afterRevoke }
//   { op: 'leaseGrant', ttl }            grant a lease (no keepalive) -> its id
//   { op: 'leasePut', id, key, value }   put key under lease id
//   { op: 'leaseRevoke', id }            revoke lease id (deletes the keys attached to it)
//   { op: 'watchPrefix', prefix }        start a watcher on the prefix (its events are collected)
//   { op: 'watchEvents', count, ms }     wait up to ms for count events -> [{ type, key, value }]
import { readFileSync } from 'node:fs';
import { Etcd3 } from 'etcd3';

const CALL_MS = 5_000;
const spec = JSON.parse(process.argv[2] ?? '{}');

const client = new Etcd3({
  hosts: spec.hosts,
  credentials: {
    rootCertificate: readFileSync(spec.ca),
    certChain: readFileSync(spec.cert),
    privateKey: readFileSync(spec.key),
  },
  dialTimeout: CALL_MS,
  defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_MS }),
  // etcd3's default fault handling retries only errors it deems recoverable (unavailable,
  // connection trouble), never a permission refusal, so a refusal shows up as itself.
});

const events = [];
const watchers = [];

async function run(op) {
  switch (op.op) {
    case 'put':
      await client.put(op.key).value(op.value);
      return undefined;
    case 'get':
      return await client.get(op.key).string();
    case 'delete':
      await client.delete().key(op.key);
      return undefined;
    case 'getPrefix':
      return await client.getAll().prefix(op.prefix).strings();
    case 'lease': {
      const lease = client.lease(op.ttl, { autoKeepAlive: false });
      lease.on('lost', () => undefined);
      const granted = await lease.grant();
      await lease.put(op.key).value(op.value);
      const putLease = (await client.get(op.key).exec()).kvs[0]?.lease ?? null;
      const keptAlive = (await lease.keepaliveOnce()).TTL;
      await lease.revoke();
      const afterRevoke = await client.get(op.key).string();
      return { granted, putLease, keptAlive, afterRevoke };
    }
    case 'leaseGrant':
      return (await client.leaseClient.leaseGrant({ TTL: op.ttl })).ID;
    case 'leasePut':
      await client.put(op.key).value(op.value).lease(op.id);
      return undefined;
    case 'leaseRevoke':
      await client.leaseClient.leaseRevoke({ ID: op.id });
      return undefined;
    case 'watchPrefix': {
      const watcher = await client.watch().prefix(op.prefix).create();
      watchers.push(watcher);
      watcher.on('put', (kv) => events.push({ type: 'put', key: kv.key.toString(), value: kv.value.toString() }));
      watcher.on('delete', (kv) => events.push({ type: 'delete', key: kv.key.toString() }));
      watcher.on('error', (err) => events.push({ type: 'error', error: err.constructor.name, message: err.message }));
      return undefined;
    }
    case 'watchEvents': {
      const deadline = Date.now() + op.ms;
      while (events.length < op.count && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      return events.slice();
    }
    default:
      throw new Error(`unknown op ${JSON.stringify(op.op)}`);
  }
}

const results = [];
for (const op of spec.ops ?? []) {
  try {
    results.push({ ok: true, value: await run(op) });
  } catch (err) {
    results.push({ ok: false, error: err?.constructor?.name ?? typeof err, message: String(err?.message ?? err) });
  }
}
for (const w of watchers) await w.cancel().catch(() => undefined);
client.close();
process.stdout.write(JSON.stringify(results) + '\n');
process.exit(0);
