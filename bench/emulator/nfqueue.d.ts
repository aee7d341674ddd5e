// Types for the `nfqueue` npm package (a libnetfilter_queue binding that ships none).
// Only what link-emulator.ts uses.
declare module 'nfqueue' {
  export const NF_DROP: number;
  export const NF_ACCEPT: number;
  export interface PacketInfo {
    readonly len: number;
    readonly id: number;
  }
  export interface NFQueuePacket {
    readonly info: PacketInfo;
    readonly payload: Buffer;
    setVerdict(verdict: number, mark?: number | null, buffer?: Buffer | null): void;
  }
  export interface NFQueue {
    readonly opened: boolean;
  }
  /** Opens queue `num` with a netlink receive buffer of `bufBytes` and calls back once per packet. */
  export function createQueueHandler(num: number, bufBytes: number, callback: (packet: NFQueuePacket) => void): NFQueue;
  const _default: {
    NF_DROP: number;
    NF_ACCEPT: number;
    createQueueHandler: typeof createQueueHandler;
  };
  export default _default;
}
