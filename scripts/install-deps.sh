#!/usr/bin/env bash
# Installs what wgts, its demo and its tests need on Debian (as root): the network tools and
# WireGuard peers from apt, then the npm dependencies (which build the native addon and dist/).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in iproute2 wireguard-tools wireguard-go iperf3 tcpdump iputils-ping nftables ethtool python3 make g++ libnode-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
# libnode-dev provides the headers node-gyp builds against (.npmrc: nodedir=/usr); skip it when they exist.
if [ -f /usr/include/node/node_api.h ]; then need=("${need[@]/libnode-dev}"); fi
need=($(printf '%s\n' "${need[@]}" | grep -v '^$' || true))
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
