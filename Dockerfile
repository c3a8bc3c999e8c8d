# syntax=docker/dockerfile:1
# Tether's one image: tether-server and tether-agent, chosen by the first argument
#   docker run IMAGE tether-server serve --store kubernetes ...
#   docker run IMAGE tether-agent --credentials-secret tether-agent-credentials
# Build from the repository root; the tag is the one the manifests in deploy/
# and `tether-server agent-manifest` reference (TETHER_IMAGE in
# packages/server/src/agent-manifest.ts):
#   docker build -t ghcr.io/tether-dev/tether:0.1.0 .
# The runtime stage is distroless: node and the app only, no shell, no package
# manager, user 65532 (nonroot). Pin the base images by digest for releases.

# Compile the TypeScript (needs the dev dependencies: typescript).
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.base.json ./
COPY packages/tunnel/package.json packages/tunnel/
COPY packages/common/package.json packages/common/
COPY packages/server/package.json packages/server/
COPY packages/agent/package.json packages/agent/
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY packages/tunnel/ packages/tunnel/
COPY packages/common/ packages/common/
COPY packages/server/ packages/server/
COPY packages/agent/ packages/agent/
# Dependencies first: server and agent resolve @tether/tunnel's types from its dist/.
RUN npx tsc -b packages/tunnel packages/common packages/server packages/agent

# Only the production dependencies of the three workspaces. node_modules/@tether/*
# are symlinks to ../../packages/*, which the runtime stage provides at the same place.
# No install scripts run: the one native addon (bufferutil, optional) ships prebuilt binaries.
FROM node:24-bookworm-slim AS production-dependencies
WORKDIR /app
COPY package.json package-lock.json ./
COPY packages/tunnel/package.json packages/tunnel/
COPY packages/common/package.json packages/common/
COPY packages/server/package.json packages/server/
COPY packages/agent/package.json packages/agent/
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM gcr.io/distroless/nodejs24-debian12:nonroot
WORKDIR /app
ENV NODE_ENV=production
COPY --from=production-dependencies /app/package.json ./
COPY --from=production-dependencies /app/node_modules node_modules/
COPY --from=build /src/packages/tunnel/package.json packages/tunnel/
COPY --from=build /src/packages/tunnel/dist packages/tunnel/dist/
COPY --from=build /src/packages/common/package.json packages/common/
COPY --from=build /src/packages/common/dist packages/common/dist/
COPY --from=build /src/packages/server/package.json packages/server/
COPY --from=build /src/packages/server/dist packages/server/dist/
COPY --from=build /src/packages/agent/package.json packages/agent/
COPY --from=build /src/packages/agent/dist packages/agent/dist/
COPY scripts/container-entrypoint.mjs scripts/
# Numeric, so that runAsNonRoot can check it without resolving a name.
USER 65532:65532
ENTRYPOINT ["/nodejs/bin/node", "/app/scripts/container-entrypoint.mjs"]
CMD ["tether-server", "--help"]
