// tether-server's Prometheus metrics (docs/metrics.md lists every one). The
// server calls the hooks below at a request's or session's start and end;
// what the tunnel already counts (bytes, streams, RTT) is read from the live
// sessions when Prometheus scrapes, never per frame. Labels are bounded: the
// cluster label only ever holds registered clusters (its series go when the
// cluster is removed), the others come from fixed sets; no user, path or pod.
import type { IncomingMessage, ServerResponse } from "node:http";
import { ErrorCode, isTetherError, type Session } from "@tether/tunnel";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { VERSION } from "../version.js";
import type { ProxyObserver, RefusalReason } from "../proxy/cluster-proxy.js";
import { requestInfo } from "../proxy/request-info.js";

/** Which endpoint judged a credential. */
export type AuthEndpoint = "proxy" | "join" | "admin" | "metrics" | "status";
/** invalid_credential: missing or not accepted (401); member_rejected: a passthrough member answered 401. */
export type AuthFailureReason = "invalid_credential" | "member_rejected" | "rate_limited";

/** Why the server refused an agent's tunnel. */
export type AgentRefusal = "no_certificate" | "not_a_cluster" | "revoked" | "unregistered" | "reregistered";

/** Why a session ended; `closeReason` is told the server's own reasons before it closes one. */
export type DisconnectReason =
  | "replaced"
  | "cluster_removed"
  | "certificate_revoked"
  | "certificate_expired"
  | "reregistered"
  | "shutdown"
  | "agent_closed"
  | "dead_peer"
  | "connection_lost"
  | "protocol_error"
  | "error";

export type RenewalResult = "success" | "refused";

/** Verbs the request histogram keeps; anything else (an exotic HTTP method) is "other". */
const VERBS = new Set(
  "get list watch create update patch delete deletecollection proxy head post put options".split(" "),
);
const UPGRADE_KINDS = new Set(["exec", "attach", "portforward"]);
const JOIN_RESULTS: Record<number, string> = {
  200: "success",
  400: "bad_request",
  401: "invalid_token",
  403: "forbidden",
  429: "rate_limited",
};
const FOLLOW = /[?&]follow=(1|t|T|true|True|TRUE)(&|$)/;

const NONCONFORMING_DEFAULTS = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

