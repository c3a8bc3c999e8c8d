// Serves HTTP arriving on tunnel streams by forwarding it to the apiserver.
// Each stream is handed to an in-memory http.Server (nothing listens); plain
// requests are re-issued over keep-alive TLS connections, upgrades (exec,
// attach, port-forward over SPDY or WebSocket) go out on a fresh one and are
// spliced only once the apiserver has switched to the protocol asked for.
// The stream's open metadata says how to authenticate:
//   impersonate — the server has already set Impersonate-User/Group to the
//     caller; the agent drops any Authorization and adds its own credential
//     (token or client certificate).
//   passthrough — the caller's own Authorization goes through; the agent adds
//     nothing of its own, neither a token nor its client certificate.
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import type { Duplex } from "node:stream";
import {
  AUTH_METADATA,
  type AuthMode,
  HEAD_METADATA,
  HEAD_VERSION,
  isAuthMode,
  type StatusReason,
  sendStatus,
  statusResponseHead,
} from "@tether/common";
import { type KubeTarget, serverVerification } from "./kube-target.js";
import { isNormalClose } from "./normal-close.js";
import { forwardStructured } from "./structured-forward.js";

export type { AuthMode };

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "host",
]);

/** The upgrade protocols Kubernetes speaks (exec, attach, port-forward). */
const UPGRADE_PROTOCOLS = new Set(["websocket", "spdy/3.1"]);

/** Request headers that frame the request or the connection; an upgrade sets its own. */
const UPGRADE_FRAMING = new Set([...HOP_BY_HOP, "authorization", "content-length"]);

const UNASKED_SWITCH = "the apiserver switched protocols on a request that asked for no upgrade";

function modeOf(socket: unknown): AuthMode | undefined {
  const auth = (socket as { metadata?: Record<string, string> }).metadata?.[AUTH_METADATA];
  return isAuthMode(auth) ? auth : undefined;
}

/** Applies the auth mode to request headers (lower-cased names); returns an error message if the request must be refused. */
export function credentialHeaders(
  headers: Record<string, string | string[] | undefined>,
  mode: AuthMode,
  target: KubeTarget,
): string | undefined {
  if (mode === "passthrough") return undefined;
  delete headers.authorization;
  // Without a caller to impersonate the request would run as this agent.
  if (!headers["impersonate-user"]) return "impersonate mode request without Impersonate-User";
  const own = target.authorization();
  if (own) headers.authorization = own;
  return undefined;
}

/**
 * Told of every error on a stream or an apiserver connection; `normal` when it
 * is how a stream ends every day (the caller went away: normal-close.ts).
 */
export type ForwardingErrorHandler = (err: Error, normal: boolean) => void;

export class Forwarder {
  private readonly http: Server;
  /** Keep-alive pools for plain requests, one per auth mode: a passthrough connection never holds the agent's certificate. */
  private readonly agents: Record<AuthMode, HttpsAgent>;
  /** Upgrades get a connection of their own (and a TLS session cache apart from the other mode's). */
  private readonly upgradeAgents: Record<AuthMode, HttpsAgent>;
  /** The apiserver's host as a socket address (no IPv6 brackets) and port. */
  private readonly host: string;
  private readonly port: number;

  constructor(
    private readonly target: KubeTarget,
    private readonly onError: ForwardingErrorHandler = () => {},
    /** A request to the apiserver failed (not the caller's side going away). */
    private readonly onApiserverError: () => void = () => {},
    /**
     * Apiserver connections per pool: the tunnel's streams at most. Each
     * request or watch holds one HTTP/1.1 connection while it runs, so with
     * fewer, a watch beyond them would wait (forever) for one to end.
     */
    connections = 1024,
  ) {
    this.host = target.url.hostname.replace(/^\[|\]$/g, "");
    this.port = Number(target.url.port || 443);
    const tls: Record<AuthMode, KubeTarget["tls"]> = {
      impersonate: target.tls,
      passthrough: serverVerification(target.tls),
    };
    const pools = (keepAlive: boolean) => {
      const make = (mode: AuthMode) =>
        new HttpsAgent({ keepAlive, maxSockets: connections, ...tls[mode], ALPNProtocols: ["http/1.1"] });
      return { impersonate: make("impersonate"), passthrough: make("passthrough") };
    };
    this.agents = pools(true);
    this.upgradeAgents = pools(false);
    this.http = createServer(
      // A stream lives as long as the server's pool keeps it; watches as long as they run.
      { keepAliveTimeout: 0, requestTimeout: 0 },
      (req, res) => this.forward(req, res),
    );
    this.http.on("upgrade", (req, socket, head) => this.splice(req, socket, head));
    this.http.on("clientError", (err, socket) => {
      this.report(err);
      socket.destroy();
    });
  }

