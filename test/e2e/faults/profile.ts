// Sizes of the fault suite: the short profile by default (CI: all cases in a few
// minutes on a loaded 2-core machine), the full sizes with QMESH_FAULTS=full.
const MiB = 1024 * 1024;

export const FULL = process.env.QMESH_FAULTS === 'full';

export const PROFILE = FULL
  ? { name: 'full', killTransferBytes: 1024 * MiB, lossBytes: 256 * MiB, halfCloseBytes: 100 * MiB, shortConns: 10_000, drainConns: 40 }
  : { name: 'short', killTransferBytes: 256 * MiB, lossBytes: 16 * MiB, halfCloseBytes: 32 * MiB, shortConns: 2_000, drainConns: 40 };

/** A test's own time limit, scaled for the full sizes. */
export const testMs = (shortMs: number, fullMs = shortMs * 4): number => (FULL ? fullMs : shortMs);

/** One greppable line per case: `FIGURE case-N name: ...`. */
export function figure(caseId: string, text: string): void {
  console.log(`FIGURE ${caseId}: ${text} [profile ${PROFILE.name}]`);
}
