/**
 * The fuzz targets, by name. Each factory builds a fresh, independent instance (its own devices,
 * sockets and temp directories), so a replay starts from the same state as a run.
 *
 *   wire         the message decoders over raw bytes
 *   device       a real Device's receive path (receiveDatagrams + the handshake queue) with a live
 *                in-memory session: mutants of captured messages, grammar-aware forgeries, random bytes
 *   uapi-parse   SetParser/parseSet over set bodies; parsed transactions applied to a real Device and
 *                to the FakeDevice model
 *   uapi-server  the UAPI unix-socket server (FakeDevice) fed request streams over real connections
 *   nodes        nodeFacts/desiredFromNodes over V1Node-shaped objects with mutated annotations
 *   peers-file   parsePeersFile (+ findSelf/peersOf/diffPeersFiles) over generated and mutated YAML
 */
import type { TargetFactory } from './target.ts';
import { DeviceTarget } from './target-device.ts';
import { NodesTarget } from './target-nodes.ts';
import { PeersFileTarget } from './target-peers-file.ts';
import { UapiParseTarget } from './target-uapi-parse.ts';
import { UapiServerTarget } from './target-uapi-server.ts';
import { WireTarget } from './target-wire.ts';

export const TARGETS: Readonly<Record<string, TargetFactory>> = {
  wire: () => new WireTarget(),
  device: () => new DeviceTarget(),
  'uapi-parse': () => new UapiParseTarget(),
  'uapi-server': () => new UapiServerTarget(),
  nodes: () => new NodesTarget(),
  'peers-file': () => new PeersFileTarget(),
};
