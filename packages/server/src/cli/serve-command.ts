// `tether-server serve`: the flags of the server process and its lifecycle
// (signals, the admin credential, certificate reloads).

import { hostname } from "node:os";
import { type Command, InvalidArgumentError, Option } from "commander";
import { maintainAdminCredential } from "../admin/admin-credential.js";
import { serveUrl } from "../admin/admin-input.js";
import { formatDuration } from "../http/limits.js";
import { readScrapeToken } from "../http/read-access.js";
import { createLogger } from "../logger.js";
import { DEFAULT_DRAIN_TIMEOUT_MS } from "../proxy/agent-sessions.js";
import { normalizeClusterDomain } from "../proxy/host-routing.js";
import { KubeStore } from "../store/kube-store.js";
import { type AuditOptions, addAuditOptions, auditLevelOf, openAuditLog } from "./audit-options.js";
import { addIdentityOptions, type IdentityFlags, identityFromOptions } from "./identity-options.js";
import { addLimitOptions, limitsFromOptions } from "./limit-options.js";
import { addMetricsOptions, type MetricsFlags, metricsFromOptions } from "./metrics-options.js";
import { listenAddress, positiveDuration, seconds } from "./option-parsers.js";
import { addStoreOptions, openStore, type StoreOptions } from "./store-options.js";

