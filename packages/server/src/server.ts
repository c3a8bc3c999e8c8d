// tether-server: one HTTPS listener for agents' tunnels (mutual TLS,
// WebSocket at AGENT_PATH), host callers under /clusters/<name>/, and the
// health endpoints.
import type { IncomingMessage, ServerResponse } from "node:http";
import { request as httpRequest } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { performance } from "node:perf_hooks";
import type { Duplex } from "node:stream";
import type { TLSSocket } from "node:tls";
import {
  AGENT_INSTANCE_HEADER,
  AGENT_PATH,
  AGENT_FEATURES_HEADER,
  AGENT_VERSION_HEADER,
  JOIN_CERTIFICATE_PATH,
  sendStatus,
  statusResponseHead,
} from "@tether/common";
import {
  mirrorPathEstimate,
  PATH_ESTIMATE_HEADER,
  PathMemory,
  parsePathEstimate,
  type SessionOptions,
  sessionFromWebSocket,
  WEBSOCKET_OPTIONS,
} from "@tether/tunnel";
import { WebSocketServer } from "ws";
import { ADMIN_API_PREFIX, AdminApi } from "./admin/admin-api.js";
import { normalizeServerUrl } from "./admin/admin-input.js";
import { StoreClusterAdmin } from "./admin/cluster-admin.js";
import { CallerListener } from "./http/caller-listener.js";
import {
  ERR_TETHER_RATE_LIMITED,
  FailureRateLimit,
  presentedCredential,
  sourceKey,
} from "./http/failure-rate-limit.js";
import { type Limits, resolveLimits } from "./http/limits.js";
import { ReadAccess } from "./http/read-access.js";
import { JoinEndpoint } from "./join/join-endpoint.js";
import { Drain } from "./lifecycle/drain.js";
import { type RenewalOptions, Renewals } from "./join/renewal.js";
import { createLogger, type Logger, loggablePath } from "./logger.js";
import { ClusterEvents } from "./observe/cluster-events.js";
import { adminReader } from "./observe/status-access.js";
import { connectionOf, StatusModel } from "./observe/status-model.js";
import { STATUS_PATH, type StatusPageDeps, serveStatus } from "./observe/status-page.js";
import { instrumentStore } from "./observe/instrumented-store.js";
import {
  type AgentRefusal,
  type AuthEndpoint,
  type DisconnectReason,
  TetherMetrics,
} from "./observe/metrics.js";
import { METRICS_PATH, serveMetrics } from "./observe/metrics-endpoint.js";
import type { AuditLog } from "./observe/audit-log.js";
import { identityFromPeerCertificate } from "./pki/identity.js";
import { foreignIncarnation } from "./pki/incarnation.js";
import { type CertificateAuthority, issuedAtOf } from "./pki/pki.js";
import { type AgentSession, AgentSessions } from "./proxy/agent-sessions.js";
import { CallerQuota, releaseOnClose } from "./proxy/caller-quota.js";
import type { IdentitySources } from "./proxy/identity/identity-sources.js";
import { TOKEN_CREDENTIAL } from "./proxy/authenticate.js";
import { LiveCredentials } from "./proxy/live-credentials.js";
import { ClusterProxy } from "./proxy/cluster-proxy.js";
import { IDENTITY_PREFIX } from "./proxy/forwarded-headers.js";
import { type HostRoute, hostRoute, toClusterPath } from "./proxy/host-routing.js";
import type { ProxyEntry } from "./proxy/replica-hop.js";
import { type Replicas, type ReplicaOptions, startReplicas } from "./proxy/replicas.js";
import { closeWith } from "./proxy/upgrade-relay.js";
import {
  type AgentState,
  ClusterStatusReporter,
  type ClusterStatusSink,
  type StatusReporterOptions,
} from "./store/cluster-status.js";
import type { SessionRecords, Store } from "./store/state-store.js";

