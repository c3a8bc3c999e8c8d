// tether-agent's connection: dial the server over wss with this cluster's
// client certificate, serve the streams it opens, and redial when the
// session ends, with backoff. A go-away (the server is stopping) makes it
// dial a new session at a random moment within the reconnect spread, while
// the old one finishes the streams it carries.

import { randomUUID } from "node:crypto";
import {
  AGENT_FEATURES_HEADER,
  AGENT_INSTANCE_HEADER,
  AGENT_PATH,
  AGENT_VERSION_HEADER,
  HEAD_FEATURE,
  KUBERNETES_SERVICE,
  RENEW_SERVICE,
} from "@tether/common";
import {
  DEFAULT_OPTIONS,
  formatPathEstimate,
  PATH_ESTIMATE_HEADER,
  PathMemory,
  ResetCode,
  type Session,
  type SessionOptions,
  sessionFromWebSocket,
  WEBSOCKET_OPTIONS,
} from "@tether/tunnel";
import { type ClientOptions, WebSocket } from "ws";
import { Backoff, type BackoffOptions, DEFAULT_RECONNECT_SPREAD_MS, spreadDelay } from "./backoff.js";
import {
  type CredentialStore,
  type Credentials,
  clusterOf,
  keyAndCsr,
  keyMatches,
  renewalDelayMs,
} from "./credentials.js";
import { connectThrough, type EgressProxy } from "./egress-proxy.js";
import { type ExposedService, ExposedServices } from "./exposed-services.js";
import { Forwarder } from "./forwarder.js";
import type { KubeTarget } from "./kube-target.js";
import type { AgentMetrics } from "./metrics.js";
import { VERSION } from "./version.js";

const MAX_REPLY = 64 * 1024;
/**
 * How long a stop waits at least for a WebSocket's close handshake once its
 * session is over (the server waits as long for its own: server.ts close).
 */
const CLOSE_HANDSHAKE_MS = 1_000;
/** Services this agent serves. Streams for anything else are refused. */
export const DEFAULT_SERVICES = [KUBERNETES_SERVICE] as const;

export interface AgentLog {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface AgentOptions {
  /** The server's base URL, https://host:port */
  server: string;
  /** PEM of the CA the server's certificate must chain to. */
  caPem: string;
  certPem: string;
  keyPem: string;
  target: KubeTarget;
  tunnel?: Omit<SessionOptions, "role" | "accept">;
  backoff?: BackoffOptions;
  /** After a go-away, dial again at a random moment within this many ms. Default DEFAULT_RECONNECT_SPREAD_MS. */
  reconnectSpreadMs?: number;
  log?: AgentLog;
  /** Where renewed credentials are saved; without it they live in memory only. */
  credentialStore?: CredentialStore;
  /** Counts what the agent does, for --metrics-address (metrics.ts). */
  metrics?: AgentMetrics;
  /** The forward proxy the tunnel goes through (egress-proxy.ts); without it the server is dialed directly. */
  proxy?: EgressProxy;
  /** In-cluster services served besides the apiserver (--expose; exposed-services.ts). */
  expose?: ExposedService[];
  /** PEM CAs an https exposed service's certificate may chain to, besides Node's (--expose-ca). */
  exposeCa?: string;
}

const quiet: AgentLog = { debug() {}, info() {}, warn() {} };

export class TetherAgent {
  private readonly backoff: Backoff;
  private readonly forwarder: Forwarder;
  private readonly exposed: ExposedServices;
  /** The one allowlist: streams for any other service are refused. */
  private readonly services: ReadonlySet<string>;
  private readonly log: AgentLog;
  private current: Session | undefined;
  /** Every session not yet closed: the current one and those draining after a go-away. */
  private readonly sessions = new Set<Session>();
  /**
   * Every WebSocket not yet closed. A session is over once its last FIN is
   * handed to the transport, but the WebSocket may still be writing the last
   * messages and then the close frame: stop() waits for that.
   */
  private readonly sockets = new Set<WebSocket>();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private connectedWaiters: (() => void)[] = [];
  private creds: Credentials;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewing = false;
  /** Certificates renewed over the tunnel so far. */
  renewals = 0;
  /** Tells the server a new session of ours replaces our old one, not another replica's. */
  private readonly instance = randomUUID();
  /**
   * The last session's path estimate: the next session (a reconnect, a
   * go-away) starts from it, and the server learns it from the connect header,
   * so neither end ramps up from nothing on a path it just measured.
   */
  private readonly paths = new PathMemory();

