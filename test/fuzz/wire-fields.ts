/** Field layouts and dictionaries the wire and device targets mutate with. */
import { COOKIE_REPLY_LENGTH, INITIATION_LENGTH, RESPONSE_LENGTH } from '../../src/noise/messages.ts';
import type { Field } from '../helpers/mutate.ts';

export const INITIATION_FIELDS: readonly Field[] = [
  { offset: 4, length: 4 }, // sender
  { offset: 8, length: 32 }, // ephemeral
  { offset: 40, length: 48 }, // encrypted static
  { offset: 88, length: 28 }, // encrypted timestamp
  { offset: 116, length: 16 }, // mac1
  { offset: 132, length: 16 }, // mac2
];
export const RESPONSE_FIELDS: readonly Field[] = [
  { offset: 4, length: 4 }, // sender
  { offset: 8, length: 4 }, // receiver
  { offset: 12, length: 32 }, // ephemeral
  { offset: 44, length: 16 }, // encrypted empty
  { offset: 60, length: 16 }, // mac1
  { offset: 76, length: 16 }, // mac2
];
export const COOKIE_REPLY_FIELDS: readonly Field[] = [
  { offset: 4, length: 4 }, // receiver
  { offset: 8, length: 24 }, // nonce
  { offset: 32, length: 32 }, // encrypted cookie
];
export const TRANSPORT_FIELDS: readonly Field[] = [
  { offset: 4, length: 4 }, // receiver
  { offset: 8, length: 8 }, // counter
  { offset: 16, length: 16 }, // first ciphertext block
];

export const MESSAGE_FIELDS: readonly Field[] = [...INITIATION_FIELDS, ...RESPONSE_FIELDS, ...COOKIE_REPLY_FIELDS, ...TRANSPORT_FIELDS];

export const FIELDS_BY_TYPE: Readonly<Record<number, readonly Field[]>> = {
  1: INITIATION_FIELDS,
  2: RESPONSE_FIELDS,
  3: COOKIE_REPLY_FIELDS,
  4: TRANSPORT_FIELDS,
};

export const LENGTH_OF: Readonly<Record<number, number>> = { 1: INITIATION_LENGTH, 2: RESPONSE_LENGTH, 3: COOKIE_REPLY_LENGTH, 4: 32 };

/**
 * Points of small order on Curve25519 and non-canonical encodings of them (libsodium's and the
 * kernel's blacklist): X25519 with any of these gives all zeros.
 */
export const LOW_ORDER_POINTS: readonly Uint8Array[] = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880',
  '4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7',
  'd9ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
  'daffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
  'dbffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff',
].map((h) => new Uint8Array(Buffer.from(h, 'hex')));
