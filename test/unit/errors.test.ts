// Every error code qmesh can report is documented in the README's table.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../daemon/errors.js';

describe('error codes', () => {
  const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  for (const code of Object.values(ErrorCodes)) {
    it(`${code} is in the README's error table`, () => {
      expect(readme).toMatch(new RegExp(`^\\| \`${code}\` \\|`, 'm'));
    });
  }
  it('codes are unique and prefixed', () => {
    const codes = Object.values(ErrorCodes);
    expect(new Set(codes).size).toBe(codes.length);
    for (const c of codes) expect(c).toMatch(/^QMESH_ERR_[A-Z_]+$/);
  });
});
