// bench/emulator/emulator-control.ts: the iptables rules that put the link
// emulator (NFQUEUE) and the kernel loss on the underlay, as argv.
import { describe, expect, it } from 'vitest';
import { kernelLossRule, nfqueueRule, QUEUE_NUM } from '../../bench/emulator/emulator-control.js';

describe('nfqueueRule', () => {
  it('queues every non-ICMP packet leaving eth0 to the emulator, bypassing it when none listens', () => {
    const r = nfqueueRule('-A');
    expect(r.slice(0, 4)).toEqual(['-A', 'POSTROUTING', '-o', 'eth0']);
    expect(r.join(' ')).toContain('! -p icmp');
    expect(r.slice(-5)).toEqual(['-j', 'NFQUEUE', '--queue-num', String(QUEUE_NUM), '--queue-bypass']);
  });

  it('deletes with the very same spec', () => {
    expect(nfqueueRule('-D').slice(1)).toEqual(nfqueueRule('-A').slice(1));
  });
});

describe('kernelLossRule', () => {
  it('drops a random fraction of what arrives on eth0', () => {
    const r = kernelLossRule('-A', 0.01);
    expect(r.slice(0, 4)).toEqual(['-A', 'PREROUTING', '-i', 'eth0']);
    expect(r.join(' ')).toContain('-m statistic --mode random --probability 0.01');
    expect(r.slice(-2)).toEqual(['-j', 'DROP']);
    expect(kernelLossRule('-D', 0.01).slice(1)).toEqual(r.slice(1));
  });
});
