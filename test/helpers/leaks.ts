/**
 * The leak scanner of the secrets suites (unit and netns): finds any 8-byte piece of a key, in
 * every encoding a log, error or metric could carry it, in captured outputs.
 */
import { toHex } from '../../src/util/hex.ts';

export interface Secret {
  readonly name: string;
  readonly bytes: Uint8Array;
}

/** Shortest partial leak searched for, in bytes of key (a full key is 32). */
export const PARTIAL_BYTES = 8;

/**
 * The forms a leaked key could take: hex (either case), base64 (padded or not, at each of the
 * three byte alignments, so a base64 of a slice is found too), base64url, the raw bytes, and the
 * decimal lists a serialised Uint8Array prints as. Each as needles of PARTIAL_BYTES worth of key
 * (16 hex, 12 base64 characters), so a cut-off key is found as surely as a whole one.
 */
export function needles(secret: Uint8Array): { encoding: string; needle: string | Buffer }[] {
  const out: { encoding: string; needle: string | Buffer }[] = [];
  const windows = (encoding: string, text: string, length: number, step = 1): void => {
    for (let i = 0; i + length <= text.length; i += step) out.push({ encoding, needle: text.slice(i, i + length) });
  };
  windows('hex', toHex(secret), PARTIAL_BYTES * 2);
  for (let align = 0; align < 3; align++) {
    const slice = Buffer.from(secret.subarray(align));
    // The last quad depends on padding; a 16-character window of what precedes it is exact.
    const b64 = slice.toString('base64').replace(/=+$/, '');
    windows('base64', b64.slice(0, b64.length - 4), 16);
    const b64url = slice.toString('base64url');
    windows('base64url', b64url.slice(0, b64url.length - 4), 16);
  }
  for (let i = 0; i + PARTIAL_BYTES <= secret.length; i++) out.push({ encoding: 'raw', needle: Buffer.from(secret.subarray(i, i + PARTIAL_BYTES)) });
  const decimal = [...secret].map(String);
  for (let i = 0; i + PARTIAL_BYTES <= decimal.length; i++) {
    out.push({ encoding: 'decimal list', needle: decimal.slice(i, i + PARTIAL_BYTES).join(',') });
    out.push({ encoding: 'decimal list', needle: decimal.slice(i, i + PARTIAL_BYTES).join(', ') });
  }
  return out;
}

/** Every secret found in any of the captured outputs, as "<secret> as <encoding> in <output>". */
export function findLeaks(outputs: Record<string, string | Uint8Array>, secrets: readonly Secret[]): string[] {
  const found = new Set<string>();
  for (const [where, output] of Object.entries(outputs)) {
    const raw = typeof output === 'string' ? Buffer.from(output, 'utf8') : Buffer.from(output);
    // Hex is searched case-insensitively, the rest exactly; JSON may have escaped "/" as "\/".
    const text = raw.toString('latin1');
    const unescaped = text.replaceAll('\\/', '/');
    const lower = text.toLowerCase();
    const collapsed = text.replace(/\s+/g, ' ');
    for (const secret of secrets) {
      for (const { encoding, needle } of needles(secret.bytes)) {
        const hit =
          typeof needle !== 'string'
            ? raw.includes(needle)
            : encoding === 'hex'
              ? lower.includes(needle)
              : unescaped.includes(needle) || collapsed.includes(needle);
        if (hit) {
          found.add(`${secret.name} as ${encoding} in ${where}`);
          break;
        }
      }
    }
  }
  return [...found];
}
