// Tests that need an outside program (promtool, openssl, systemd-analyze, ...) skip
// where it is missing, with a reason, so that `npm test` runs on a developer's machine
// that lacks some of them. In CI, `.ci/run` sets QMESH_TEST_REQUIRE_TOOLS=1: there a
// missing program is a fault of .ci/run, and the check throws instead of skipping, so a
// green CI cannot hide a test that never ran.
import { findProgram } from '../../daemon/demo/demo-wire.js';

/** True when a missing tool must fail the test run (set by .ci/run). */
export const REQUIRE_TOOLS = process.env.QMESH_TEST_REQUIRE_TOOLS === '1';

const warned = new Set<string>();

/**
 * The path of program `name`, or undefined where it is missing and tests may skip.
 * With QMESH_TEST_REQUIRE_TOOLS=1 a missing program throws, naming the Debian package
 * that `.ci/run` must install. Outside CI a missing program prints one line saying
 * which tests skip and why.
 */
export function requireTool(name: string, debianPackage: string): string | undefined {
  const found = findProgram(name);
  if (found !== undefined) return found;
  if (REQUIRE_TOOLS) {
    throw new Error(`tool ${name} is missing; .ci/run must install it (package ${debianPackage}) — QMESH_TEST_REQUIRE_TOOLS=1 turns this skip into a failure`);
  }
  if (!warned.has(name)) {
    warned.add(name);
    console.warn(`skipping the tests that need ${name}: it is not installed (Debian package ${debianPackage})`);
  }
  return undefined;
}

/** For `it.skipIf(...)`: true where `name` is missing and the test may skip; throws in CI. */
export function skipUnlessTool(name: string, debianPackage: string): boolean {
  return requireTool(name, debianPackage) === undefined;
}
