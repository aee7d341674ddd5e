// bench/report.ts: number and cell formatting, ratios, the text and Markdown
// tables, and the README results block.
import { describe, expect, it } from 'vitest';
import {
  formatCell,
  formatNumber,
  formatRatio,
  formatTarget,
  markdownReport,
  markdownTable,
  README_END,
  README_START,
  replaceReadmeBlock,
  tableRows,
  textTable,
  type BenchReport,
} from '../../bench/report.js';
import type { ScenarioResult } from '../../bench/scenarios/scenario.js';

const s3: ScenarioResult = {
  id: 3,
  title: 'latency',
  seconds: 4.2,
  notes: ['a note'],
  errors: [],
  details: {},
  figures: [
    {
      key: 's3.p50',
      label: 'S3 p50',
      unit: 'ms',
      higherIsBetter: false,
      values: {
        plain: { value: 0.32, min: 0.25, max: 1.1 },
        stunnel: { value: 10.7, min: 3.8, max: 30 },
        qmesh: { value: 0.64, min: 0.5, max: 2 },
      },
      target: { text: 'qmesh <= 2x plain and <= 0.2x stunnel', met: true },
    },
    {
      key: 's1.rt',
      label: 'round trips',
      unit: 'RT',
      higherIsBetter: false,
      values: { plain: { value: 2.013 }, qmesh: { value: NaN, note: 'error: tunnel down' } },
      target: { text: 'qmesh <= 1.1', met: null },
    },
  ],
};

const report: BenchReport = {
  run: {
    mode: 'quick',
    startedAt: '2030-01-02T03:04:05.678Z',
    finishedAt: '2030-01-02T03:05:05.678Z',
    seconds: 60,
    cores: 2,
    cpuModel: 'Test CPU',
    node: 'v20.0.0',
    kernel: '6.1',
    stunnel: 'stunnel 5.68',
    loadAverage: { start: 1, end: 2 },
    transports: ['plain', 'stunnel', 'qmesh'],
  },
  scenarios: [s3],
};

describe('formatNumber', () => {
  it('picks digits by unit and size', () => {
    expect(formatNumber(2.0149, 'RT')).toBe('2.01');
    expect(formatNumber(1234.6, 'conn/s')).toBe('1235');
    expect(formatNumber(0.3214, 'ms')).toBe('0.321');
    expect(formatNumber(3.214, 'ms')).toBe('3.21');
    expect(formatNumber(32.14, 'ms')).toBe('32.1');
    expect(formatNumber(321.4, 'MB/s')).toBe('321');
    expect(formatNumber(NaN, 'ms')).toBe('-');
  });
});

describe('formatCell and formatRatio', () => {
  it('shows value with its min..max spread, a note instead when there is one, "-" when absent', () => {
    expect(formatCell({ value: 0.32, min: 0.25, max: 1.1 }, 'ms')).toBe('0.320 (0.250..1.10)');
    expect(formatCell({ value: 5 }, 'RT')).toBe('5.00');
    expect(formatCell({ value: NaN, note: 'no proxy' }, 'KiB')).toBe('no proxy');
    expect(formatCell(undefined, 'ms')).toBe('-');
  });

  it('prints ratios with an x and one decimal from 10 up', () => {
    expect(formatRatio(0.5981)).toBe('0.60x');
    expect(formatRatio(12.34)).toBe('12.3x');
    expect(formatRatio(NaN)).toBe('-');
  });

  it('states the target verdict', () => {
    expect(formatTarget(s3.figures[0]!)).toBe('qmesh <= 2x plain and <= 0.2x stunnel: MET');
    expect(formatTarget(s3.figures[1]!)).toBe('qmesh <= 1.1: not judged');
    expect(formatTarget({ ...s3.figures[0]!, target: { text: 't', met: false } })).toBe('t: missed');
  });
});

describe('tableRows', () => {
  it('has one row per figure with ratios of qmesh to plain and to stunnel', () => {
    const rows = tableRows([s3]);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toEqual([
      '3',
      'S3 p50',
      'ms',
      '0.320 (0.250..1.10)',
      '10.7 (3.80..30.0)',
      '0.640 (0.500..2.00)',
      '2.00x',
      '0.06x',
      'qmesh <= 2x plain and <= 0.2x stunnel: MET',
    ]);
    // qmesh failed: its cell says why and no ratio is made up.
    expect(rows[1]!.slice(3, 8)).toEqual(['2.01', '-', 'error: tunnel down', '-', '-']);
  });
});

describe('textTable and markdownTable', () => {
  it('pads columns to the widest cell', () => {
    const t = textTable(['a', 'bb'], [['xxx', 'y']]);
    expect(t.split('\n')).toEqual(['a    bb', '---  --', 'xxx  y', '']);
  });

  it('writes a Markdown table and escapes pipes', () => {
    expect(markdownTable(['a', 'b'], [['1|2', '3']])).toBe('| a | b |\n|---|---|\n| 1\\|2 | 3 |\n');
  });

  it('puts date, core count and notes in the Markdown report', () => {
    const md = markdownReport(report);
    expect(md).toContain('quick run, 2030-01-02');
    expect(md).toContain('2 cores (Test CPU)');
    expect(md).toContain('- a note');
    expect(md).toContain('| 3 | S3 p50 | ms |');
  });
});

describe('replaceReadmeBlock', () => {
  it('replaces only the text between the markers', () => {
    const readme = `intro\n${README_START}\nold table\n${README_END}\noutro\n`;
    expect(replaceReadmeBlock(readme, 'new table\n')).toBe(`intro\n${README_START}\nnew table\n${README_END}\noutro\n`);
  });

  it('throws when the markers are missing', () => {
    expect(() => replaceReadmeBlock('no markers', 'x')).toThrow(/markers/);
  });
});
