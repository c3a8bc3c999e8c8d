// tether-agent's Prometheus metrics (docs/metrics.md), served over plain HTTP
// on --metrics-address when it is given (off by default). What the tunnel
// counts itself (bytes, streams, RTT) is read from the session at scrape time.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Session } from "@tether/tunnel";
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import { VERSION } from "./version.js";

export type DialResult = "connected" | "refused" | "failed";
export type ReconnectReason = "go_away" | "session_lost";

// Gauges named *_total break the Prometheus naming rules (promlint); their per-type twins stay.
const NONCONFORMING_DEFAULTS = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

export class AgentMetrics {
  readonly registry = new Registry();
  private current: Session | undefined;
  private readonly closedBytes = { sent: 0, received: 0 };
  private readonly dials: Counter<"result">;
  private readonly reconnects: Counter<"reason">;
  private readonly streams: Counter<"result">;
  private readonly renewals: Counter<"result">;
  private readonly apiserverErrors: Counter<string>;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    for (const name of NONCONFORMING_DEFAULTS) this.registry.removeSingleMetric(name);
    const metrics = this;
    new Gauge({
      name: "tether_agent_build_info",
      help: "Always 1; the version label is this tether-agent's version.",
      labelNames: ["version"],
      registers,
    }).set({ version: VERSION }, 1);
    new Gauge({
      name: "tether_agent_connected",
      help: "1 while the agent holds a tunnel session to the server, else 0.",
      registers,
      collect() {
        this.set(metrics.current && !metrics.current.closed ? 1 : 0);
      },
    });
    this.dials = new Counter({
      name: "tether_agent_dials_total",
      help: "Dial attempts to the server, by result: connected, refused (an error status), failed (no connection).",
      labelNames: ["result"],
      registers,
    });
    this.reconnects = new Counter({
      name: "tether_agent_reconnects_total",
      help: "Sessions that ended and made the agent dial again, by reason.",
      labelNames: ["reason"],
      registers,
    });
    this.streams = new Counter({
      name: "tether_agent_streams_total",
      help: "Streams the server opened, accepted or refused.",
      labelNames: ["result"],
      registers,
    });
    new Gauge({
      name: "tether_agent_tunnel_streams_open",
      help: "Streams open on the current session.",
      registers,
      collect() {
        this.set(metrics.current?.streamCount ?? 0);
      },
    });
    new Counter({
      name: "tether_agent_tunnel_bytes_total",
      help: "Bytes of tunnel frames (headers included) to (sent) and from (received) the server, over all sessions.",
      labelNames: ["direction"],
      registers,
      collect() {
        this.reset();
        const s = metrics.current;
        this.inc({ direction: "sent" }, metrics.closedBytes.sent + (s?.bytesSent ?? 0));
        this.inc({ direction: "received" }, metrics.closedBytes.received + (s?.bytesReceived ?? 0));
      },
    });
    new Gauge({
      name: "tether_agent_tunnel_rtt_seconds",
      help: "Smoothed ping round-trip time of the current session (0 without a session or before its first pong).",
      registers,
      collect() {
        this.set((metrics.current?.rtt ?? 0) / 1000);
      },
    });
    this.renewals = new Counter({
      name: "tether_agent_renewals_total",
      help: "Certificate renewals over the tunnel, by result.",
      labelNames: ["result"],
      registers,
    });
    this.apiserverErrors = new Counter({
      name: "tether_agent_apiserver_errors_total",
      help: "Requests the agent could not complete with the apiserver (no connection, TLS failure, reset mid-response).",
      registers,
    });
  }

  dialed(result: DialResult): void {
    this.dials.inc({ result });
  }

  sessionStarted(session: Session): void {
    this.current = session;
    session.once("close", () => {
      this.closedBytes.sent += session.bytesSent;
      this.closedBytes.received += session.bytesReceived;
      if (this.current === session) this.current = undefined;
    });
  }

  reconnecting(reason: ReconnectReason): void {
    this.reconnects.inc({ reason });
  }

  stream(accepted: boolean): void {
    this.streams.inc({ result: accepted ? "accepted" : "refused" });
  }

  renewal(ok: boolean): void {
    this.renewals.inc({ result: ok ? "success" : "failure" });
  }

  apiserverError(): void {
    this.apiserverErrors.inc();
  }

  /** Serves GET /metrics on host:port; resolves with the server once it listens. */
  async listen(host: string, port: number): Promise<Server> {
    const server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      if (path !== "/metrics" || (req.method !== "GET" && req.method !== "HEAD")) {
        res.writeHead(404, { "content-type": "text/plain" }).end("tether-agent serves GET /metrics only\n");
        return;
      }
      this.registry.metrics().then(
        (body) => {
          res.writeHead(200, {
            "content-type": this.registry.contentType,
            "content-length": Buffer.byteLength(body),
          });
          res.end(req.method === "HEAD" ? undefined : body);
        },
        () => res.writeHead(500).end(),
      );
    });
    // Scrapers keep no request open: a slow or idle connection is not kept.
    server.requestTimeout = 10_000;
    server.headersTimeout = 10_000;
    server.keepAliveTimeout = 5_000;
    server.maxConnections = 64;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    return server;
  }
}

export function portOf(server: Server): number {
  return (server.address() as AddressInfo).port;
}
