/**
 * The configuration surface of a Device: what `get` reports and what `set` changes. The UAPI
 * (wg, wg-quick) and the mesh reconciler both speak it, so there is one code path that mutates
 * a device. A transaction is validated whole before anything changes: on error the device is
 * exactly as it was.
 */

/** An IP prefix: address bytes (4 or 16) and prefix length. */
export interface Cidr {
  readonly family: 4 | 6;
  readonly address: Uint8Array;
  readonly prefix: number;
}

export interface EndpointAddress {
  /** Textual IP address, IPv4 dotted or IPv6 (no brackets). */
  readonly host: string;
  readonly port: number;
}

export interface PeerChange {
  readonly publicKey: Uint8Array;
  /** remove=true: delete the peer (other keys ignored). */
  readonly remove?: boolean;
  /** update_only=true: change the peer only if it exists, never create it. */
  readonly updateOnly?: boolean;
  /** All zero means none. */
  readonly presharedKey?: Uint8Array;
  readonly endpoint?: EndpointAddress;
  /** Seconds; 0 is off. */
  readonly persistentKeepaliveInterval?: number;
  /** replace_allowed_ips=true: drop the peer's allowed IPs before adding these. */
  readonly replaceAllowedIps?: boolean;
  readonly addAllowedIps?: readonly Cidr[];
  /** allowed_ip=-addr/cidr (newer wg): remove these. */
  readonly removeAllowedIps?: readonly Cidr[];
}

export interface ConfigTransaction {
  /** A 32-byte key; all zero removes the key. */
  readonly privateKey?: Uint8Array;
  /** 0: a random port. */
  readonly listenPort?: number;
  /** 0: no mark. */
  readonly fwmark?: number;
  readonly replacePeers?: boolean;
  readonly peers?: readonly PeerChange[];
}

export interface PeerSnapshot {
  readonly publicKey: Uint8Array;
  readonly presharedKey: Uint8Array;
  readonly endpoint: EndpointAddress | undefined;
  /** Unix epoch milliseconds of the last completed handshake; 0 when none. */
  readonly lastHandshakeEpochMs: number;
  readonly rxBytes: number;
  readonly txBytes: number;
  /** Seconds; 0 is off. */
  readonly persistentKeepaliveInterval: number;
  readonly allowedIps: readonly Cidr[];
}

export interface DeviceSnapshot {
  readonly privateKey: Uint8Array | undefined;
  readonly listenPort: number;
  readonly fwmark: number;
  readonly peers: readonly PeerSnapshot[];
}

/** Rejection of a configuration request; errno follows wireguard-go (positive here, sent negated). */
export class ConfigError extends Error {
  readonly errno: number;
  constructor(message: string, errno: number = EINVAL) {
    super(message);
    this.name = 'ConfigError';
    this.errno = errno;
  }
}

export const EINVAL = 22;
export const EPROTO = 71;
export const EADDRINUSE = 98;
export const ENOENT = 2;
export const EIO = 5;

/** What a UAPI server or reconciler needs from a device. */
export interface DeviceControl {
  snapshot(): DeviceSnapshot;
  /** Applies a whole transaction or nothing; throws ConfigError. */
  apply(tx: ConfigTransaction): Promise<void>;
  /** Device counters by name (drop_<reason>, handshakes_processed, …), for the stats=1 extension. */
  stats?(): Record<string, number>;
}
