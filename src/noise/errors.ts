/** Why the protocol core refused an input. Every rejection is one of these, never an exception. */
export type ProtocolError =
  | 'short' // shorter than any message of its type
  | 'length' // not the exact length of its type
  | 'type' // unknown message type
  | 'reserved' // reserved bytes not zero
  | 'mac1' // MAC1 does not verify
  | 'mac2' // MAC2 required (under load) and missing or wrong
  | 'decrypt' // AEAD authentication failed
  | 'unknown-peer' // static key of no configured peer
  | 'unknown-index' // receiver index of no handshake or keypair
  | 'state' // message does not fit the handshake's state
  | 'low-order' // a Diffie-Hellman result was all zero
  | 'replay-timestamp' // initiation timestamp not newer than the last accepted one
  | 'flood' // initiations from one peer closer than HANDSHAKE_INITIATION_RATE
  | 'replay' // transport counter already seen or too old
  | 'expired'; // keypair past REJECT_AFTER_TIME / REJECT_AFTER_MESSAGES

export type Result<T> = { ok: true; value: T } | { ok: false; error: ProtocolError };

export function ok<T>(value: T): Result<T> {
  return { ok: true, value };
}

export function fail<T = never>(error: ProtocolError): Result<T> {
  return { ok: false, error };
}