  constructor(private readonly options: AgentOptions) {
    this.creds = { caPem: options.caPem, certPem: options.certPem, keyPem: options.keyPem };
    this.backoff = new Backoff(options.backoff);
    this.log = options.log ?? quiet;
    this.forwarder = new Forwarder(
      options.target,
      (err, normal) => {
        if (normal)
          this.log.debug({ err: err.message }, "stream ended (the caller went away or the session ended)");
        else this.log.warn({ err: err.message }, "forwarding error");
      },
      () => options.metrics?.apiserverError(),
      options.tunnel?.maxStreams ?? DEFAULT_OPTIONS.maxStreams,
    );
    this.exposed = new ExposedServices(options.expose ?? [], {
      ...(options.exposeCa ? { ca: options.exposeCa } : {}),
      onError: (err, normal) => {
        if (normal) this.log.debug({ err: err.message }, "exposed service stream ended");
        else this.log.warn({ err: err.message }, "exposed service forwarding error");
      },
    });
    this.services = new Set([...DEFAULT_SERVICES, ...this.exposed.streamNames()]);
  }

  get session(): Session | undefined {
    return this.current;
  }

  get connected(): boolean {
    return this.current !== undefined && !this.current.closed;
  }

  start(): void {
    this.stopped = false;
    this.dial();
  }

