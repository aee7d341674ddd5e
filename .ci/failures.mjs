// Prints the failed tests of one vitest JSON report (vitest's `json` reporter), one
// block per test: file, test name, and the first lines of its error. CI prints this at
// the very end of its output, where a truncated log still shows it.
// Usage: node .ci/failures.mjs <report.json> <label>
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

const [reportPath, label = ''] = process.argv.slice(2);
let report;
try {
  report = JSON.parse(readFileSync(reportPath, 'utf8'));
} catch (err) {
  console.log(`qmesh CI: ${label}: no vitest report at ${reportPath} (${err.message}); see the log above`);
  process.exit(0);
}

const strip = (text) => text.replace(/\x1b\[[0-9;]*m/g, '');
let shown = 0;
for (const file of report.testResults ?? []) {
  const name = relative(process.cwd(), file.name);
  const failed = (file.assertionResults ?? []).filter((t) => t.status === 'failed');
  if (failed.length === 0 && file.status === 'failed') {
    // A file that failed outside any test (import error, hook timeout).
    shown++;
    console.log(`qmesh CI: ${label}: FAILED ${name}: ${strip(file.message ?? '').split('\n').slice(0, 6).join('\n    ')}`);
  }
  for (const test of failed) {
    shown++;
    const message = strip((test.failureMessages ?? []).join('\n')).split('\n').slice(0, 8).join('\n    ');
    console.log(`qmesh CI: ${label}: FAILED ${name} > ${test.fullName}\n    ${message}`);
  }
}
if (shown === 0) console.log(`qmesh CI: ${label}: no failed test in the report (${report.numFailedTests ?? '?'} failed per vitest)`);
