// In-cluster services besides the apiserver that this agent serves
// (--expose NAME=URL): a stream for service:NAME reaches exactly the host and
// port of NAME's URL, under its base path, and nothing else. A request target
// must be a path that stays under the base path (no absolute URL, no dot
// segments however encoded); CONNECT and upgrades are refused; redirects are
// relayed, never followed. The server has already authenticated the caller and
// named it in the X-Tether-* identity headers; the caller's own credentials
// (Authorization, Cookie) never reach the service, and cookies the service
// sets never reach the caller: the service shares Tether's origin.
import {
  Agent as HttpAgent,
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import type { Duplex } from "node:stream";
import {
  EXPOSED_SERVICE_PREFIX,
  exposedServiceStream,
  isExposedServiceName,
  sendStatus,
  servicePathRefusal,
  statusResponseHead,
} from "@tether/common";
import type { ForwardingErrorHandler } from "./forwarder.js";
import { isNormalClose } from "./normal-close.js";

export const ERR_TETHER_AGENT_EXPOSE = "ERR_TETHER_AGENT_EXPOSE";

export interface ExposedService {
  name: string;
  /** http: or https:, a host and port, no credentials, query or fragment. */
  url: URL;
  /** The URL's path without its trailing slash: "" for the root. */
  base: string;
}

/** Parses one --expose NAME=URL; throws an Error whose message says what is wrong. */
export function parseExpose(value: string): ExposedService {
  const at = value.indexOf("=");
  const name = at < 0 ? "" : value.slice(0, at);
  if (!isExposedServiceName(name)) {
    throw new Error(
      "must be NAME=URL with NAME a lowercase DNS label of at most 55 characters, e.g. prometheus=http://prometheus.monitoring.svc:9090",
    );
  }
  let url: URL;
  try {
    url = new URL(value.slice(at + 1));
  } catch {
    throw new Error(`${name}: the value after = is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new Error(`${name}: the URL must be http:// or https://`);
  if (url.username || url.password)
    throw new Error(
      `${name}: the URL may not carry credentials (the service authenticates callers by X-Tether-User)`,
    );
  if (url.search || url.hash || value.includes("#"))
    throw new Error(`${name}: the URL may not have a query or fragment`);
  const base = url.pathname.replace(/\/+$/, "");
  const refusal = servicePathRefusal(base || "/");
  if (refusal) throw new Error(`${name}: the URL's path ${refusal}`);
  return { name, url, base };
}

/** The names given more than once among `services`. */
export function duplicateNames(services: ExposedService[]): string[] {
  const seen = new Set<string>();
  const twice = new Set<string>();
  for (const s of services) (seen.has(s.name) ? twice : seen).add(s.name);
  return [...twice];
}

/**
 * Where a request for `target` (the request line's target, as the server
 * relays it) goes on the service: under `base`, or a refusal.
 */
export function upstreamPath(base: string, target: string): { path: string } | { refusal: string } {
  const q = target.indexOf("?");
  const path = q < 0 ? target : target.slice(0, q);
  const refusal = servicePathRefusal(path);
  if (refusal) return { refusal: `the request path ${refusal}` };
  const joined = base + path;
  return { path: (joined || "/") + (q < 0 ? "" : target.slice(q)) };
}

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
/** The caller's credentials for Tether: the service learns who it is from the identity headers instead. */
const CALLER_CREDENTIALS = new Set(["authorization", "cookie"]);

export interface ExposedServicesOptions {
  /** PEM CAs for https services besides Node's own (--expose-ca). */
  ca?: string;
  /** How long a connection to a service may take to open. Default 10 s. */
  connectTimeoutMs?: number;
  onError?: ForwardingErrorHandler;
}

export class ExposedServices {
  private readonly byStream = new Map<string, { service: ExposedService; pool: HttpAgent }>();
  private readonly http: Server;
  private readonly connectTimeoutMs: number;
  private readonly onError: ForwardingErrorHandler;

  constructor(services: ExposedService[], options: ExposedServicesOptions = {}) {
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.onError = options.onError ?? (() => {});
    for (const service of services) {
      const pool =
        service.url.protocol === "https:"
          ? new HttpsAgent({ keepAlive: true, maxSockets: 64, ...(options.ca ? { ca: options.ca } : {}) })
          : new HttpAgent({ keepAlive: true, maxSockets: 64 });
      this.byStream.set(exposedServiceStream(service.name), { service, pool });
    }
    this.http = createServer({ keepAliveTimeout: 0, requestTimeout: 0 }, (req, res) =>
      this.forward(req, res),
    );
    const refuse = (socket: Duplex, message: string) => {
      socket.resume();
      socket.end(statusResponseHead("BadRequest", message));
    };
    this.http.on("upgrade", (_req, socket: Duplex) =>
      refuse(socket, "an exposed service takes plain HTTP requests only: upgrades are refused"),
    );
    this.http.on("connect", (_req, socket: Duplex) => refuse(socket, "CONNECT is refused"));
    this.http.on("clientError", (err, socket) => {
      this.onError(err, isNormalClose(err));
      socket.destroy();
    });
  }

  /** The stream services this agent serves besides the apiserver. */
  streamNames(): string[] {
    return [...this.byStream.keys()];
  }

  /** Serves one tunnel stream opened for one of {@link streamNames}. */
  handle(stream: Duplex): void {
    this.http.emit("connection", stream);
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    const streamService = (req.socket as { service?: string }).service ?? "";
    const entry = this.byStream.get(streamService);
    if (!entry) {
      const name = streamService.slice(EXPOSED_SERVICE_PREFIX.length);
      sendStatus(res, "NotFound", `this agent does not expose a service named "${name}"`);
      return;
    }
    const { service, pool } = entry;
    const where = upstreamPath(service.base, req.url ?? "");
    if ("refusal" in where) {
      sendStatus(res, "BadRequest", where.refusal);
      return;
    }
    const connectionTokens = String(req.headers.connection ?? "")
      .toLowerCase()
      .split(",")
      .map((s) => s.trim());
    const headers: IncomingHttpHeaders = {};
    for (const [k, v] of Object.entries(req.headersDistinct)) {
      if (HOP_BY_HOP.has(k) || CALLER_CREDENTIALS.has(k) || connectionTokens.includes(k) || !v) continue;
      headers[k] = v.length === 1 ? v[0] : v;
    }
    // Keep the body framed: an unframed body would be read as the next request on a kept-alive connection.
    if (req.headers["transfer-encoding"] !== undefined) headers["transfer-encoding"] = "chunked";
    const send = service.url.protocol === "https:" ? httpsRequest : httpRequest;
    let callerGone = false;
    const upstream = send({
      hostname: service.url.hostname.replace(/^\[|\]$/g, ""),
      port: Number(service.url.port || (service.url.protocol === "https:" ? 443 : 80)),
      method: req.method,
      path: where.path,
      headers: { ...(headers as OutgoingHttpHeaders), host: service.url.host },
      agent: pool,
    });
    upstream.on("socket", (socket) => {
      if (!socket.connecting) return;
      const timer = setTimeout(
        () => upstream.destroy(new Error(`no connection within ${this.connectTimeoutMs} ms`)),
        this.connectTimeoutMs,
      );
      socket.once("connect", () => clearTimeout(timer));
      socket.once("close", () => clearTimeout(timer));
    });
    const unasked = () =>
      sendStatus(res, "BadGateway", `exposed service "${service.name}" switched protocols unasked`);
    upstream.on("upgrade", (_up, socket) => {
      socket.destroy();
      unasked();
    });
    upstream.on("response", (up) => {
      if (up.statusCode === 101) {
        upstream.destroy();
        unasked();
        return;
      }
      const out: OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(up.headersDistinct)) {
        if (!HOP_BY_HOP.has(k) && k !== "set-cookie" && v) out[k] = v.length === 1 ? v[0] : v;
      }
      res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
      // A streamed response (server-sent events, a long poll) may be slow to send its first byte.
      res.flushHeaders();
      up.pipe(res);
      up.on("error", () => res.destroy());
    });
    upstream.on("error", (err) => {
      this.onError(err, callerGone || isNormalClose(err));
      if (!res.headersSent)
        sendStatus(
          res,
          "BadGateway",
          `exposed service "${service.name}" could not be reached: ${err.message}`,
        );
      else if (!res.writableEnded) res.destroy();
    });
    res.on("close", () => {
      if (res.writableFinished) return;
      callerGone = true;
      upstream.destroy();
    });
    req.pipe(upstream);
  }

  close(): void {
    for (const { pool } of this.byStream.values()) pool.destroy();
    this.http.close();
  }
}
