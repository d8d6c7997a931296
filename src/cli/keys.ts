import { randomBytes } from 'node:crypto';
import { x25519 } from '@noble/curves/ed25519.js';
import { keyFromBase64, keyToBase64 } from '../util/hex.ts';

/** A fresh X25519 private key, clamped as `wg genkey` prints it. */
export function generatePrivateKey(): Uint8Array {
  const key = new Uint8Array(randomBytes(32));
  key[0]! &= 248;
  key[31]! &= 127;
  key[31]! |= 64;
  return key;
}

export function publicKeyOf(privateKey: Uint8Array): Uint8Array {
  return x25519.getPublicKey(privateKey);
}

export function genkey(out: NodeJS.WritableStream): void {
  out.write(keyToBase64(generatePrivateKey()) + '\n');
}

export async function pubkey(input: NodeJS.ReadableStream, out: NodeJS.WritableStream): Promise<void> {
  let text = '';
  for await (const chunk of input) text += chunk.toString();
  let key: Uint8Array;
  try {
    key = keyFromBase64(text);
  } catch (err) {
    process.stderr.write(`wgts pubkey: ${(err as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  out.write(keyToBase64(publicKeyOf(key)) + '\n');
}