export function addServe(program: Command): void {
  addIdentityOptions(
    addAuditOptions(addMetricsOptions(addLimitOptions(addStoreOptions(program.command("serve"))))),
  )
    .description("run the server: the agent tunnel endpoint and /clusters/<name>/ for host callers")
    .addOption(
      new Option("--listen <host:port>", "address to listen on")
        .default("0.0.0.0:8443")
        .argParser(listenAddress),
    )
    .addOption(
      new Option(
        "--external-url <url>",
        "the URL agents and callers use; its host goes into the serving certificate",
      ).env("TETHER_EXTERNAL_URL"),
    )
    .addOption(
      new Option(
        "--cluster-domain <domain>",
        "also serve member NAME at https://NAME.<domain>/ (by TLS server name, else Host); adds *.<domain> to the serving certificate",
      )
        .env("TETHER_CLUSTER_DOMAIN")
        .argParser((v) => {
          const d = normalizeClusterDomain(v);
          if (!d)
            throw new InvalidArgumentError("a DNS domain of two or more labels, e.g. clusters.example.com");
          return d;
        }),
    )
    .addOption(
      new Option("--keepalive <seconds>", "seconds between tunnel pings").default(10).argParser(seconds),
    )
    .addOption(
      new Option("--dead-peer-timeout <seconds>", "seconds of silence before an agent is taken for dead")
        .default(30)
        .argParser(seconds),
    )
    .addOption(
      new Option(
        "--drain-timeout <duration>",
        "how long a replaced agent session (the agent reconnected) may drain before it is closed",
      )
        .default(DEFAULT_DRAIN_TIMEOUT_MS, formatDuration(DEFAULT_DRAIN_TIMEOUT_MS))
        .argParser(positiveDuration),
    )
    .addOption(
      new Option(
        "--replica-address <url>",
        "run as one of several active replicas (needs --store kubernetes): the https://host:port the other replicas reach this one at; the replica listener listens on its port",
      )
        .env("TETHER_REPLICA_ADDRESS")
        .argParser(replicaAddress),
    )
    .addOption(
      new Option("--replica-id <id>", "this replica's name among the replicas (a DNS label: the pod name)")
        .env("TETHER_REPLICA_ID")
        .default(hostname().toLowerCase(), "the host name"),
    )
    .addOption(
      new Option(
        "--replica-lease-duration <duration>",
        "how long a replica's claim on a cluster lasts unrenewed (renewed every third of it)",
      )
        .default(30_000, "30s")
        .argParser(positiveDuration),
    )
    .action(
      async (
        opts: StoreOptions &
          IdentityFlags &
          MetricsFlags &
          AuditOptions & {
            listen: { host: string; port: number };
            externalUrl?: string;
            clusterDomain?: string;
            keepalive: number;
            deadPeerTimeout: number;
            drainTimeout: number;
            replicaAddress?: URL;
            replicaId: string;
            replicaLeaseDuration: number;
          },
      ) => {
        if (opts.replicaAddress && opts.store !== "kubernetes") {
          throw new InvalidArgumentError(
            "--replica-address needs --store kubernetes (the replicas share it)",
          );
        }
        // Loaded here so that the admin commands start without the proxy and tunnel code.
        const { TetherServer } = await import("../server.js");
        // With the audit log on stdout, the log moves to stderr: each stream stays one kind of line.
        const log = createLogger(
          {},
          opts.auditLog === "-" && auditLevelOf(opts) !== "none" ? process.stderr : undefined,
        );
        const audit = await openAuditLog(opts, log);
        const metrics = await metricsFromOptions(opts);
        const identity = await identityFromOptions(opts);
        const store = await openStore(opts, log);
        const server = await TetherServer.start({
          store,
          host: opts.listen.host,
          port: opts.listen.port,
          log,
          tunnel: { keepAliveInterval: opts.keepalive * 1000, deadPeerTimeout: opts.deadPeerTimeout * 1000 },
          drainTimeoutMs: opts.drainTimeout,
          limits: limitsFromOptions(opts),
          identity,
          ...metrics,
          ...(audit ? { audit } : {}),
          ...(opts.externalUrl ? { externalUrl: opts.externalUrl } : {}),
          ...(opts.clusterDomain ? { clusterDomain: opts.clusterDomain } : {}),
          ...(store instanceof KubeStore ? { clusterStatus: store } : {}),
          ...(store instanceof KubeStore && opts.replicaAddress
            ? {
                replica: {
                  api: store.hostApi,
                  namespace: store.namespace,
                  id: opts.replicaId,
                  address: opts.replicaAddress.origin,
                  listenHost: opts.listen.host,
                  listenPort: Number(opts.replicaAddress.port || 443),
                  leaseDurationMs: opts.replicaLeaseDuration,
                  clusterUid: async (cluster: string) => (await store.getCluster(cluster))?.uid,
                },
              }
            : {}),
        });
        // The first signal drains (lifecycle/drain.ts), a second one stops at once. Installed
        // before server.json is written: whoever reads it may signal us right away.
        let stopping = false;
        const stop = (signal: NodeJS.Signals) => {
          if (stopping) {
            log.info("stopping now");
            void server.close().then(() => process.exit(0));
            return;
          }
          stopping = true;
          log.info("stopping: draining");
          // Ctrl-C is someone at a terminal, not a load balancer to wait for: no --shutdown-delay.
          void server
            .shutdown(undefined, signal === "SIGINT" ? 0 : undefined)
            .then(() => audit?.close())
            .then(() => process.exit(0));
        };
        process.on("SIGTERM", stop);
        process.on("SIGINT", stop);
        // For the admin commands' printed agent commands and kubeconfigs.
        const url = serveUrl(opts.listen.host, server.port, opts.externalUrl);
        await store
          .recordServerUrl(url)
          .catch((err: Error) =>
            log.warn({ err: err.message }, "could not record the server URL in the state directory"),
          );
        await maintainAdminCredential(store, url, server.ca.certPem, log);
        process.on("SIGHUP", () => {
          audit?.reopen();
          if (opts.metricsTokenFile) {
            // An unusable file keeps the token in force: a half-written rotation must not lock the scraper out.
            readScrapeToken(opts.metricsTokenFile).then(
              (token) => {
                server.readAccess.setScrapeToken(token);
                log.info("scrape token reloaded");
              },
              (err: Error & { code?: string }) =>
                log.error(
                  { err: err.message, code: err.code },
                  "scrape token reload failed: the previous token stays in force",
                ),
            );
          }
          server
            .reloadServingCertificate()
            .catch((err: Error) => log.error({ err: err.message }, "serving certificate reload failed"));
        });
      },
    );
}

function replicaAddress(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError("an https://host:port URL");
  }
  if (url.protocol !== "https:" || !url.port || url.pathname !== "/" || url.search || url.username) {
    throw new InvalidArgumentError("an https://host:port URL, e.g. https://$(POD_IP):8444");
  }
  return url;
}