export interface ServerOptions {
  store: Store;
  /** Default 0.0.0.0. */
  host?: string;
  /** Default 8443; 0 picks a free port. */
  port?: number;
  /** The URL agents and callers use (its host goes into the serving certificate). */
  externalUrl?: string;
  log?: Logger;
  /** Tunnel session tunables (keepalive, dead-peer timeout, windows); see @tether/tunnel. */
  tunnel?: Omit<SessionOptions, "role" | "accept">;
  /** Lifetime of the certificates agents get when they join or renew. Default 7 days. */
  clusterCertTtlMs?: number;
  /** How often live sessions are checked against the store (removed clusters, revocations, expiry). Default 1 s. */
  sessionCheckIntervalMs?: number;
  /** How long a replaced session (its agent reconnected) may drain before it is closed. Default 30 s. */
  drainTimeoutMs?: number;
  /** Bounds of certificate renewal over the tunnel (renewal.ts). */
  renewal?: RenewalOptions;
  /**
   * Where each cluster's status goes (the Kubernetes store's Cluster
   * objects). Writes are coalesced and rate-limited by ClusterStatusReporter.
   */
  clusterStatus?: ClusterStatusSink;
  clusterStatusOptions?: StatusReporterOptions;
  /** What one caller, source or connection may hold; defaults in limits.ts. */
  limits?: Partial<Limits>;
  /** Prometheus metrics at /metrics (observe/metrics.ts). Default true. */
  metrics?: boolean;
  /** The read-only bearer token of /metrics besides the admin token (--metrics-token-file); /status takes the admin token only. */
  metricsToken?: string;
  /** Where audit events go (observe/audit-log.ts); none when undefined. */
  audit?: AuditLog;
  /** Host-based routing: <name>.<clusterDomain> is member <name> at "/" (proxy/host-routing.ts). */
  clusterDomain?: string;
  /** Identity sources besides Tether tokens and certificates (proxy/identity/). */
  identity?: IdentitySources;
  /** One of several active replicas on the Kubernetes store (proxy/replicas.ts). */
  replica?: ReplicaOptions;
}

export class TetherServer {
  readonly sessions: AgentSessions;
  /** Undefined with `metrics: false`. */
  readonly metrics: TetherMetrics | undefined;
  /** Who may read /metrics. */
  readonly readAccess: ReadAccess;
  private readonly listener: CallerListener;
  private readonly wss = new WebSocketServer({ noServer: true, ...WEBSOCKET_OPTIONS });
  private readonly proxy: ClusterProxy;
  private readonly limits: Limits;
  private readonly authFailures: FailureRateLimit;
  private readonly log: Logger;
  private readonly audit: AuditLog | undefined;
  private readonly store: Store;
  private readonly tunnel: Omit<SessionOptions, "role" | "accept">;
  /** The last session's path estimate per cluster, for agents that do not announce theirs (older ones). */
  private readonly paths = new PathMemory();
  private readonly join: JoinEndpoint;
  private readonly renewals: Renewals;
  private readonly admin: AdminApi;
  private readonly status: ClusterStatusReporter | undefined;
  private readonly externalUrl: string | undefined;
  private readonly clusterDomain: string | undefined;
  /** --external-url's host: never a member's name, even under the cluster domain. */
  private readonly ownHost: string | undefined;
  private readonly checker: NodeJS.Timeout;
  private listenedPort = 0;
  /** The store's changeMark() at the last session check that read every record. */
  private checkedMark: string | undefined;
  /** No session's certificate expires before this (a lower bound): until then an unchanged store needs no look at the sessions. */
  private nextExpiryAt = Number.POSITIVE_INFINITY;
  private checking = false;
  private readonly rotation: NodeJS.Timeout;
  private servingCertPem: string;
  /** Last disconnects and errors per cluster, and the status page's inputs. */
  private readonly events = new ClusterEvents();
  private readonly statusPage: StatusPageDeps;
  private closing = false;
  private readonly live: LiveCredentials;
  private readonly drain = new Drain();

