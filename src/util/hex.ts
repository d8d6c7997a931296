/** Hex and base64 conversions for keys and vectors; strict, with errors that say what was wrong. */

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

export function fromHex(text: string): Uint8Array {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) throw new Error(`not a hex string: "${text.slice(0, 20)}${text.length > 20 ? '…' : ''}"`);
  return new Uint8Array(Buffer.from(text, 'hex'));
}

/** A 32-byte key from standard base64 (44 characters, as wg prints keys). */
export function keyFromBase64(text: string): Uint8Array {
  const trimmed = text.trim();
  if (!/^[A-Za-z0-9+/]{43}=$/.test(trimmed)) throw new Error('a key is 44 characters of base64 ending in "="');
  return new Uint8Array(Buffer.from(trimmed, 'base64'));
}

export function keyToBase64(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('base64');
}
