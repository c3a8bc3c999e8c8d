// The one hop between tether-server replicas. A caller's request that lands
// on a replica which does not hold the cluster's tunnel is authenticated
// there and forwarded to the owner (store/ownership.ts) over mutual TLS:
// both ends present a Tether-issued replica certificate
// (tether://replica/<id>), and the dialing end checks that the certificate is
// the one of the replica the owner Lease names. The owner's replica listener
// accepts only replica certificates and takes the caller's identity from the
// Tether-Replica-Caller header instead of authenticating a token again; on
// the callers' listener that header (every Tether-Replica-* header) is
// refused (cluster-proxy.ts). A forwarded request the owner no longer holds
// gets 503: never a second hop.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { Agent, createServer, type Server } from "node:https";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import type { Duplex } from "node:stream";
import { connect, type PeerCertificate, type TLSSocket } from "node:tls";
import { sendStatus, statusResponseHead } from "@tether/common";
import type { Logger } from "../logger.js";
import { identityFromPeerCertificate } from "../pki/identity.js";
import type { Owner, Ownership } from "../store/ownership.js";
import type { AuthMode } from "../store/state-store.js";
import type { AuthenticatedCaller } from "./authenticate.js";
import { forwardRaw } from "./raw-forward.js";
import { closeWith, relayUpgrade } from "./upgrade-relay.js";

const PREFIX = "tether-replica-";
/** base64url JSON of the authenticated caller: user, groups, how, token scope. Impersonate mode only. */
const CALLER_HEADER = "tether-replica-caller";
/** `<replica>/<generation>`: the owner the sending replica routed to. */
const OWNER_HEADER = "tether-replica-owner";
/** The caller's address as the first replica saw it. */
const SOURCE_HEADER = "tether-replica-source";
/** On the owner's 503 to a forwarded request for a cluster it does not hold: the sender may route it again. */
export const NOT_HELD_HEADER = "tether-replica-not-held";
/** How often a request to send again looks for the cluster's next owner (the Lease cache is watch-fed). */
const RESEND_POLL_MS = 50;
const MAX_CALLER_HEADER = 16 << 10;
const HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

/** What the owner learns of a forwarded request. */
export interface Arrival {
  caller?: AuthenticatedCaller;
  owner: { replica: string; generation: number };
  source: string;
}

const arrivals = new WeakMap<IncomingMessage, Arrival>();

/** The hop a request came in on, when it came from another replica. */
export function arrivalOf(req: IncomingMessage): Arrival | undefined {
  return arrivals.get(req);
}

/** Whether a request carries a header only replicas may send. */
export function carriesReplicaHeaders(headers: IncomingHttpHeaders): boolean {
  return Object.keys(headers).some((name) => name.startsWith(PREFIX));
}

export interface ProxyEntry {
  handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void>;
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void>;
}

export interface ReplicaHopOptions {
  ownership: Ownership;
  caPem: string;
  certPem: string;
  keyPem: string;
  host: string;
  port: number;
  log: Logger;
  /** How long a TLS handshake between replicas may take. */
  handshakeTimeoutMs: number;
}

export class ReplicaHop {
  private readonly server: Server;
  private readonly agents = new Map<string, Agent>();
  private entry: ProxyEntry | undefined;

