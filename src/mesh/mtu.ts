/**
 * The tunnel MTU from the underlay: WireGuard adds 32 bytes (header 16 + Poly1305 tag 16) and
 * 8 of UDP to each packet, plus the outer IP header — 20 bytes for IPv4, 40 for IPv6 — and the
 * usual convention (wg-quick, wireguard-go) rounds that up to 60 / 80 bytes of headroom.
 * 1420 (= 1500 − 80) is the safe default when the underlay is unknown.
 */
import { parseIp } from '../util/ip.ts';
import { IpRunner } from './iproute.ts';

export const DEFAULT_TUNNEL_MTU = 1420;
export const TUNNEL_OVERHEAD = { 4: 60, 6: 80 } as const;

/** Underlay MTU − 60 (IPv4 underlay) or − 80 (IPv6); 1420 when the underlay MTU is unknown. */
export function tunnelMtu(underlayMtu: number | undefined, family: 4 | 6): number {
  if (underlayMtu === undefined || !Number.isInteger(underlayMtu) || underlayMtu <= TUNNEL_OVERHEAD[family]) return DEFAULT_TUNNEL_MTU;
  return underlayMtu - TUNNEL_OVERHEAD[family];
}

interface AddrJson {
  ifname?: string;
  mtu?: number;
  addr_info?: Array<{ local?: string }>;
}

/**
 * The MTU of the interface that carries the local address (e.g. the node's InternalIP, the
 * address its WireGuard endpoint is published on): `ip -j addr show` → the interface holding
 * that address → `ip -j link show dev <it>`. undefined when no interface has the address.
 */
export async function detectUnderlayMtu(address: string, options: { netns?: string } = {}): Promise<number | undefined> {
  const wanted = parseIp(address);
  const runner = new IpRunner(options.netns === undefined ? {} : { netns: options.netns });
  const links = await runner.ipJson<AddrJson>(['addr', 'show']);
  const ifname = links.find((link) => (link.addr_info ?? []).some((info) => info.local !== undefined && sameAddress(info.local, wanted.bytes)))?.ifname;
  if (ifname === undefined) return undefined;
  const [link] = await runner.ipJson<AddrJson>(['link', 'show', 'dev', ifname]);
  return typeof link?.mtu === 'number' ? link.mtu : undefined;
}

function sameAddress(text: string, bytes: Uint8Array): boolean {
  try {
    const ip = parseIp(text.includes('%') ? text.slice(0, text.indexOf('%')) : text);
    return ip.bytes.length === bytes.length && ip.bytes.every((b, i) => b === bytes[i]);
  } catch {
    return false;
  }
}