  /** Resolves once a session is up. */
  whenConnected(): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve) => this.connectedWaiters.push(resolve));
  }

  private dial(): void {
    if (this.stopped) return;
    this.log.debug({}, "dialing");
    const creds = this.creds;
    const url = new URL(AGENT_PATH, this.options.server).toString().replace(/^http/, "ws");
    const carried = this.paths.recall(url);
    const ws = new WebSocket(url, {
      ...WEBSOCKET_OPTIONS,
      ca: creds.caPem,
      cert: creds.certPem,
      key: creds.keyPem,
      handshakeTimeout: 15_000,
      headers: {
        [AGENT_VERSION_HEADER]: VERSION,
        [AGENT_FEATURES_HEADER]: HEAD_FEATURE,
        [AGENT_INSTANCE_HEADER]: this.instance,
        ...(carried === undefined ? {} : { [PATH_ESTIMATE_HEADER]: formatPathEstimate(carried) }),
      },
      // ws hands this to https.request, which takes Node's asynchronous form (ws's types know only the other).
      ...(this.options.proxy
        ? {
            createConnection: connectThrough(
              this.options.proxy,
            ) as unknown as ClientOptions["createConnection"],
          }
        : {}),
    });
    this.sockets.add(ws);
    ws.once("close", () => this.sockets.delete(ws));
    let goAway = false;
    let sessionStarted = false;
    let refused = false;
    const metrics = this.options.metrics;
    ws.once("unexpected-response", (_req, res) => {
      refused = true;
      metrics?.dialed("refused");
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        if (body.length < 4096) body += c;
      });
      res.on("end", () => {
        let message = body;
        try {
          message = (JSON.parse(body) as { message?: string }).message ?? body;
        } catch {}
        this.log.warn({ status: res.statusCode }, `server refused the agent: ${message}`);
        ws.terminate();
      });
      res.on("error", () => ws.terminate());
    });
    ws.once("open", () => {
      const session = sessionFromWebSocket(ws, {
        ...(carried === undefined ? {} : { pathEstimate: carried }),
        ...this.options.tunnel,
        role: "client",
        accept: (req) => {
          const served = this.services.has(req.service);
          metrics?.stream(served);
          return served ? true : ResetCode.REFUSED;
        },
      });
      sessionStarted = true;
      this.paths.track(url, session);
      metrics?.dialed("connected");
      metrics?.sessionStarted(session);
      this.current = session;
      this.sessions.add(session);
      this.backoff.reset();
      this.log.info({ server: this.options.server }, "connected");
      session.on("stream", (stream) =>
        stream.service === KUBERNETES_SERVICE ? this.forwarder.handle(stream) : this.exposed.handle(stream),
      );
      session.on("goaway", () => {
        goAway = true;
        if (this.current === session) this.current = undefined;
        if (this.stopped) return;
        const delayMs = spreadDelay(this.options.reconnectSpreadMs ?? DEFAULT_RECONNECT_SPREAD_MS);
        this.log.info({ delayMs }, "the server sent go-away: dialing a new session, the old one drains");
        metrics?.reconnecting("go_away");
        this.reconnect(delayMs);
      });
      session.on("error", (err) => this.log.warn({ err: err.message }, "session error"));
      session.once("close", () => {
        this.sessions.delete(session);
        if (this.current === session) this.current = undefined;
        this.log.info({ goAway }, "disconnected");
        // After a go-away the redial is already under way.
        if (goAway || this.stopped) return;
        metrics?.reconnecting("session_lost");
        this.reconnect(this.backoff.next());
      });
      for (const w of this.connectedWaiters.splice(0)) w();
      this.scheduleRenewal();
    });
    ws.on("error", (err) => {
      const code = (err as { code?: unknown }).code;
      this.log.warn({ err: err.message, ...(typeof code === "string" ? { code } : {}) }, "connection failed");
    });
    ws.once("close", () => {
      // Once a session ran, its own close handler redials.
      if (sessionStarted) return;
      if (!refused && !this.stopped) metrics?.dialed("failed");
      this.reconnect(this.backoff.next());
    });
  }

  /** The certificate currently presented to the server. */
  get certificatePem(): string {
    return this.creds.certPem;
  }

  private scheduleRenewal(delayMs = renewalDelayMs(this.creds.certPem)): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    // setTimeout's limit is ~24.8 days; a longer wait just re-arms.
    const capped = Math.min(delayMs, 2 ** 31 - 1);
    this.renewTimer = setTimeout(() => {
      this.renewTimer = undefined;
      if (capped < delayMs) this.scheduleRenewal(delayMs - capped);
      else void this.renew();
    }, capped);
  }

  /** Trades a CSR for a fresh certificate over the tunnel; the session stays up. */
  async renew(): Promise<void> {
    const session = this.current;
    if (this.renewing || this.stopped || !session || session.closed) return; // the next connect re-arms
    this.renewing = true;
    try {
      const { keyPem, csrPem } = await keyAndCsr(clusterOf(this.creds.certPem));
      const stream = session.open(RENEW_SERVICE);
      stream.end(JSON.stringify({ csr: csrPem }));
      let text = "";
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        text += chunk.toString("utf8");
        if (text.length > MAX_REPLY) throw new Error("renewal reply too large");
      }
      const reply = JSON.parse(text) as { certificate?: string; ca?: string; error?: string };
      if (!reply.certificate || !reply.ca) throw new Error(reply.error ?? "no certificate in the reply");
      if (!keyMatches(reply.certificate, keyPem))
        throw new Error("the renewed certificate is not for our key");
      const creds = { caPem: reply.ca, certPem: reply.certificate, keyPem };
      await this.options.credentialStore?.save(creds);
      this.creds = creds;
      this.renewals++;
      this.options.metrics?.renewal(true);
      this.log.info({ renewals: this.renewals }, "certificate renewed");
      this.scheduleRenewal();
    } catch (err) {
      this.options.metrics?.renewal(false);
      const retry = Math.min(60_000, Math.max(1_000, renewalDelayMs(this.creds.certPem) / 4));
      this.log.warn({ err: (err as Error).message, retryMs: retry }, "certificate renewal failed");
      this.scheduleRenewal(retry);
    } finally {
      this.renewing = false;
    }
  }

  private reconnect(delayMs: number): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.dial();
    }, delayMs);
  }

  /**
   * Stops redialing and closes the sessions. With `drainMs`, first sends
   * go-away so the server routes new streams to the member's other agents,
   * and lets the streams under way finish for up to that long. Resolves once
   * every WebSocket has closed with the handshake, which is when the last
   * response bytes have been written (or at most CLOSE_HANDSHAKE_MS, or what
   * is left of the drain if longer, after the sessions ended: then they are cut).
   */
  async stop({ drainMs = 0 }: { drainMs?: number } = {}): Promise<void> {
    this.stopped = true;
    const deadline = performance.now() + drainMs;
    if (drainMs > 0) {
      const open = [...this.sessions].filter((s) => !s.closed);
      for (const session of open) session.goAway();
      await Promise.race([
        Promise.all(open.map((s) => new Promise((r) => (s.closed ? r(0) : s.once("close", r))))),
        new Promise((r) => setTimeout(r, drainMs).unref()),
      ]);
    }
    if (this.timer) clearTimeout(this.timer);
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = undefined;
    this.timer = undefined;
    await Promise.all(
      [...this.sessions].map(
        (session) =>
          new Promise<void>((resolve) => {
            if (session.closed) return resolve();
            session.once("close", () => resolve());
            session.close();
          }),
      ),
    );
    // A dial still under way has nothing to deliver.
    for (const ws of this.sockets) if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
    const closing = [...this.sockets];
    const handshakeMs = Math.max(deadline - performance.now(), CLOSE_HANDSHAKE_MS);
    await Promise.race([
      Promise.all(
        closing.map(
          (ws) => new Promise((r) => (ws.readyState === WebSocket.CLOSED ? r(0) : ws.once("close", r))),
        ),
      ),
      new Promise((r) => setTimeout(r, handshakeMs).unref()),
    ]);
    // A server that does not answer the close frame is cut.
    for (const ws of closing) ws.terminate();
    this.forwarder.close();
    this.exposed.close();
  }
}
