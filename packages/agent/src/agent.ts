// tether-agent's connection: dial the server over wss with this cluster's
// client certificate, serve the streams it opens, and redial when the
// session ends — at once after a graceful go-away, otherwise with backoff.
import {
  ResetCode,
  type Session,
  type SessionOptions,
  sessionFromWebSocket,
  WEBSOCKET_OPTIONS,
} from "@tether/tunnel";
import { WebSocket } from "ws";
import { Backoff, type BackoffOptions } from "./backoff.js";
import { Forwarder } from "./forwarder.js";
import type { KubeTarget } from "./kube-target.js";

export const AGENT_PATH = "/agent/v1/connect";
/** Services this agent serves. Streams for anything else are refused. */
export const DEFAULT_SERVICES = ["kubernetes"] as const;

export interface AgentLog {
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
  log?: AgentLog;
  /** Hands out the current credentials at each dial (certificates rotate). */
  credentials?: () => { certPem: string; keyPem: string };
}

const quiet: AgentLog = { info() {}, warn() {} };

export class TetherAgent {
  private readonly backoff: Backoff;
  private readonly forwarder: Forwarder;
  private readonly log: AgentLog;
  private current: Session | undefined;
  private socket: WebSocket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private connectedWaiters: (() => void)[] = [];

  constructor(private readonly options: AgentOptions) {
    this.backoff = new Backoff(options.backoff);
    this.log = options.log ?? quiet;
    this.forwarder = new Forwarder(options.target, (err) =>
      this.log.warn({ err: err.message }, "forwarding error"),
    );
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
    const creds = this.options.credentials?.() ?? {
      certPem: this.options.certPem,
      keyPem: this.options.keyPem,
    };
    const url = new URL(AGENT_PATH, this.options.server).toString().replace(/^http/, "ws");
    const ws = new WebSocket(url, {
      ...WEBSOCKET_OPTIONS,
      ca: this.options.caPem,
      cert: creds.certPem,
      key: creds.keyPem,
      handshakeTimeout: 15_000,
    });
    this.socket = ws;
    let goAway = false;
    let sessionStarted = false;
    ws.once("unexpected-response", (_req, res) => {
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
      });
      ws.terminate();
    });
    ws.once("open", () => {
      const session = sessionFromWebSocket(ws, {
        ...this.options.tunnel,
        role: "client",
        accept: (req) =>
          (DEFAULT_SERVICES as readonly string[]).includes(req.service) ? true : ResetCode.REFUSED,
      });
      sessionStarted = true;
      this.current = session;
      this.backoff.reset();
      this.log.info({ server: this.options.server }, "connected");
      session.on("stream", (stream) => this.forwarder.handle(stream));
      session.on("goaway", () => {
        goAway = true;
      });
      session.on("error", (err) => this.log.warn({ err: err.message }, "session error"));
      session.once("close", () => {
        if (this.current === session) this.current = undefined;
        this.log.info({ goAway }, "disconnected");
        this.reconnect(goAway ? 0 : this.backoff.next());
      });
      for (const w of this.connectedWaiters.splice(0)) w();
    });
    ws.on("error", (err) => {
      this.log.warn({ err: err.message }, "connection failed");
    });
    ws.once("close", () => {
      // Once a session ran, its own close handler redials.
      if (!sessionStarted) this.reconnect(this.backoff.next());
    });
  }

  private reconnect(delayMs: number): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.dial();
    }, delayMs);
  }

  /** Closes the session and stops redialing. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const session = this.current;
    if (session && !session.closed) {
      await new Promise<void>((resolve) => {
        session.once("close", () => resolve());
        session.close();
      });
    }
    this.socket?.terminate();
    this.forwarder.close();
  }
}
