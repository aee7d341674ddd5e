// Segmentation offloads on the hosts' underlay interfaces. With TSO/GSO on
// (the veth default) a host's TCP leaves as 64 KB super-packets that stay whole
// across the veth pair and the bridge, so a per-packet drop rule on the other
// side would drop 45 wire packets at a time, and only for TCP (qmesh's UDP
// datagrams are real packets). Scenario 9 turns them off on each host's eth0 so
// that everything crossing the underlay is cut into MTU-sized packets and
// "1 % loss" means 1 % of wire packets for every transport.
import type { Mesh } from '../../daemon/demo/mesh.js';

export async function setSegmentationOffloads(mesh: Mesh, on: boolean): Promise<void> {
  const v = on ? 'on' : 'off';
  await Promise.all(
    mesh.hosts.map(async (h) => {
      // tx-udp-segmentation too: the qmesh engine sends runs of datagrams with UDP_SEGMENT.
      const r = await mesh.topo.exec(h.ns, ['ethtool', '-K', 'eth0', 'tso', v, 'gso', v, 'tx-udp-segmentation', v]);
      if (r.code !== 0) throw new Error(`ethtool -K eth0 tso/gso ${v} in ${h.ns}: ${r.stderr.trim()} (install Debian's ethtool)`);
    }),
  );
}
