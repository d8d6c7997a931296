# syntax=docker/dockerfile:1
#
# wgts: the userspace WireGuard data plane (`wgts -f --persist wgts0`) and the Kubernetes mesh
# agent (`wgts mesh`) in one image; deploy/ runs it as a DaemonSet with one container of each.
#
#   docker build -t ghcr.io/wgts/wgts:0.1.0 .
#   docker run --rm ghcr.io/wgts/wgts:0.1.0 --version
#   docker run --rm ghcr.io/wgts/wgts:0.1.0 conformance      # the bundled test vectors
#
# test/unit/manifests.test.ts parses this file (stages, packages, copies, entrypoint); keep the
# instructions simple enough for it: one instruction per line or `\` continuations.

ARG VERSION=0.1.0

# ---- builder: compiles the native addon (node-gyp) and dist/ (tsc), then drops dev dependencies.
FROM node:24-bookworm-slim AS builder

# node-gyp needs python3, make and a C compiler; the slim image has none of them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# The checkout's .npmrc says nodedir=/usr (Debian's libnode-dev headers on a developer machine).
# The official node image ships its own headers under /usr/local/include/node; an npm_config_*
# variable outranks a project .npmrc, so node-gyp builds against the headers of the image's Node.
ENV npm_config_nodedir=/usr/local

COPY package.json package-lock.json .npmrc binding.gyp tsconfig.json tsconfig.build.json ./
COPY src/ src/

# npm ci runs the root package's `node-gyp rebuild` (binding.gyp -> build/Release/wgts_native.node)
# and `prepare` (tsc -p tsconfig.build.json -> dist/); prune then leaves the runtime dependencies.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund \
 && npm prune --omit=dev --no-audit --no-fund \
 && test -f build/Release/wgts_native.node \
 && test -f dist/cli.js \
 && chmod 0755 dist/cli.js

# ---- runtime
FROM node:24-bookworm-slim

ARG VERSION
LABEL org.opencontainers.image.title="wgts" \
      org.opencontainers.image.description="Userspace WireGuard in TypeScript on Node.js, with a Kubernetes and host mesh" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/wgts/wgts" \
      org.opencontainers.image.documentation="https://github.com/wgts/wgts/blob/main/deploy/README.md" \
      org.opencontainers.image.base.name="docker.io/library/node:24-bookworm-slim"

# iproute2: `ip` (routes, rules, addresses, MTU); nftables: `nft` (--strict); wireguard-tools:
# `wg` and `wg-quick`, which drive wgts over its UAPI socket exactly as they drive wireguard-go;
# tcpdump: the capture behind `wgts verify`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 wireguard-tools nftables tcpdump \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV NODE_ENV=production

# The layout the code expects: package.json beside dist/ (cli.js reads ../package.json for
# --version) and build/Release/wgts_native.node (found from the nearest package.json upwards).
COPY --from=builder /src/package.json ./
COPY --from=builder /src/node_modules/ node_modules/
COPY --from=builder /src/build/Release/wgts_native.node build/Release/wgts_native.node
COPY --from=builder /src/dist/ dist/
# `wgts conformance` with no file checks the bundled vectors (../../test/vectors from dist/).
COPY test/vectors/ test/vectors/

# `wgts` on PATH: `kubectl exec ... -- wgts verify`, and WG_QUICK_USERSPACE_IMPLEMENTATION=wgts.
RUN ln -s /app/dist/cli.js /usr/local/bin/wgts \
 && wgts --version

# Runs as root, on purpose. Both containers need CAP_NET_ADMIN in the host network namespace:
# creating and attaching the persistent TUN (TUNSETIFF/TUNSETPERSIST), SO_MARK and forced buffer
# sizes on the UDP socket, and `ip`/`nft` changes to links, addresses, routes, rules and nftables.
# A non-root process could hold it only as an ambient capability, which Kubernetes cannot set, or
# from file capabilities on node, ip and nft, which no_new_privs (allowPrivilegeEscalation: false)
# ignores and which would hand NET_ADMIN to anything those binaries run. The hostPath state is
# root's on the node too (/var/lib/wgts with the 0600 private key, /var/run/wireguard with the 0700
# socket directory that wg and wg-quick expect). deploy/ confines root instead: every capability
# dropped but NET_ADMIN, no privilege escalation, a read-only root filesystem, RuntimeDefault seccomp.
USER root

ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["--help"]
