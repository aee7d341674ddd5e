// Loading a config object as /etc/qmesh/config.json, and the message of a refusal:
// shared by the unit tests of the loader (config.test.ts, membership.test.ts).
import { expect } from 'vitest';
import { parseConfig, type Config } from '../../daemon/config/load.js';

export const load = (raw: object): Config => parseConfig(raw, '/etc/qmesh/config.json');

/** The loader's message for a config it must refuse (QMESH_ERR_CONFIG); fails the test if it is accepted. */
export const refusal = (raw: object): string => {
  try {
    load(raw);
  } catch (err) {
    expect((err as { code?: string }).code).toBe('QMESH_ERR_CONFIG');
    return (err as Error).message;
  }
  throw new Error('config was accepted');
};
