// Serves HTTP arriving on tunnel streams by forwarding it to the apiserver.
// Each stream is handed to an in-memory http.Server (nothing listens); plain
// requests are re-issued over keep-alive TLS connections, upgrades (exec,
// attach, port-forward over SPDY or WebSocket) are spliced onto a fresh TLS
// connection. The stream's open metadata says how to authenticate:
//   impersonate — the server has already set Impersonate-User/Group to the
//     caller; the agent drops any Authorization and adds its own credential.
//   passthrough — the caller's own Authorization goes through; the agent adds
//     nothing of its own.
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { isIP } from "node:net";
import type { Duplex } from "node:stream";
import { connect as tlsConnect } from "node:tls";
import type { KubeTarget } from "./kube-target.js";

export type AuthMode = "impersonate" | "passthrough";

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

function statusJson(code: number, reason: string, message: string): string {
  return JSON.stringify({
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    code,
  });
}

function modeOf(socket: unknown): AuthMode | undefined {
  const auth = (socket as { metadata?: Record<string, string> }).metadata?.auth;
  return auth === "impersonate" || auth === "passthrough" ? auth : undefined;
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

export class Forwarder {
  private readonly http: Server;
  private readonly agent: HttpsAgent;
  /** The apiserver's host as a socket address (no IPv6 brackets) and port. */
  private readonly host: string;
  private readonly port: number;

  constructor(
    private readonly target: KubeTarget,
    private readonly onError: (err: Error) => void = () => {},
  ) {
    this.host = target.url.hostname.replace(/^\[|\]$/g, "");
    this.port = Number(target.url.port || 443);
    this.agent = new HttpsAgent({
      keepAlive: true,
      maxSockets: 256,
      ...target.tls,
      ALPNProtocols: ["http/1.1"],
    });
    this.http = createServer(
      // A stream lives as long as the server's pool keeps it; watches as long as they run.
      { keepAliveTimeout: 0, requestTimeout: 0 },
      (req, res) => this.forward(req, res),
    );
    this.http.on("upgrade", (req, socket, head) => this.splice(req, socket, head));
    this.http.on("clientError", (err, socket) => {
      this.onError(err);
      socket.destroy();
    });
  }

  /** Serves one tunnel stream. */
  handle(stream: Duplex): void {
    this.http.emit("connection", stream);
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    const mode = modeOf(req.socket);
    if (!mode) {
      this.refuse(res, 400, "BadRequest", "stream opened without an auth mode");
      return;
    }
    const headers: IncomingHttpHeaders = {};
    const connectionTokens = String(req.headers.connection ?? "")
      .toLowerCase()
      .split(",")
      .map((s) => s.trim());
    for (const [k, v] of Object.entries(req.headers)) {
      if (!HOP_BY_HOP.has(k) && !connectionTokens.includes(k)) headers[k] = v;
    }
    const refusal = credentialHeaders(headers, mode, this.target);
    if (refusal) {
      this.refuse(res, 400, "BadRequest", refusal);
      return;
    }
    const upstream = httpsRequest({
      protocol: "https:",
      hostname: this.host,
      port: this.port,
      method: req.method,
      path: req.url,
      headers: { ...(headers as OutgoingHttpHeaders), host: this.target.url.host },
      agent: this.agent,
    });
    upstream.on("response", (up) => {
      const out: OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(up.headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) out[k] = v;
      res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
      // Flush the head at once: a watch may send nothing for minutes.
      res.flushHeaders();
      up.pipe(res);
      up.on("error", () => res.destroy());
    });
    upstream.on("error", (err) => {
      this.onError(err);
      if (!res.headersSent)
        this.refuse(res, 502, "BadGateway", `the apiserver could not be reached: ${err.message}`);
      else res.destroy();
    });
    // The caller went away (the stream was reset): stop the upstream request too.
    res.on("close", () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  private refuse(res: ServerResponse, code: number, reason: string, message: string): void {
    const body = statusJson(code, reason, message);
    res.writeHead(code, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
  }

  private splice(req: IncomingMessage, stream: Duplex, head: Buffer): void {
    const fail = (code: number, reason: string, message: string) => {
      const body = statusJson(code, reason, message);
      stream.end(
        `HTTP/1.1 ${code} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    };
    const mode = modeOf(stream);
    if (!mode) {
      fail(400, "BadRequest", "stream opened without an auth mode");
      return;
    }
    const pairs: [string, string][] = [];
    const lower: Record<string, string | string[] | undefined> = {};
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!;
      const value = req.rawHeaders[i + 1]!;
      const key = name.toLowerCase();
      if (key === "host" || key === "authorization") continue;
      pairs.push([name, value]);
      lower[key] = value;
    }
    if (mode === "passthrough" && req.headers.authorization) lower.authorization = req.headers.authorization;
    const refusal = credentialHeaders(lower, mode, this.target);
    if (refusal) {
      fail(400, "BadRequest", refusal);
      return;
    }
    pairs.unshift(["Host", this.target.url.host]);
    if (typeof lower.authorization === "string") pairs.push(["Authorization", lower.authorization]);
    let text = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (const [n, v] of pairs) text += `${n}: ${v}\r\n`;
    text += "\r\n";

    const upstream = tlsConnect({
      host: this.host,
      port: this.port,
      ...this.target.tls,
      // SNI may not carry an IP address (RFC 6066).
      ...(this.target.tls.servername || isIP(this.host) ? {} : { servername: this.target.url.hostname }),
      ALPNProtocols: ["http/1.1"],
    });
    upstream.on("error", (err) => {
      this.onError(err);
      stream.destroy();
    });
    stream.on("error", () => upstream.destroy());
    stream.on("close", () => upstream.destroy());
    upstream.on("close", () => {
      if (!stream.writableEnded) stream.destroy();
    });
    upstream.once("secureConnect", () => {
      upstream.write(text);
      if (head.length > 0) upstream.write(head);
      stream.pipe(upstream);
      upstream.pipe(stream);
    });
  }

  close(): void {
    this.agent.destroy();
    this.http.close();
  }
}