  private constructor(
    options: ServerOptions,
    readonly ca: CertificateAuthority,
    serving: { certPem: string; keyPem: string },
    private readonly servingNames: { dnsNames: string[]; ips: string[] },
    private readonly replicas?: Replicas,
  ) {
    this.metrics = options.metrics === false ? undefined : new TetherMetrics();
    this.store = this.metrics ? instrumentStore(options.store, this.metrics) : options.store;
    this.readAccess = new ReadAccess(this.store, options.metricsToken);
    this.log = options.log ?? createLogger();
    this.tunnel = options.tunnel ?? {};
    this.limits = resolveLimits(options.limits);
    this.sessions = new AgentSessions({
      maxPerCluster: this.limits.maxAgentsPerCluster,
      ...(options.drainTimeoutMs === undefined ? {} : { drainTimeoutMs: options.drainTimeoutMs }),
    });
    this.authFailures = new FailureRateLimit({
      limit: this.limits.authFailureLimit,
      windowMs: this.limits.authFailureWindowMs,
    });
    this.live = new LiveCredentials(this.store, {
      sweepIntervalMs: options.sessionCheckIntervalMs ?? 1000,
      onEnded: (credential, why, count) =>
        this.log.info({ credential, count }, `closed what a ${why} credential held open`),
    });
    this.proxy = new ClusterProxy({
      live: this.live,
      store: this.store,
      sessions: this.sessions,
      log: this.log,
      quota: new CallerQuota(this.limits.maxStreamsPerCaller),
      failures: this.authFailures,
      streamIdleTimeoutMs: this.limits.streamIdleTimeoutMs,
      ...(this.metrics ? { metrics: this.metrics } : {}),
      ...(options.audit ? { audit: options.audit } : {}),
      ...(options.identity ? { identity: options.identity } : {}),
      ...(replicas ? { replicas } : {}),
    });
    this.audit = options.audit;
    this.join = new JoinEndpoint({
      store: this.store,
      ca,
      log: this.log,
      ...(options.clusterCertTtlMs ? { clusterCertTtlMs: options.clusterCertTtlMs } : {}),
      ...(options.audit ? { audit: options.audit } : {}),
    });
    this.renewals = new Renewals(
      {
        store: this.store,
        join: this.join,
        log: this.log,
        ...(options.audit ? { audit: options.audit } : {}),
      },
      options.renewal,
    );
    // Printed agent commands and kubeconfigs name the URL callers use.
    const publicUrl = async () =>
      normalizeServerUrl(options.externalUrl ?? (await this.store.serverUrl()) ?? this.url, "server URL");
    this.admin = new AdminApi({
      store: this.store,
      admin: new StoreClusterAdmin(this.store, publicUrl),
      log: this.log,
      ...(options.audit ? { audit: options.audit } : {}),
      onTokensRevoked: (ids) =>
        this.live.end(
          ids.map((id) => TOKEN_CREDENTIAL + id),
          "revoked",
        ),
      onClusterRemoved: (cluster) => {
        this.closeSessionsOf(cluster, "cluster_removed");
        this.renewals.forget(cluster);
        this.events.forget(cluster);
        void this.metrics?.forgetCluster(cluster);
      },
      connection: (cluster) => connectionOf(this.sessions.usable(cluster)),
    });
    const model = new StatusModel({
      store: this.store,
      sessions: this.sessions,
      events: this.events,
      draining: () => this.closing || this.drain.active,
    });
    this.statusPage = { mayRead: adminReader(this.store), snapshot: () => model.snapshot() };
    this.externalUrl = options.externalUrl;
    this.clusterDomain = options.clusterDomain;
    this.ownHost = options.externalUrl ? new URL(options.externalUrl).hostname : undefined;
    if (options.clusterStatus) {
      const sink = options.clusterStatus;
      this.status = new ClusterStatusReporter((cluster, status) => sink.write(cluster, status), {
        onError: (cluster, err) =>
          this.log.warn({ cluster, err: err.message }, "cluster status write failed"),
        current: (cluster) => this.agentState(cluster),
        ...options.clusterStatusOptions,
      });
    }
    this.checker = setInterval(() => void this.checkSessions(), options.sessionCheckIntervalMs ?? 1000);
    this.checker.unref();
    this.servingCertPem = serving.certPem;
    this.rotation = setInterval(() => {
      this.reloadServingCertificate().catch((err: Error) =>
        this.log.error({ err: err.message }, "serving certificate rotation failed"),
      );
    }, 3600_000);
    this.rotation.unref();
    this.listener = new CallerListener({
      cert: serving.certPem,
      key: serving.keyPem,
      ca: ca.certPem,
      limits: this.limits,
      log: this.log,
      request: (req, res) => void this.handleRequest(req, res),
      upgrade: (req, socket, head) => void this.handleUpgrade(req, socket, head),
    });
  }

  static async start(options: ServerOptions): Promise<TetherServer> {
    const ca = await options.store.loadOrCreateCa();
    const external = options.externalUrl ? new URL(options.externalUrl).hostname : undefined;
    const isIp = (h: string) => /^[\d.]+$|:/.test(h);
    const dnsNames = [
      "localhost",
      ...(external && !isIp(external) ? [external] : []),
      ...(options.clusterDomain ? [`*.${options.clusterDomain}`] : []),
    ];
    const ips = [
      "127.0.0.1",
      "::1",
      ...(external && isIp(external) ? [external.replace(/^\[|\]$/g, "")] : []),
    ];
    const names = { dnsNames, ips };
    const serving = await options.store.loadOrCreateServingCertificate(names);
    const replicas = options.replica
      ? await startReplicas(options.replica, ca, options.log ?? createLogger())
      : undefined;
    const server = new TetherServer(options, ca, serving, names, replicas);
    await replicas?.hop.start(server.hopEntry());
    await server.listener.listen(options.port ?? 8443, options.host ?? "0.0.0.0");
    server.listenedPort = (server.listener.server.address() as AddressInfo).port;
    server.log.info({ url: server.url }, "tether-server listening");
    // A previous server may have died with clusters marked connected.
    if (options.clusterStatus) {
      // Another live replica holding it is its status's writer, not this new one.
      for (const cluster of await options.clusterStatus.markedConnectedClusters())
        if (!replicas?.ownership.owner(cluster)) server.reportStatus(cluster);
    }
    return server;
  }

