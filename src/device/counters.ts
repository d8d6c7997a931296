/** Device-wide counters: packets dropped by reason, and handshake work done. */

export const DROP_REASONS = [
  'malformed', 'unknown-index', 'decrypt', 'replay', 'expired', 'source-not-allowed', 'invalid-packet', 'no-route',
  'no-endpoint', 'no-key', 'mac1', 'rate-limited', 'handshake-queue-full', 'handshake', 'staged-overflow',
  'handshake-gave-up', 'udp-send', 'tun-write',
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

type DocumentedDropReason =
  | 'malformed' // not a WireGuard message of a valid length/type
  | 'unknown-index' // transport or cookie reply for an index we do not have
  | 'decrypt' // transport message failed authentication
  | 'replay' // transport counter already seen or too old
  | 'expired' // keypair past its lifetime
  | 'source-not-allowed' // decrypted packet's source is outside the peer's allowed IPs
  | 'invalid-packet' // decrypted or outgoing packet is not a valid IPv4/IPv6 packet
  | 'no-route' // outgoing packet matches no peer's allowed IPs
  | 'no-endpoint' // peer has no known endpoint
  | 'no-key' // device has no private key
  | 'mac1' // handshake message with a bad MAC1 (costs no X25519 work)
  | 'rate-limited' // under load, the source exceeded its initiation budget
  | 'handshake-queue-full'
  | 'handshake' // handshake message rejected by the protocol core
  | 'staged-overflow' // more than MAX_STAGED_PACKETS waiting for a session
  | 'handshake-gave-up' // staged packets dropped after REKEY_ATTEMPT_TIME
  | 'udp-send' // the UDP socket did not take the datagram (buffer full or error)
  | 'tun-write'; // the TUN did not take the packet

// Every reason above is in DROP_REASONS and vice versa.
const _exhaustive: [DropReason, DocumentedDropReason] extends [DocumentedDropReason, DropReason] ? true : never = true;
void _exhaustive;

export class DeviceCounters {
  readonly drops = new Map<DropReason, number>();
  /** Handshake messages that reached X25519 work (passed MAC1, and MAC2/rate limit under load). */
  handshakesProcessed = 0;
  initiationsSent = 0;
  responsesSent = 0;
  cookieRepliesSent = 0;
  cookieRepliesReceived = 0;
  keepalivesSent = 0;
  keepalivesReceived = 0;
  /** Initiations answered while ours to the same peer was in flight; ours was kept waiting too (consumeInitiation). */
  initiationsCrossed = 0;
  /** Handshake rejections by protocol error (replay-timestamp, decrypt, unknown-peer, …). */
  readonly handshakeErrors = new Map<string, number>();

  drop(reason: DropReason, count = 1): void {
    if (count > 0) this.drops.set(reason, (this.drops.get(reason) ?? 0) + count);
  }

  dropped(reason: DropReason): number {
    return this.drops.get(reason) ?? 0;
  }

  /** Flat name → value pairs; every drop reason is listed, zero or not. */
  toRecord(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const reason of DROP_REASONS) out[`drop_${reason.replaceAll('-', '_')}`] = this.dropped(reason);
    out.handshakes_processed = this.handshakesProcessed;
    out.initiations_sent = this.initiationsSent;
    out.responses_sent = this.responsesSent;
    out.cookie_replies_sent = this.cookieRepliesSent;
    out.cookie_replies_received = this.cookieRepliesReceived;
    out.keepalives_sent = this.keepalivesSent;
    out.keepalives_received = this.keepalivesReceived;
    out.initiations_crossed = this.initiationsCrossed;
    for (const [error, n] of this.handshakeErrors) out[`handshake_error_${error.replaceAll('-', '_')}`] = n;
    return out;
  }

  handshakeError(error: string): void {
    this.drop('handshake');
    this.handshakeErrors.set(error, (this.handshakeErrors.get(error) ?? 0) + 1);
  }
}