/** Seconds: from a quick GET to a watch held for an hour. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600];
const STORE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

interface ClusterBytes {
  sent: number;
  received: number;
}

export class TetherMetrics implements ProxyObserver {
  readonly registry = new Registry();
  /** Sessions not yet closed, by cluster: a replaced one drains beside its successor. */
  private readonly live = new Map<string, Set<Session>>();
  /** Bytes of each cluster's sessions that closed already, so the counters never go back. */
  private readonly closedBytes = new Map<string, ClusterBytes>();
  private readonly closeReasons = new WeakMap<Session, DisconnectReason>();

  private readonly agentConnects: Counter<"result">;
  private readonly agentDisconnects: Counter<"reason">;
  private readonly refusals: Counter<"reason">;
  private readonly authFailures: Counter<"endpoint" | "reason">;
  private readonly requestDuration: Histogram<"cluster" | "verb" | "code">;
  /**
   * Open watches and upgrades, counted here and copied into their gauges at
   * scrape time: one that ends after its cluster was forgotten finds no entry
   * and changes nothing, where a gauge's dec() would bring back a series at -1.
   */
  private readonly longOpen = new Map<string, number>();
  private readonly upgradesOpenCount = new Map<string, { cluster: string; kind: string; open: number }>();
  private readonly upgradesTotal: Counter<"cluster" | "kind">;
  private readonly joins: Counter<"result">;
  private readonly renewals: Counter<"result">;
  readonly storeDuration: Histogram<"operation">;
  readonly storeErrors: Counter<"operation">;
  /** Metrics whose series carry a cluster label set per request: forgetCluster drops them. */
  private readonly perCluster: (Counter<string> | Gauge<string> | Histogram<string>)[];

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // Gauges named *_total break the Prometheus naming rules (promlint); their per-type twins stay.
    for (const name of NONCONFORMING_DEFAULTS) this.registry.removeSingleMetric(name);
    new Gauge({
      name: "tether_build_info",
      help: "Always 1; the version label is this tether-server's version.",
      labelNames: ["version"],
      registers,
    }).set({ version: VERSION }, 1);
    const metrics = this;
    new Gauge({
      name: "tether_agents_connected",
      help: "Clusters whose agent holds a current (not draining) tunnel session.",
      registers,
      collect() {
        let n = 0;
        for (const sessions of metrics.live.values()) {
          if ([...sessions].some((s) => !s.goingAway)) n++;
        }
        this.set(n);
      },
    });
    new Gauge({
      name: "tether_agent_sessions",
      help: "Tunnel sessions not yet closed: active, or draining after a go-away (a replaced session).",
      labelNames: ["state"],
      registers,
      collect() {
        let draining = 0;
        let active = 0;
        for (const sessions of metrics.live.values()) {
          for (const s of sessions) {
            if (s.goingAway) draining++;
            else active++;
          }
        }
        this.set({ state: "active" }, active);
        this.set({ state: "draining" }, draining);
      },
    });
    this.agentConnects = new Counter({
      name: "tether_agent_connects_total",
      help: "Agent tunnel attempts with a WebSocket upgrade, by result: accepted, or why it was refused.",
      labelNames: ["result"],
      registers,
    });
    this.agentDisconnects = new Counter({
      name: "tether_agent_disconnects_total",
      help: "Agent tunnel sessions that ended, by reason.",
      labelNames: ["reason"],
      registers,
    });
    new Gauge({
      name: "tether_tunnel_streams_open",
      help: "Streams open on the cluster's tunnel sessions (draining ones included), both directions.",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        for (const [cluster, sessions] of metrics.live) {
          let n = 0;
          for (const s of sessions) n += s.streamCount;
          this.set({ cluster }, n);
        }
      },
    });
    new Counter({
      name: "tether_tunnel_bytes_total",
      help: "Bytes of tunnel frames (headers included) to (sent) and from (received) the cluster's agent, over all its sessions.",
      labelNames: ["cluster", "direction"],
      registers,
      collect() {
        this.reset();
        const clusters = new Set([...metrics.live.keys(), ...metrics.closedBytes.keys()]);
        for (const cluster of clusters) {
          const { sent, received } = metrics.bytesOf(cluster);
          this.inc({ cluster, direction: "sent" }, sent);
          this.inc({ cluster, direction: "received" }, received);
        }
      },
    });
    new Gauge({
      name: "tether_tunnel_rtt_seconds",
      help: "Smoothed round-trip time of tunnel pings on the cluster's current session (absent before the first pong).",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        for (const [cluster, sessions] of metrics.live) {
          const current = [...sessions].find((s) => !s.goingAway);
          if (current?.rtt !== undefined) this.set({ cluster }, current.rtt / 1000);
        }
      },
    });
    this.refusals = new Counter({
      name: "tether_proxy_refused_total",
      help: "Requests and upgrades to /clusters/ that Tether answered itself instead of forwarding, by reason.",
      labelNames: ["reason"],
      registers,
    });
    this.authFailures = new Counter({
      name: "tether_authentication_failures_total",
      help: "Failed authentications, by endpoint and reason (each counts against the source's --auth-failure-limit, except rate_limited refusals).",
      labelNames: ["endpoint", "reason"],
      registers,
    });
    this.requestDuration = new Histogram({
      name: "tether_proxy_request_duration_seconds",
      help: "Time from admission to the end of the response of requests forwarded to a member (watches when they end), by cluster, Kubernetes verb and status class.",
      labelNames: ["cluster", "verb", "code"],
      buckets: DURATION_BUCKETS,
      registers,
    });
    new Gauge({
      name: "tether_proxy_long_requests_open",
      help: "Watches and followed logs being forwarded now.",
      labelNames: ["cluster"],
      registers,
      collect() {
        this.reset();
        for (const [cluster, open] of metrics.longOpen) this.set({ cluster }, open);
      },
    });
    new Gauge({
      name: "tether_upgrades_open",
      help: "Upgraded connections (exec, attach, port-forward, other) relayed now.",
      labelNames: ["cluster", "kind"],
      registers,
      collect() {
        this.reset();
        for (const { cluster, kind, open } of metrics.upgradesOpenCount.values())
          this.set({ cluster, kind }, open);
      },
    });
    this.upgradesTotal = new Counter({
      name: "tether_upgrades_total",
      help: "Upgrade requests admitted and relayed to a member, by kind.",
      labelNames: ["cluster", "kind"],
      registers,
    });
    this.joins = new Counter({
      name: "tether_joins_total",
      help: "Join requests (POST of a CSR with a join token), by result.",
      labelNames: ["result"],
      registers,
    });
    this.renewals = new Counter({
      name: "tether_renewals_total",
      help: "Certificate renewals over agent tunnels, by result.",
      labelNames: ["result"],
      registers,
    });
    this.storeDuration = new Histogram({
      name: "tether_store_operation_duration_seconds",
      help: "Time the state store took per operation, failed ones included.",
      labelNames: ["operation"],
      buckets: STORE_BUCKETS,
      registers,
    });
    this.storeErrors = new Counter({
      name: "tether_store_operation_errors_total",
      help: "State store operations that failed.",
      labelNames: ["operation"],
      registers,
    });
    this.perCluster = [this.requestDuration, this.upgradesTotal];
  }

  /** The Prometheus text exposition. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  private bytesOf(cluster: string): ClusterBytes {
    let { sent, received } = this.closedBytes.get(cluster) ?? { sent: 0, received: 0 };
    for (const s of this.live.get(cluster) ?? []) {
      sent += s.bytesSent;
      received += s.bytesReceived;
    }
    return { sent, received };
  }

  agentRefused(why: AgentRefusal): void {
    this.agentConnects.inc({ result: why });
  }

  /** A new session of `cluster`; any other live one of it is being replaced. */
  agentConnected(cluster: string, session: Session): void {
    this.agentConnects.inc({ result: "accepted" });
    let sessions = this.live.get(cluster);
    if (!sessions) {
      sessions = new Set();
      this.live.set(cluster, sessions);
    }
    for (const other of sessions) if (!this.closeReasons.has(other)) this.closeReasons.set(other, "replaced");
    sessions.add(session);
    session.once("close", (err?: Error) => {
      sessions.delete(session);
      if (sessions.size === 0 && this.live.get(cluster) === sessions) this.live.delete(cluster);
      const bytes = this.closedBytes.get(cluster) ?? { sent: 0, received: 0 };
      bytes.sent += session.bytesSent;
      bytes.received += session.bytesReceived;
      this.closedBytes.set(cluster, bytes);
      this.agentDisconnects.inc({ reason: this.closeReasons.get(session) ?? reasonOf(err) });
    });
  }

  /** Says why the server is about to close `session` (the first reason given stands). */
  closeReason(session: Session, reason: DisconnectReason): void {
    if (!this.closeReasons.has(session)) this.closeReasons.set(session, reason);
  }

  refused(reason: RefusalReason): void {
    this.refusals.inc({ reason });
  }

  /** A stream open refused because a tunnel was full: this end's (session_full) or the agent's. */
  refusedFull(err: unknown): void {
    this.refused(isTetherError(err, ErrorCode.STREAM_LIMIT) ? "session_full" : "agent_stream_limit");
  }

  authFailure(endpoint: AuthEndpoint, reason: AuthFailureReason): void {
    this.authFailures.inc({ endpoint, reason });
  }

  /** Times a forwarded request from now to the end of its response; `path` is the member path with its query. */
  requestStarted(req: IncomingMessage, res: ServerResponse, cluster: string, path: string): void {
    const start = performance.now();
    const info = requestInfo(req.method ?? "GET", path);
    const verb = VERBS.has(info.verb) ? info.verb : "other";
    const long = verb === "watch" || (info.subresource === "log" && FOLLOW.test(path));
    if (long) this.longOpen.set(cluster, (this.longOpen.get(cluster) ?? 0) + 1);
    res.once("close", () => {
      const open = long ? this.longOpen.get(cluster) : undefined;
      if (open !== undefined) this.longOpen.set(cluster, open - 1);
      const code = res.headersSent ? `${Math.floor(res.statusCode / 100)}xx` : "none";
      this.requestDuration.observe({ cluster, verb, code }, (performance.now() - start) / 1000);
    });
  }

  /** An upgrade admitted for `cluster`; returns what to call when its connection closes. */
  upgradeStarted(cluster: string, path: string): () => void {
    const sub = requestInfo("GET", path).subresource;
    const labels = { cluster, kind: UPGRADE_KINDS.has(sub) ? sub : "other" };
    this.upgradesTotal.inc(labels);
    const key = `${cluster}\u0000${labels.kind}`;
    const entry = this.upgradesOpenCount.get(key) ?? { ...labels, open: 0 };
    entry.open++;
    this.upgradesOpenCount.set(key, entry);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      // The entry of a forgotten cluster is gone; a later one of a re-added cluster is another object.
      if (this.upgradesOpenCount.get(key) === entry) entry.open--;
    };
  }

  /** Counts a join by the status the join endpoint answered with. */
  joinAnswered(status: number): void {
    this.joins.inc({ result: JOIN_RESULTS[status] ?? "error" });
  }

  renewal(result: RenewalResult): void {
    this.renewals.inc({ result });
  }

  /** Drops every series of a removed cluster; its counters start again from 0 if the name is registered again. */
  async forgetCluster(cluster: string): Promise<void> {
    this.closedBytes.delete(cluster);
    this.longOpen.delete(cluster);
    for (const [key, entry] of this.upgradesOpenCount)
      if (entry.cluster === cluster) this.upgradesOpenCount.delete(key);
    for (const metric of this.perCluster) {
      const seen = new Map<string, Record<string, string | number>>();
      for (const { labels } of (await metric.get()).values) {
        if (labels.cluster !== cluster) continue;
        const { le: _le, ...series } = labels as Record<string, string | number>;
        seen.set(JSON.stringify(series), series);
      }
      for (const series of seen.values()) metric.remove(series);
    }
  }
}

function reasonOf(err: Error | undefined): DisconnectReason {
  if (!err) return "agent_closed";
  if (isTetherError(err, ErrorCode.KEEPALIVE_TIMEOUT)) return "dead_peer";
  if (isTetherError(err, ErrorCode.TRANSPORT_CLOSED)) return "connection_lost";
  if (isTetherError(err, ErrorCode.PROTOCOL) || isTetherError(err, ErrorCode.CONTROL_OVERFLOW))
    return "protocol_error";
  return "error";
}