  /**
   * Re-reads the serving certificate from the store, which reissues it when a
   * third of its life is left (or it is missing), and swaps it in for new TLS
   * handshakes. Established connections — agents' tunnels among them — keep
   * going. Runs hourly and on SIGHUP; returns whether the certificate changed.
   */
  async reloadServingCertificate(): Promise<boolean> {
    const serving = await this.store.loadOrCreateServingCertificate(this.servingNames);
    if (serving.certPem === this.servingCertPem) return false;
    this.listener.server.setSecureContext({
      cert: serving.certPem,
      key: serving.keyPem,
      ca: this.ca.certPem,
    });
    this.servingCertPem = serving.certPem;
    this.log.info("serving certificate rotated");
    return true;
  }

  /** The port listened on; kept once the listener closes (a drain still reports status with it). */
  get port(): number {
    const address = this.listener.server.address() as AddressInfo | null;
    if (address) this.listenedPort = address.port;
    return this.listenedPort;
  }

  /** https://127.0.0.1:<port> — for local use and tests. */
  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  /** A host-routed request as the cluster proxy's path form, or why it is refused. */
  private hostRouted(req: IncomingMessage): HostRoute | { kind: "refused"; message: string } {
    const route = hostRoute(req, this.clusterDomain, this.ownHost);
    if (route.kind !== "cluster" || toClusterPath(req, route.cluster)) return route;
    return { kind: "refused", message: "a request for a member's host name has a path, not an absolute URL" };
  }

