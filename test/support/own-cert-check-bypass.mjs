// Module hooks for a daemon that must present a certificate it would itself
// refuse to load. At start-up daemon/identity/credentials.ts runs the peer
// check (checkPeerCertificate) on the host's own certificate, so `qmesh run`
// exits before it ever presents an expired, CA-flagged, ... certificate. A
// refusal test needs such a daemon at a peer's address: with these hooks,
// credentials.js alone gets a checkPeerCertificate that logs the refusal (one
// JSON line on stderr, "own certificate check bypassed") and accepts. The
// tunnel code (tunnel/, inbound/) imports the real module, so the daemon judges
// its peers as usual. Used by test/e2e/identity-refusals.test.ts through
// `Mesh.nodeArgs` (`node --import` of a data: URL that calls module.register).
//
// Runs in Node's module-hooks thread; plain ESM so no build step is needed.

/** @type {import('node:module').ResolveHook} */
export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  if (context.parentURL?.endsWith('/identity/credentials.js') && resolved.url.endsWith('/identity/peer-identity.js')) {
    return { url: shimUrl(resolved.url), shortCircuit: true };
  }
  return resolved;
}

/** A data: module re-exporting the real peer-identity.js with checkPeerCertificate wrapped. */
function shimUrl(realUrl) {
  const real = JSON.stringify(realUrl);
  const source = `
import * as real from ${real};
export * from ${real};
export function checkPeerCertificate(der, opts) {
  const result = real.checkPeerCertificate(der, opts);
  if (result.ok) return result;
  process.stderr.write(JSON.stringify({ msg: 'own certificate check bypassed', code: result.code, reason: result.reason }) + '\\n');
  return { ok: true, name: opts.expectedName, uri: 'spiffe://' + opts.trustDomain + '/host/' + opts.expectedName };
}
`;
  return `data:text/javascript,${encodeURIComponent(source)}`;
}