  constructor(private readonly o: ReplicaHopOptions) {
    this.server = createServer(
      {
        cert: o.certPem,
        key: o.keyPem,
        ca: o.caPem,
        requestCert: true,
        rejectUnauthorized: true,
        handshakeTimeout: o.handshakeTimeoutMs,
      },
      (req, res) => {
        const refusal = this.arrive(req);
        if (refusal) return sendStatus(res, refusal[0], refusal[1]);
        this.entry?.handleRequest(req, res).catch((err: Error) => {
          this.o.log.error({ err: err.message }, "forwarded request failed");
          sendStatus(res, "InternalError", "tether-server failed to handle the request; see its log");
        });
      },
    );
    this.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on("error", () => socket.destroy());
      const refusal = this.arrive(req);
      if (refusal) return closeWith(socket, statusResponseHead(refusal[0], refusal[1]));
      this.entry?.handleUpgrade(req, socket, head).catch((err: Error) => {
        this.o.log.error({ err: err.message }, "forwarded upgrade failed");
        closeWith(socket, statusResponseHead("InternalError", "tether-server failed to handle the upgrade"));
      });
    });
    this.server.on("clientError", (err: Error & { code?: string }, socket: Duplex) => {
      this.o.log.warn({ err: err.message, code: err.code }, "malformed request on the replica listener");
      socket.destroy();
    });
    this.server.on("tlsClientError", (err) =>
      this.o.log.debug({ err: err.message }, "replica TLS handshake failed"),
    );
  }

  /** Listens on the replica port; forwarded requests go to `entry` (the cluster proxy). */
  async start(entry: ProxyEntry): Promise<void> {
    this.entry = entry;
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.o.port, this.o.host, () => resolve());
    });
  }

  async close(): Promise<void> {
    for (const agent of this.agents.values()) agent.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Checks a request on the replica listener; undefined when it may go on, else why not. */
  private arrive(req: IncomingMessage): ["Forbidden" | "BadRequest", string] | undefined {
    const identity = identityFromPeerCertificate((req.socket as TLSSocket).getPeerCertificate(true));
    if (identity?.kind !== "replica") {
      return ["Forbidden", "the replica listener serves other tether-server replicas only"];
    }
    const owner = /^([a-z0-9-]{1,63})\/(\d{1,15})$/.exec(String(req.headers[OWNER_HEADER] ?? ""));
    if (!owner) return ["BadRequest", `a forwarded request names its owner in ${OWNER_HEADER}`];
    let caller: AuthenticatedCaller | undefined;
    const encoded = req.headers[CALLER_HEADER];
    if (typeof encoded === "string") {
      caller = encoded.length <= MAX_CALLER_HEADER ? parseCaller(encoded) : undefined;
      if (!caller) return ["BadRequest", `${CALLER_HEADER} is not a caller`];
    }
    const source = String(req.headers[SOURCE_HEADER] ?? "").slice(0, 64);
    // Node parses these from rawHeaders on first use, counting the pairs it parsed: before rawHeaders shrinks.
    void req.headersDistinct;
    for (const name of Object.keys(req.headers)) if (name.startsWith(PREFIX)) delete req.headers[name];
    for (let i = req.rawHeaders.length - 2; i >= 0; i -= 2) {
      if (req.rawHeaders[i]!.toLowerCase().startsWith(PREFIX)) req.rawHeaders.splice(i, 2);
    }
    arrivals.set(req, {
      ...(caller ? { caller } : {}),
      owner: { replica: owner[1]!, generation: Number(owner[2]) },
      source,
    });
    return undefined;
  }

  /** The agent that dials `owner`, checking that its certificate is that replica's. */
  private agentFor(owner: Owner): Agent {
    const key = `${owner.replica} ${owner.address}`;
    let agent = this.agents.get(key);
    if (agent) return agent;
    if (this.agents.size >= 64) {
      const [oldest, old] = this.agents.entries().next().value as [string, Agent];
      old.destroy();
      this.agents.delete(oldest);
    }
    agent = new Agent({ keepAlive: true, ...this.tlsTo(owner) });
    this.agents.set(key, agent);
    return agent;
  }

  private tlsTo(owner: Owner) {
    return {
      cert: this.o.certPem,
      key: this.o.keyPem,
      ca: this.o.caPem,
      checkServerIdentity: (_host: string, cert: PeerCertificate) => {
        const identity = identityFromPeerCertificate(cert);
        return identity?.kind === "replica" && identity.replica === owner.replica
          ? undefined
          : new Error(`the replica at ${owner.address} is not ${owner.replica}`);
      },
    };
  }

  private hopHeaders(
    owner: Owner,
    mode: AuthMode,
    caller: AuthenticatedCaller | undefined,
    source: string | undefined,
  ): [string, string][] {
    const headers: [string, string][] = [[OWNER_HEADER, `${owner.replica}/${owner.generation}`]];
    if (mode === "impersonate" && caller) {
      headers.push([CALLER_HEADER, Buffer.from(JSON.stringify(caller)).toString("base64url")]);
    }
    if (source) headers.push([SOURCE_HEADER, source]);
    return headers;
  }

  private unreachable(owner: Owner, cluster: string, err: Error): string {
    this.o.log.warn({ cluster, replica: owner.replica, err: err.message }, "replica hop failed");
    return `cluster "${cluster}" is held by replica ${owner.replica}, which could not be reached: try again`;
  }

  /** Forwards a plain request, authenticated here, to the owner; `url` is its /clusters/<name>/… form. */
  forward(
    req: IncomingMessage,
    res: ServerResponse,
    hop: { owner: Owner; cluster: string; url: string; mode: AuthMode; caller?: AuthenticatedCaller },
    /** Serves the request here: the cluster's next owner turned out to be this replica. */
    heldHere: () => void,
  ): void {
    // The owner takes the caller from the hop: the token goes no further than this replica.
    if (hop.mode === "impersonate") delete req.headers.authorization;
    // The caller's connection headers are about its connection, not the pooled one to the owner (a
    // "Connection: close" there would make the owner close a connection this replica reuses).
    for (const name of String(req.headers.connection ?? "").split(",")) {
      const token = name.trim().toLowerCase();
      if (token) delete req.headers[token];
    }
    for (const name of HOP_BY_HOP) delete req.headers[name];
    // Node joins a repeated unknown header with ", ": `--as-group a --as-group b` would reach the owner
    // as the one group "a, b". The owner checks each Impersonate-* line, so each goes as it came.
    // From rawHeaders: an HTTP/2 request (the compatibility API) has no headersDistinct.
    const lines = new Map<string, string[]>();
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!.toLowerCase();
      if (name.startsWith("impersonate-"))
        lines.set(name, [...(lines.get(name) ?? []), req.rawHeaders[i + 1]!]);
    }
    for (const [name, values] of lines) req.headers[name] = values;
    for (const [name, value] of this.hopHeaders(hop.owner, hop.mode, hop.caller, req.socket.remoteAddress))
      req.headers[name] = value;
    req.url = hop.url;
    this.send(req, res, hop, false, heldHere);
  }

  /**
   * Sends a forwarded request to `hop.owner`. A request without a body
   * whose owner turns out not to hold the cluster (it resigned in a drain,
   * this replica's view of the Lease was behind) or cannot be reached (it
   * died) is sent once more, to the next owner, once the Lease names one:
   * it did nothing at the first.
   */
  private send(
    req: IncomingMessage,
    res: ServerResponse,
    hop: { owner: Owner; cluster: string; url: string },
    again: boolean,
    heldHere: () => void,
  ): void {
    req.headers[OWNER_HEADER] = `${hop.owner.replica}/${hop.owner.generation}`;
    const retry = !again && bodiless(req);
    const unreachable = (err: Error) =>
      sendStatus(res, "ServiceUnavailable", this.unreachable(hop.owner, hop.cluster, err));
    forwardRaw({
      req,
      res,
      path: hop.url,
      headers: req.headers,
      agent: this.agentFor(hop.owner),
      target: new URL(hop.owner.address),
      answered: () => {},
      again,
      ...(retry
        ? {
            divert: (status, headers) => {
              if (status !== 503 || headers[NOT_HELD_HEADER] === undefined) return false;
              void this.resend(req, res, hop, heldHere, () =>
                sendStatus(res, "ServiceUnavailable", `cluster "${hop.cluster}" changed hands: try again`, 1),
              );
              return true;
            },
          }
        : {}),
      failure: (err) =>
        retry ? void this.resend(req, res, hop, heldHere, () => unreachable(err)) : unreachable(err),
    });
  }

  /** Sends the request to the cluster's next owner once the Lease names one (a Lease duration at most), here too. */
  private async resend(
    req: IncomingMessage,
    res: ServerResponse,
    hop: { owner: Owner; cluster: string; url: string },
    heldHere: () => void,
    otherwise: () => void,
  ): Promise<void> {
    const ownership = this.o.ownership;
    const until = performance.now() + ownership.leaseDurationMs;
    while (!res.destroyed && performance.now() < until) {
      if (ownership.holds(hop.cluster)) {
        heldHere();
        return;
      }
      const next = ownership.owner(hop.cluster);
      if (next && (next.replica !== hop.owner.replica || next.generation !== hop.owner.generation)) {
        this.send(req, res, { ...hop, owner: next }, true, heldHere);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, RESEND_POLL_MS));
    }
    otherwise();
  }

  /** Forwards an upgrade (exec, attach, port-forward) to the owner; the owner's answer comes back as is. */
  forwardUpgrade(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    protocol: string,
    hop: { owner: Owner; cluster: string; url: string; mode: AuthMode; caller?: AuthenticatedCaller },
  ): void {
    const headers: [string, string][] = [];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i]!;
      if (hop.mode === "impersonate" && name.toLowerCase() === "authorization") continue;
      headers.push([name, req.rawHeaders[i + 1]!]);
    }
    headers.push(...this.hopHeaders(hop.owner, hop.mode, hop.caller, req.socket.remoteAddress));
    const target = new URL(hop.owner.address);
    relayUpgrade({
      socket,
      head,
      method: req.method ?? "GET",
      path: hop.url,
      headers,
      protocol,
      open: () =>
        connect({
          host: target.hostname.replace(/^\[|\]$/g, ""),
          port: Number(target.port || 443),
          ...this.tlsTo(hop.owner),
        }) as unknown as Socket,
      failure: (err) => ["ServiceUnavailable", this.unreachable(hop.owner, hop.cluster, err)],
    });
  }
}

const VIA: readonly AuthenticatedCaller["via"][] = ["token", "certificate", "service-account", "oidc"];

function parseCaller(encoded: string): AuthenticatedCaller | undefined {
  try {
    const c = JSON.parse(Buffer.from(encoded, "base64url").toString("utf8")) as Partial<AuthenticatedCaller>;
    const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === "string");
    if (typeof c.user !== "string" || c.user === "" || !strings(c.groups)) return undefined;
    // The sending replica authenticated every kind of caller already; the owner never does it again.
    if (!VIA.includes(c.via as AuthenticatedCaller["via"])) return undefined;
    if (c.clusters !== undefined && !strings(c.clusters)) return undefined;
    return {
      user: c.user,
      groups: c.groups,
      via: c.via as AuthenticatedCaller["via"],
      ...(c.clusters ? { clusters: c.clusters } : {}),
    };
  } catch {
    return undefined;
  }
}

/** A request with no body to send: it can be sent again as it was. */
function bodiless(req: IncomingMessage): boolean {
  return (
    (req.method === "GET" || req.method === "HEAD") &&
    !req.headers["transfer-encoding"] &&
    (req.headers["content-length"] ?? "0") === "0"
  );
}