  /** `callerGone`: the error followed the caller closing its side (we cut the apiserver request then). */
  private report(err: Error, callerGone = false): void {
    this.onError(err, callerGone || isNormalClose(err));
  }

  /** Serves one tunnel stream. */
  handle(stream: Duplex): void {
    const metadata = (stream as { metadata?: Record<string, string> }).metadata;
    const mode = modeOf(stream);
    if (metadata?.[HEAD_METADATA] === HEAD_VERSION && mode) {
      void forwardStructured(stream, {
        target: this.target,
        host: this.host,
        port: this.port,
        pool: this.agents[mode],
        applyCredentials: (headers) => credentialHeaders(headers, mode, this.target),
        report: (err, callerGone) => this.report(err, callerGone),
        onApiserverError: this.onApiserverError,
      });
      return;
    }
    this.http.emit("connection", stream);
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    const mode = modeOf(req.socket);
    if (!mode) {
      sendStatus(res, "BadRequest", "stream opened without an auth mode");
      return;
    }
    const headers: IncomingHttpHeaders = {};
    const connectionTokens = String(req.headers.connection ?? "")
      .toLowerCase()
      .split(",")
      .map((s) => s.trim());
    // headersDistinct: Node joins repeated headers with ", ", which would turn
    // one Impersonate-Group per group into a single group nobody is bound to.
    for (const [k, v] of Object.entries(req.headersDistinct)) {
      if (!HOP_BY_HOP.has(k) && !connectionTokens.includes(k) && v) headers[k] = v.length === 1 ? v[0] : v;
    }
    // The body keeps its framing: without it Node sends a GET's decoded body
    // bytes unframed, and the apiserver would read them as the next request on
    // this kept-alive connection — with the agent's own TLS identity.
    if (req.headers["transfer-encoding"] !== undefined) headers["transfer-encoding"] = "chunked";
    const refusal = credentialHeaders(headers, mode, this.target);
    if (refusal) {
      sendStatus(res, "BadRequest", refusal);
      return;
    }
    let answered = false;
    let callerGone = false;
    const upstream = httpsRequest({
      protocol: "https:",
      hostname: this.host,
      port: this.port,
      method: req.method,
      path: req.url,
      headers: { ...(headers as OutgoingHttpHeaders), host: this.target.url.host },
      agent: this.agents[mode],
    });
    const unasked = () => {
      answered = true;
      sendStatus(res, "BadGateway", UNASKED_SWITCH);
    };
    upstream.on("upgrade", (_up, socket) => {
      socket.destroy();
      unasked();
    });
    upstream.on("response", (up) => {
      answered = true;
      if (up.statusCode === 101) {
        // A 101 without Upgrade/Connection: the connection is in no known state.
        upstream.destroy();
        unasked();
        return;
      }
      const out: OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(up.headersDistinct)) {
        if (!HOP_BY_HOP.has(k) && v) out[k] = v.length === 1 ? v[0] : v;
      }
      res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
      // Flush the head at once: a watch may send nothing for minutes.
      res.flushHeaders();
      up.pipe(res);
      up.on("error", () => res.destroy());
    });
    upstream.on("error", (err) => {
      this.report(err, callerGone);
      if (!res.destroyed) this.onApiserverError();
      if (!answered && !res.headersSent)
        sendStatus(res, "BadGateway", `the apiserver could not be reached: ${err.message}`);
      else if (!res.writableEnded) res.destroy();
    });
    // The caller went away (the stream was reset): stop the upstream request too.
    res.on("close", () => {
      if (res.writableFinished) return;
      callerGone = true;
      upstream.destroy();
    });
    req.pipe(upstream);
  }

  private splice(req: IncomingMessage, stream: Duplex, head: Buffer): void {
    // The last answer on this stream; what the server still sends is discarded.
    const finish = (text?: string) => {
      stream.resume();
      stream.end(text);
    };
    const fail = (reason: StatusReason, message: string) => finish(statusResponseHead(reason, message));
    const mode = modeOf(stream);
    if (!mode) {
      fail("BadRequest", "stream opened without an auth mode");
      return;
    }
    const asked = req.headersDistinct.upgrade ?? [];
    const protocol = asked.length === 1 ? asked[0]!.trim() : "";
    if (!UPGRADE_PROTOCOLS.has(protocol.toLowerCase())) {
      fail("BadRequest", `upgrade to "${asked.join(", ")}" is not supported`);
      return;
    }
    const length = req.headers["content-length"];
    if (req.headers["transfer-encoding"] !== undefined || (length !== undefined && length !== "0")) {
      fail("BadRequest", "an upgrade request carries no body");
      return;
    }
    const pairs: [string, string][] = [];
    const lower: Record<string, string | string[] | undefined> = {};
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!;
      const value = req.rawHeaders[i + 1]!;
      const key = name.toLowerCase();
      if (UPGRADE_FRAMING.has(key)) continue;
      pairs.push([name, value]);
      lower[key] = value;
    }
    if (mode === "passthrough" && req.headers.authorization) lower.authorization = req.headers.authorization;
    const refusal = credentialHeaders(lower, mode, this.target);
    if (refusal) {
      fail("BadRequest", refusal);
      return;
    }
    pairs.unshift(["Host", this.target.url.host]);
    if (typeof lower.authorization === "string") pairs.push(["Authorization", lower.authorization]);
    pairs.push(["Connection", "Upgrade"], ["Upgrade", protocol]);
    // Without a length Node would frame a POST (SPDY) as chunked and send a body.
    if (req.method !== "GET" && req.method !== "HEAD") pairs.push(["Content-Length", "0"]);

    let answered = false;
    let callerGone = false;
    const upstream = httpsRequest({
      protocol: "https:",
      hostname: this.host,
      port: this.port,
      method: req.method,
      path: req.url,
      headers: pairs.flat(),
      agent: this.upgradeAgents[mode],
    });
    const gone = () => {
      callerGone = true;
      upstream.destroy();
    };
    stream.on("error", gone);
    stream.on("close", gone);

    upstream.on("upgrade", (res, socket, upstreamHead) => {
      answered = true;
      const offered = String(res.headers.upgrade ?? "");
      if (offered.toLowerCase() !== protocol.toLowerCase()) {
        socket.destroy();
        fail("BadGateway", `the apiserver answered an upgrade to ${protocol} by switching to "${offered}"`);
        return;
      }
      socket.on("error", (err) => {
        this.report(err, callerGone);
        stream.destroy();
      });
      stream.on("close", () => socket.destroy());
      socket.on("close", () => {
        if (!stream.writableEnded) stream.destroy();
      });
      stream.write(`${responseHead(res, () => true)}\r\n`);
      if (upstreamHead.length > 0) stream.write(upstreamHead);
      if (head.length > 0) socket.write(head);
      stream.pipe(socket);
      socket.pipe(stream);
    });

    upstream.on("response", (res) => {
      answered = true;
      if (res.statusCode === 101) {
        upstream.destroy();
        fail("BadGateway", "the apiserver switched protocols without naming one");
        return;
      }
      stream.write(`${responseHead(res, (name) => !HOP_BY_HOP.has(name))}Connection: close\r\n\r\n`);
      res.on("error", () => stream.destroy());
      res.on("end", () => {
        upstream.destroy();
        finish();
      });
      res.pipe(stream, { end: false });
    });

    upstream.on("error", (err) => {
      this.report(err, callerGone);
      if (!stream.destroyed) this.onApiserverError();
      if (answered) {
        stream.destroy();
        return;
      }
      answered = true;
      fail("BadGateway", `the apiserver could not be reached: ${err.message}`);
    });
    upstream.end();
  }

  close(): void {
    for (const agent of [...Object.values(this.agents), ...Object.values(this.upgradeAgents)])
      agent.destroy();
    this.http.close();
  }
}

/** A response head as received, minus the headers `keep` refuses, without the closing blank line. */
function responseHead(res: IncomingMessage, keep: (name: string) => boolean): string {
  let head = `HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ""}\r\n`;
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
    const name = res.rawHeaders[i]!;
    if (keep(name.toLowerCase())) head += `${name}: ${res.rawHeaders[i + 1]}\r\n`;
  }
  return head;
}
