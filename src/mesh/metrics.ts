/**
 * Prometheus metrics and health endpoints of the mesh agent (prom-client): per peer handshake
 * age and transfer, device drops by reason, desired vs configured peers, reconcile count and
 * latency. /healthz: the agent's loop is alive; /readyz: synced and last reconcile succeeded.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DeviceSnapshot } from '../device/config.ts';

export class MeshMetrics {
  readonly registry = new Registry();
  private readonly handshakeAge = new Gauge({ name: 'wgts_peer_latest_handshake_age_seconds', help: 'Seconds since the latest handshake with the peer (-1: none yet)', labelNames: ['peer'], registers: [this.registry] });
  private readonly rxBytes = new Gauge({ name: 'wgts_peer_rx_bytes', help: 'Bytes received from the peer (WireGuard messages), as the device counts them', labelNames: ['peer'], registers: [this.registry] });
  private readonly txBytes = new Gauge({ name: 'wgts_peer_tx_bytes', help: 'Bytes sent to the peer (WireGuard messages), as the device counts them', labelNames: ['peer'], registers: [this.registry] });
  private readonly drops = new Gauge({ name: 'wgts_device_drops', help: 'Packets the data plane dropped, by reason', labelNames: ['reason'], registers: [this.registry] });
  private readonly peersDesired = new Gauge({ name: 'wgts_peers_desired', help: 'Peers the source wants', registers: [this.registry] });
  private readonly peersConfigured = new Gauge({ name: 'wgts_peers_configured', help: 'Peers the data plane has', registers: [this.registry] });
  private readonly unencrypted = new Gauge({ name: 'wgts_nodes_unencrypted', help: 'Nodes without wgts (reachable only in the clear, or dropped with --strict)', registers: [this.registry] });
  readonly reconciles = new Counter({ name: 'wgts_reconcile_total', help: 'Reconcile runs, by result', labelNames: ['result'], registers: [this.registry] });
  readonly reconcileSeconds = new Histogram({ name: 'wgts_reconcile_duration_seconds', help: 'Time to reconcile the data plane and the host', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [this.registry] });
  readonly keyRotations = new Counter({ name: 'wgts_key_rotations_total', help: 'Scheduled key rotations done', registers: [this.registry] });
  lastLoopAt = Date.now();
  ready = false;

  observePeers(snapshot: DeviceSnapshot, names: ReadonlyMap<string, string>, desired: number, unencrypted: number, nowMs: number): void {
    this.handshakeAge.reset();
    this.rxBytes.reset();
    this.txBytes.reset();
    for (const peer of snapshot.peers) {
      const hex = Buffer.from(peer.publicKey).toString('hex');
      const label = names.get(hex) ?? Buffer.from(peer.publicKey).toString('base64').slice(0, 8);
      this.handshakeAge.set({ peer: label }, peer.lastHandshakeEpochMs > 0 ? (nowMs - peer.lastHandshakeEpochMs) / 1000 : -1);
      this.rxBytes.set({ peer: label }, peer.rxBytes);
      this.txBytes.set({ peer: label }, peer.txBytes);
    }
    this.peersDesired.set(desired);
    this.peersConfigured.set(snapshot.peers.length);
    this.unencrypted.set(unencrypted);
  }

  observeDrops(stats: Record<string, number>): void {
    for (const [key, value] of Object.entries(stats)) {
      if (key.startsWith('drop_')) this.drops.set({ reason: key.slice(5) }, value);
    }
  }

  /** Serves /metrics, /healthz and /readyz on host:port ("[host]:port" or ":port"). */
  listen(address: string, staleAfterMs = 120_000): Promise<Server> {
    const match = /^(?:\[?([^\]]*)\]?)?:(\d+)$/.exec(address);
    if (!match) throw new Error(`--metrics-listen ${address}: expected [host]:port`);
    // ":port" listens on every address, IPv6 included where the host has it.
    const host = match[1] || undefined;
    const port = Number(match[2]);
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/metrics') {
        this.registry.metrics().then(
          (text) => {
            res.writeHead(200, { 'Content-Type': this.registry.contentType });
            res.end(text);
          },
          (err: Error) => {
            res.writeHead(500);
            res.end(err.message);
          },
        );
      } else if (path === '/healthz') {
        const alive = Date.now() - this.lastLoopAt < staleAfterMs;
        res.writeHead(alive ? 200 : 503);
        res.end(alive ? 'ok\n' : 'agent loop stalled\n');
      } else if (path === '/readyz') {
        res.writeHead(this.ready ? 200 : 503);
        res.end(this.ready ? 'ready\n' : 'not ready\n');
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      if (host) server.listen(port, host, () => resolve(server));
      else server.listen(port, () => resolve(server));
    });
  }
}
