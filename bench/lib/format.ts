/** Number formatting and Markdown tables for benchmark reports. */
import { stats } from './measure.ts';

/** 3 significant digits, no exponent, thousands separators for large values: 2.46, 812, 12,300. */
export function fmt(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs >= 1000) return Math.round(Number(value.toPrecision(3))).toLocaleString('en-US');
  return Number(value.toPrecision(3)).toString();
}

/** "median (min–max)". */
export function fmtRange(median: number, min: number, max: number): string {
  return `${fmt(median)} (${fmt(min)}–${fmt(max)})`;
}

/** "median (min–max)" over rounds of the finite values: the median alone for one, "–" for none. */
export function fmtSummary(values: readonly (number | undefined)[]): string {
  const v = values.filter((x): x is number => x !== undefined && Number.isFinite(x));
  if (v.length === 0) return '–';
  const st = stats(v);
  return v.length === 1 ? fmt(st.median) : fmtRange(st.median, st.min, st.max);
}

/** A Markdown table with padded columns (readable as plain text too). */
export function markdownTable(header: readonly string[], rows: readonly (readonly string[])[], rightAlign: readonly boolean[] = []): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    '| ' + widths.map((w, i) => (rightAlign[i] ? (cells[i] ?? '').padStart(w) : (cells[i] ?? '').padEnd(w))).join(' | ') + ' |';
  const rule = '|' + widths.map((w, i) => (rightAlign[i] ? '-'.repeat(w + 1) + ':' : '-'.repeat(w + 2))).join('|') + '|';
  return [line(header), rule, ...rows.map(line)].join('\n');
}
