/**
 * The 10-byte virtio_net_hdr in front of every packet read from or written to a TUN opened with
 * IFF_VNET_HDR (linux/virtio_net.h). tun.c makes it little-endian (TUNSETVNETLE).
 *
 *   [0] flags  [1] gso_type  [2..4) hdr_len  [4..6) gso_size  [6..8) csum_start  [8..10) csum_offset
 */

export const VNET_HDR_LENGTH = 10;

/** flags: the checksum at csum_start + csum_offset is partial (only the pseudo-header is summed). */
export const VNET_F_NEEDS_CSUM = 1;

/** gso_type values, and the ECN bit that may be or'ed into them. */
export const GSO_NONE = 0;
export const GSO_TCPV4 = 1;
export const GSO_TCPV6 = 4;
export const GSO_ECN = 0x80;

export const VNET_FLAGS = 0;
export const VNET_GSO_TYPE = 1;
export const VNET_HDR_LEN = 2;
export const VNET_GSO_SIZE = 4;
export const VNET_CSUM_START = 6;
export const VNET_CSUM_OFFSET = 8;

export function readU16le(bytes: Uint8Array, at: number): number {
  return bytes[at]! | (bytes[at + 1]! << 8);
}

function writeU16le(bytes: Uint8Array, at: number, value: number): void {
  bytes[at] = value & 0xff;
  bytes[at + 1] = value >>> 8;
}

/** A header saying "a plain packet, checksums complete" (what every non-coalesced write carries). */
export function writePlainHeader(bytes: Uint8Array, at: number): void {
  bytes.fill(0, at, at + VNET_HDR_LENGTH);
}

/** A TCP segmentation header: NEEDS_CSUM, the checksum field at csumStart + 16. */
export function writeTcpGsoHeader(bytes: Uint8Array, at: number, gsoType: number, hdrLen: number, gsoSize: number, csumStart: number): void {
  bytes[at + VNET_FLAGS] = VNET_F_NEEDS_CSUM;
  bytes[at + VNET_GSO_TYPE] = gsoType;
  writeU16le(bytes, at + VNET_HDR_LEN, hdrLen);
  writeU16le(bytes, at + VNET_GSO_SIZE, gsoSize);
  writeU16le(bytes, at + VNET_CSUM_START, csumStart);
  writeU16le(bytes, at + VNET_CSUM_OFFSET, 16);
}

/** What the offload layer did, since start; `wgts show` lists these. */
export class OffloadCounters {
  /** TCP super-packets read from the TUN and split. */
  tsoPackets = 0;
  /** Segments they were split into. */
  tsoSegments = 0;
  /** Plain packets read with a partial checksum that we completed. */
  checksumsCompleted = 0;
  /** Reads dropped: truncated, bad virtio_net_hdr, bogus gso_size, truncated headers, unknown GSO type. */
  readDropped = 0;
  /** Coalesced writes (one GSO packet for several received segments). */
  coalescedWrites = 0;
  /** Segments that went into them. */
  coalescedSegments = 0;
  /** Coalesced writes the kernel refused (EINVAL): coalescing is then turned off. */
  coalescingRefused = 0;

  toRecord(): Record<string, number> {
    return {
      tun_tso_packets: this.tsoPackets,
      tun_tso_segments: this.tsoSegments,
      tun_checksums_completed: this.checksumsCompleted,
      tun_offload_read_dropped: this.readDropped,
      tun_coalesced_writes: this.coalescedWrites,
      tun_coalesced_segments: this.coalescedSegments,
      tun_coalescing_refused: this.coalescingRefused,
    };
  }
}
