// Reads and writes the PEM files of a qmesh PKI directory (ca.crt, ca.key,
// <name>.crt, <name>.key) with safe modes and errors that say what to run.
// Used by init-ca.ts and issue-host.ts.

import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ErrorCodes, QmeshError } from '../errors.js';

export const CA_CERT_FILE = 'ca.crt';
export const CA_KEY_FILE = 'ca.key';
/** Private keys: owner read/write only. */
export const KEY_MODE = 0o600;
/** Certificates are public. */
export const CERT_MODE = 0o644;
/** The PKI directory holds the CA key: owner only. */
export const DIR_MODE = 0o700;

export function ensurePkiDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  } catch (err) {
    throw new QmeshError(ErrorCodes.PKI, `cannot create PKI directory ${dir}: ${(err as Error).message}; check the path and permissions`, { cause: err });
  }
}

/**
 * Writes through a temporary file and rename, so a reader never sees half a key
 * and an existing file's looser mode is never kept.
 */
export function writeFileAtomic(path: string, data: string, mode: number): void {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    writeFileSync(tmp, data, { mode, flag: 'wx' });
    chmodSync(tmp, mode); // the umask may have narrowed or the fs widened the mode
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new QmeshError(ErrorCodes.PKI, `cannot write ${path}: ${(err as Error).message}; check the directory's permissions and free space`, { cause: err });
  }
}

export interface CaFiles {
  caCertPem: string;
  caKeyPem: string;
}

export function readCaFiles(dir: string): CaFiles {
  const initHint = `run \`qmesh pki init --dir ${dir} --trust-domain TD\` first`;
  const read = (file: string): string => {
    const path = join(dir, file);
    if (!existsSync(path)) throw new QmeshError(ErrorCodes.PKI, `${file} not found in ${dir}: ${initHint}`);
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new QmeshError(ErrorCodes.PKI, `cannot read ${path}: ${(err as Error).message}; run as the user that owns ${dir}`, { cause: err });
    }
  };
  return { caKeyPem: read(CA_KEY_FILE), caCertPem: read(CA_CERT_FILE) };
}