  private async handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.socket.setTimeout(0);
    try {
      const routed = this.hostRouted(req);
      const path = (req.url ?? "/").split("?")[0] ?? "/";
      const health = routed.kind !== "cluster" && HEALTH_PATHS.has(path);
      if (!health && !this.drain.admitRequest(req, res)) return;
      if (routed.kind === "cluster") return await this.proxy.handleRequest(req, res);
      if (routed.kind === "misdirected") return sendStatus(res, "MisdirectedRequest", routed.message);
      if (routed.kind === "refused") return sendStatus(res, "BadRequest", routed.message);
      const endpoint = authenticatedEndpoint(path);
      if (endpoint !== undefined) {
        if (path === JOIN_CERTIFICATE_PATH && this.metrics) {
          const metrics = this.metrics;
          res.once("close", () => metrics.joinAnswered(res.statusCode));
        }
        if (endpoint === "join" || endpoint === "admin") this.audit?.endpoint(req, res, endpoint);
        if (this.refuseFailingSource(req, res, endpoint)) return;
      }
      if (path === "/healthz" || path === "/livez") {
        res.writeHead(200, { "content-type": "text/plain" }).end("ok");
      } else if (path === "/readyz") {
        if (this.drain.active) return sendStatus(res, "ServiceUnavailable", "tether-server is shutting down");
        await this.store.listClusters();
        res.writeHead(200, { "content-type": "text/plain" }).end("ok");
      } else if (path.startsWith("/clusters/")) {
        await this.proxy.handleRequest(req, res);
      } else if (endpoint === "status") {
        await serveStatus(this.statusPage, req, res);
      } else if (endpoint === "join") {
        await this.join.handle(req, res, path);
      } else if (endpoint === "admin") {
        await this.admin.handle(req, res, path);
      } else if (endpoint === "metrics") {
        await serveMetrics(req, res, this.readAccess, this.metrics);
      } else {
        sendStatus(
          res,
          "NotFound",
          "no such path on tether-server: member clusters are under /clusters/<name>/ " +
            "(kubectl proxy drops that path unless given --append-server-path" +
            (this.clusterDomain ? `; or use https://<name>.${this.clusterDomain}/` : "") +
            ")",
        );
      }
    } catch (err) {
      this.log.error({ err: (err as Error).message, path: loggablePath(req.url) }, "request failed");
      sendStatus(res, "InternalError", "tether-server failed to handle the request; see its log");
    }
  }

  private async handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on("error", () => socket.destroy());
    // Until the upgrade is answered (refusals too: a caller may never read them).
    (socket as Socket).setTimeout(this.limits.idleTimeoutMs, () => socket.destroy());
    try {
      const routed = this.hostRouted(req);
      const path = (req.url ?? "/").split("?")[0];
      if (!this.drain.admitUpgrade(socket, routed.kind === "cluster" || path !== AGENT_PATH)) return;
      if (routed.kind === "cluster") return await this.proxy.handleUpgrade(req, socket, head);
      if (routed.kind === "misdirected")
        return closeWith(socket, statusResponseHead("MisdirectedRequest", routed.message));
      if (routed.kind === "refused")
        return closeWith(socket, statusResponseHead("BadRequest", routed.message));
      if (path === AGENT_PATH) await this.acceptAgent(req, socket, head);
      else if (path?.startsWith("/clusters/")) await this.proxy.handleUpgrade(req, socket, head);
      else closeWith(socket, statusResponseHead("NotFound", "no such upgrade path on tether-server"));
    } catch (err) {
      this.log.error({ err: (err as Error).message, path: loggablePath(req.url) }, "upgrade failed");
      closeWith(
        socket,
        statusResponseHead("InternalError", "tether-server failed to handle the upgrade; see its log"),
      );
    }
  }

  private async acceptAgent(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const tls = req.socket as TLSSocket;
    const remoteAddress = tls.remoteAddress ?? "unknown";
    const refuse = (
      reason: "Unauthorized" | "Forbidden",
      message: string,
      why: AgentRefusal,
      cluster?: string,
    ) => {
      this.metrics?.agentRefused(why);
      this.log.warn({ remoteAddress, reason }, `agent refused: ${message}`);
      if (cluster) this.events.error(cluster, `agent refused: ${message}`);
      this.audit?.agent("refused", { remoteAddress, message, ...(cluster ? { cluster } : {}) });
      closeWith(socket, statusResponseHead(reason, message));
    };
    if (!tls.authorized) {
      refuse(
        "Unauthorized",
        "the agent endpoint needs a client certificate issued by this server's CA",
        "no_certificate",
      );
      return;
    }
    // The cluster is whatever the certificate says — never what the agent claims.
    const peer = tls.getPeerCertificate(true);
    const identity = identityFromPeerCertificate(peer);
    if (identity?.kind !== "cluster") {
      refuse("Forbidden", "this certificate does not identify a cluster", "not_a_cluster");
      return;
    }
    if (await this.store.isRevoked(identity.serial)) {
      refuse(
        "Forbidden",
        `the certificate of cluster "${identity.cluster}" has been revoked`,
        "revoked",
        identity.cluster,
      );
      return;
    }
    const record = await this.store.getCluster(identity.cluster);
    if (!record) {
      refuse("Forbidden", `cluster "${identity.cluster}" is not registered`, "unregistered");
      return;
    }
    const certificate = {
      serial: identity.serial,
      certNotAfter: new Date(peer.valid_to),
      certIssuedAt: issuedAtOf(new Date(peer.valid_from)),
      ...(identity.incarnation ? { incarnation: identity.incarnation } : {}),
    };
    const foreign = foreignIncarnation(certificate, record);
    if (foreign) {
      refuse(
        "Forbidden",
        `${foreign}, which was removed: join again with a new token (tether-server join-token ${record.name})`,
        "reregistered",
        record.name,
      );
      return;
    }
    // The agent's own estimate of this path (seen from its end) if it sent one, else what this server last
    // saw of the cluster: either only lets the session start where the last one left off (path-estimator.ts).
    const announced = parsePathEstimate(req.headers[PATH_ESTIMATE_HEADER]);
    const carried =
      announced === undefined ? this.paths.recall(identity.cluster) : mirrorPathEstimate(announced);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const session = sessionFromWebSocket(ws, {
        ...(carried === undefined ? {} : { pathEstimate: carried }),
        maxStreams: this.limits.maxStreamsPerAgent,
        ...this.tunnel,
        role: "server",
        // An agent may only renew its certificate, one stream at a time: nothing else on the host is its to reach.
        accept: (open) => this.renewals.accept(session, open),
      });
      const cluster = identity.cluster;
      this.paths.track(cluster, session);
      session.on("error", (err) => this.log.warn({ cluster, err: err.message }, "agent session error"));
      session.once("close", (err?: Error) => {
        this.log.info({ cluster, remoteAddress }, "agent disconnected");
        this.events.disconnected(cluster);
        if (err) this.events.error(cluster, `session ended: ${err.message}`);
        this.audit?.agent("disconnected", { cluster, remoteAddress, serial: entry.serial });
        this.reportStatus(cluster);
        const current = this.sessions.get(cluster);
        if (!current || current.session.closed) void this.replicas?.ownership.release(cluster);
      });
      const agentVersion = req.headers[AGENT_VERSION_HEADER];
      const agentFeatures = req.headers[AGENT_FEATURES_HEADER];
      const instance = req.headers[AGENT_INSTANCE_HEADER];
      const entry = this.sessions.attach(cluster, session, {
        remoteAddress,
        ...certificate,
        ...(typeof agentVersion === "string" ? { agentVersion: agentVersion.slice(0, 64) } : {}),
        ...(typeof agentFeatures === "string" ? { agentFeatures: agentFeatures.slice(0, 256) } : {}),
        ...(typeof instance === "string" ? { instance: instance.slice(0, 64) } : {}),
      });
      this.nextExpiryAt = Math.min(this.nextExpiryAt, entry.certNotAfter.getTime());
      // Its only session going away (the agent stops) leaves the cluster without a usable one.
      session.once("goaway", () => this.reportStatus(cluster));
      this.reportStatus(cluster);
      this.metrics?.agentConnected(cluster, session);
      void this.replicas?.ownership.claim(cluster);
      void this.probeKubernetesVersion(entry);
      session.on("stream", (stream) => {
        void this.renewals
          .serve(entry, stream)
          .then((issued) => this.metrics?.renewal(issued ? "success" : "refused"));
      });
      this.log.info({ cluster, remoteAddress }, "agent connected");
      this.audit?.agent("connected", {
        cluster,
        remoteAddress,
        serial: entry.serial,
        ...(entry.agentVersion ? { agentVersion: entry.agentVersion } : {}),
      });
    });
  }

  /**
   * The join and admin endpoints answer a bad credential with 401; a source
   * with too many of those gets 429 until its failures leave the window.
   * Returns true when it refused the request.
   */
  private refuseFailingSource(req: IncomingMessage, res: ServerResponse, endpoint: AuthEndpoint): boolean {
    const admin = endpoint === "admin";
    const source = sourceKey(req.socket.remoteAddress);
    const attempt = this.authFailures.begin(source, presentedCredential(req));
    if (typeof attempt === "number") {
      this.metrics?.authFailure(endpoint, "rate_limited");
      const message = `too many failed attempts from your address: try again in ${attempt} s`;
      if (!admin) sendStatus(res, "TooManyRequests", message, attempt);
      else {
        // The admin API's own error shape, which the admin CLI prints.
        const body = JSON.stringify({ code: ERR_TETHER_RATE_LIMITED, message });
        res
          .writeHead(429, {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
            "retry-after": String(attempt),
            "cache-control": "no-store",
          })
          .end(body);
      }
      return true;
    }
    releaseOnClose(res, () => {
      if (res.statusCode !== 401) {
        attempt.succeeded();
        return;
      }
      this.metrics?.authFailure(endpoint, "invalid_credential");
      if (attempt.failed()) {
        this.log.warn({ source }, "too many failed authentications: the source address must wait");
      }
    });
    return false;
  }

  /**
   * Cuts off sessions, draining ones too, whose cluster was removed or
   * registered again (a new incarnation), whose certificate was revoked or
   * has expired. An idle fleet costs one changeMark() a second: the sessions
   * are looked at only when the store moved (then with one sessionRecords()
   * read for all of them) or a certificate is due to expire.
   */
  private async checkSessions(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      await this.checkSessionsOnce();
    } finally {
      this.checking = false;
    }
  }

  private async checkSessionsOnce(): Promise<void> {
    let mark: string | undefined;
    try {
      mark = await this.store.changeMark();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "session check could not read the store");
    }
    const full = mark === undefined || mark !== this.checkedMark;
    if (!full && Date.now() < this.nextExpiryAt) return;
    let records: SessionRecords | undefined;
    if (full) {
      try {
        records = await this.store.sessionRecords();
      } catch (err) {
        // Expiry is still checked; the records are read again next time.
        this.log.warn({ err: (err as Error).message }, "session check could not read the store");
      }
    }
    const now = Date.now();
    let nextExpiry = Number.POSITIVE_INFINITY;
    for (const entry of this.sessions.list()) {
      if (entry.session.closed) continue;
      let why: string | undefined;
      let reason: DisconnectReason = "reregistered";
      const record = records?.cluster(entry.cluster);
      if (records && !record) [why, reason] = ["the cluster was removed", "cluster_removed"];
      else if (records?.isRevoked(entry.serial))
        [why, reason] = ["its certificate was revoked", "certificate_revoked"];
      else if (entry.certNotAfter.getTime() <= now)
        [why, reason] = ["its certificate expired", "certificate_expired"];
      else if (record) why = foreignIncarnation(entry, record);
      if (!why) {
        nextExpiry = Math.min(nextExpiry, entry.certNotAfter.getTime());
        continue;
      }
      this.log.warn({ cluster: entry.cluster }, `closing the agent session: ${why}`);
      this.events.error(entry.cluster, `session closed: ${why}`);
      this.metrics?.closeReason(entry.session, reason);
      entry.session.close();
      // After the close, whose handlers record the session's last bytes under the cluster's name.
      if (reason === "cluster_removed") {
        this.events.forget(entry.cluster);
        void this.metrics?.forgetCluster(entry.cluster);
      }
    }
    // Every session attached so far is in the list (no await since it was taken); renewals only move expiry later.
    this.nextExpiryAt = nextExpiry;
    if (records && mark !== undefined) this.checkedMark = mark;
  }

  /** Closes every session of `cluster`, draining ones too, saying why in the metrics. */
  private closeSessionsOf(cluster: string, reason: DisconnectReason): void {
    for (const entry of this.sessions.list())
      if (entry.cluster === cluster) this.metrics?.closeReason(entry.session, reason);
    this.sessions.disconnect(cluster);
  }

  /** Hands the cluster's current state to the status reporter (which decides whether to write). */
  private reportStatus(cluster: string): void {
    this.status?.report(cluster, this.agentState(cluster));
  }

  /** What the cluster's status says now: its first usable session, if any. */
  private agentState(cluster: string): AgentState {
    const entry = this.sessions.usable(cluster)[0];
    const base = this.externalUrl ?? this.url;
    return {
      connected: entry !== undefined,
      endpoint: `${base.replace(/\/+$/, "")}/clusters/${cluster}`,
      ...(entry?.session.rtt === undefined ? {} : { rttMs: entry.session.rtt }),
      ...(entry?.agentVersion ? { agentVersion: entry.agentVersion } : {}),
      ...(entry?.kubernetesVersion ? { kubernetesVersion: entry.kubernetesVersion } : {}),
    };
  }

  /** Reads the member's /version through the new session, for its status (best effort). */
  private async probeKubernetesVersion(entry: AgentSession): Promise<void> {
    const cluster = await this.store.getCluster(entry.cluster);
    if (!cluster) return;
    const version = await new Promise<string | undefined>((resolve) => {
      const req = httpRequest(
        {
          // A stream of its own, closed after the answer: none left idle in the callers' pool.
          createConnection: () => entry.openStream(cluster.auth) as Socket,
          path: "/version",
          timeout: 10_000,
          // /version is public to authenticated users; an impersonated Tether identity is one.
          headers:
            cluster.auth === "impersonate" ? { "impersonate-user": `${IDENTITY_PREFIX}tether-server` } : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.length < 64 && chunks.push(c));
          res.on("end", () => {
            try {
              const v = (JSON.parse(Buffer.concat(chunks).toString("utf8")) as { gitVersion?: unknown })
                .gitVersion;
              resolve(typeof v === "string" ? v.slice(0, 64) : undefined);
            } catch {
              resolve(undefined);
            }
          });
          res.on("error", () => resolve(undefined));
        },
      );
      req.on("timeout", () => req.destroy());
      req.on("error", () => resolve(undefined));
      req.end();
    });
    if (version) {
      entry.kubernetesVersion = version;
      this.reportStatus(entry.cluster);
    } else {
      this.log.info({ cluster: entry.cluster }, "could not read the member's /version for its status");
      this.events.error(entry.cluster, "could not read the member's /version through the tunnel");
    }
  }

  /**
   * The graceful stop of SIGTERM. For `delayMs` (--shutdown-delay) the
   * server leaves: readiness goes false and agents' tunnels are refused, but
   * the listener stays open and callers are served as before, each
   * connection closed after its response, while load balancers take the
   * replica out of their rotation (a listener closed at once resets the
   * connections they still send: the caller's "socket disconnected before
   * secure TLS connection was established"). With replicas the clusters
   * change hands meanwhile: the owner records are resigned and every session
   * is sent go-away at once, and a caller's request waits for the next owner
   * and goes to it over the hop. Then the drain: the listener closes, new
   * callers and agents are refused, watches end between events; requests and
   * upgrades in flight get what is left of `graceMs` (--shutdown-grace),
   * then what is left is cut and the sessions close. Resolves with how many were cut.
   */
  async shutdown(
    graceMs = this.limits.shutdownGraceMs,
    delayMs = this.limits.shutdownDelayMs,
  ): Promise<number> {
    const started = performance.now();
    const elapsed = () => performance.now() - started;
    this.drain.leave();
    // h2 clients move their next requests to a new connection now; HTTP/1.1 ones after their next response.
    this.listener.goAway();
    // Their agents leave during the drain: the clusters' status must still say so at the end.
    const held = this.sessions.list().map((e) => e.cluster);
    // With no other replica to go to, a session sent away now would leave the delay's callers with no agent.
    if (this.replicas) await this.goAway();
    // The delay is the first part of the grace (limits.ts refuses a longer one from the flags).
    const delay = Math.min(delayMs, graceMs) - elapsed();
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    this.drain.begin();
    // No new connections; those open get 503 from the drain until they close.
    this.listener.server.close();
    if (!this.replicas) await this.goAway();
    const cut = await this.drain.settle(Math.max(0, graceMs - elapsed()), DRAIN_LINGER_MS);
    this.log.info({ cut }, cut ? "grace period over: cutting what is left" : "drained");
    await this.close(held);
    return cut;
  }

  /** Gives up the owner records, then sends go-away on every session: its agent dials again, elsewhere. */
  private async goAway(): Promise<void> {
    await this.replicas?.ownership.resign();
    this.sessions.drainAll();
  }

  /**
   * The replica hop's way in: the cluster proxy, with what another replica
   * forwards here counted in this replica's drain, which would cut it otherwise.
   */
  private hopEntry(): ProxyEntry {
    return {
      handleRequest: (req, res) => {
        this.drain.track(req, res);
        return this.proxy.handleRequest(req, res);
      },
      handleUpgrade: (req, socket, head) => {
        this.drain.trackUpgrade(socket);
        return this.proxy.handleUpgrade(req, socket, head);
      },
    };
  }

  /**
   * Stops accepting, closes every agent session and waits for the listener to
   * close; the status of `alsoHeld` (clusters whose sessions ended in a drain) is
   * reported with the rest.
   */
  async close(alsoHeld: string[] = []): Promise<void> {
    this.closing = true;
    clearInterval(this.checker);
    clearInterval(this.rotation);
    this.live.close();
    const live = [...new Set([...alsoHeld, ...this.sessions.list().map((e) => e.cluster)])];
    for (const entry of this.sessions.list()) this.metrics?.closeReason(entry.session, "shutdown");
    this.sessions.closeAll();
    if (this.status) {
      // Best effort: say the clusters are disconnected rather than leave them True.
      for (const cluster of live) this.reportStatus(cluster);
      await Promise.race([this.status.pump(), new Promise((r) => setTimeout(r, 2_000).unref())]);
      this.status.close();
    }
    // The close handshake carries the go-away ahead of it; an agent that does not answer is cut.
    const clients = [...this.wss.clients];
    await Promise.race([
      Promise.all(
        clients.map((ws) => new Promise((r) => (ws.readyState === ws.CLOSED ? r(0) : ws.once("close", r)))),
      ),
      new Promise((r) => setTimeout(r, 1_000).unref()),
    ]);
    for (const ws of clients) ws.terminate();
    await this.replicas?.close();
    await this.listener.close();
  }
}

/**
 * How long a drain waits at least (drain.ts settle): a connection accepted as
 * the listener closed gets that long to finish its TLS handshake and send its
 * first request, which is then served, on a loaded machine too.
 */
const DRAIN_LINGER_MS = 1_000;

/** Answered during a drain too: the kubelet's probes. */
const HEALTH_PATHS = new Set(["/healthz", "/livez", "/readyz"]);

/** The endpoints whose callers present a credential of their own (and whose failures count per source). */
function authenticatedEndpoint(path: string): Exclude<AuthEndpoint, "proxy"> | undefined {
  if (path === METRICS_PATH) return "metrics";
  if (path === STATUS_PATH) return "status";
  if (path.startsWith("/join/")) return "join";
  if (path.startsWith(ADMIN_API_PREFIX)) return "admin";
  return undefined;
}
