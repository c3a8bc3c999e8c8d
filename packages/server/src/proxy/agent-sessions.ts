// The live tunnel of each connected cluster. A reconnecting agent replaces its
// previous session at once (the old one is sent go-away and drains), so a
// rollout or a half-dead connection never locks a cluster out. A draining
// session is closed after the drain timeout whatever it still holds: an agent
// that reconnects over and over cannot pile up sessions.
import { Agent as HttpAgent } from "node:http";
import type { Duplex } from "node:stream";
import { AUTH_METADATA, KUBERNETES_SERVICE } from "@tether/common";
import type { Session } from "@tether/tunnel";
import type { AuthMode } from "../store/state-store.js";

/** How long a replaced session may drain before it is closed. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;

/** The certificate an agent holds now: the one it connected with, or what a renewal over the session gave it. */
export interface SessionCertificate {
  serial: string;
  certNotAfter: Date;
  certIssuedAt: Date;
  /** The registration it was issued for; missing on certificates from before incarnations. */
  incarnation?: string;
}

export interface AgentSession extends SessionCertificate {
  readonly cluster: string;
  readonly session: Session;
  readonly connectedAt: Date;
  readonly remoteAddress: string;
  /** What the agent said it is (X-Tether-Agent-Version), if anything. */
  readonly agentVersion?: string;
  /** The member apiserver's version, once read through the tunnel. */
  kubernetesVersion?: string;
  /** Opens a raw stream to the agent's apiserver forwarder. */
  openStream(mode: AuthMode): Duplex;
  /** An http.Agent whose connections are tunnel streams, pooled per auth mode. */
  httpAgent(mode: AuthMode): HttpAgent;
  /** The pools httpAgent made. */
  pools(): Iterable<HttpAgent>;
}

export interface AgentSessionsOptions {
  /** Default DEFAULT_DRAIN_TIMEOUT_MS. */
  drainTimeoutMs?: number;
}

export class AgentSessions {
  private readonly byCluster = new Map<string, AgentSession>();
  /** Every session not yet closed: the current ones and those draining. */
  private readonly live = new Set<AgentSession>();
  private readonly drainTimeoutMs: number;

  constructor(options: AgentSessionsOptions = {}) {
    this.drainTimeoutMs = options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
  }

  /** Registers a session for its cluster, replacing (and draining) any previous one. */
  attach(
    cluster: string,
    session: Session,
    info: SessionCertificate & { remoteAddress: string; agentVersion?: string },
  ): AgentSession {
    const agents = new Map<AuthMode, HttpAgent>();
    const openStream = (mode: AuthMode) => session.open(KUBERNETES_SERVICE, { [AUTH_METADATA]: mode });
    const entry: AgentSession = {
      cluster,
      session,
      connectedAt: new Date(),
      remoteAddress: info.remoteAddress,
      serial: info.serial,
      certNotAfter: info.certNotAfter,
      certIssuedAt: info.certIssuedAt,
      ...(info.incarnation ? { incarnation: info.incarnation } : {}),
      ...(info.agentVersion ? { agentVersion: info.agentVersion } : {}),
      openStream,
      pools: () => agents.values(),
      httpAgent(mode) {
        let agent = agents.get(mode);
        if (!agent) {
          agent = new HttpAgent({ keepAlive: true, maxFreeSockets: 32, scheduling: "lifo" });
          // Every connection of this pool is a stream of this session.
          (agent as unknown as { createConnection: () => Duplex }).createConnection = () => openStream(mode);
          agents.set(mode, agent);
        }
        return agent;
      },
    };
    const previous = this.byCluster.get(cluster);
    this.byCluster.set(cluster, entry);
    this.live.add(entry);
    if (previous) this.drain(previous);
    session.once("close", () => {
      for (const agent of agents.values()) agent.destroy();
      this.live.delete(entry);
      if (this.byCluster.get(cluster) === entry) this.byCluster.delete(cluster);
    });
    return entry;
  }

  private drain(entry: AgentSession): void {
    const { session } = entry;
    if (session.closed) return;
    goAway(entry);
    const timer = setTimeout(() => session.close(), this.drainTimeoutMs);
    timer.unref();
    session.once("close", () => clearTimeout(timer));
  }

  get(cluster: string): AgentSession | undefined {
    const entry = this.byCluster.get(cluster);
    return entry && !entry.session.closed && !entry.session.goingAway ? entry : undefined;
  }

  /** Closes every session of a cluster, draining ones too (used when it is removed or revoked). */
  disconnect(cluster: string): void {
    for (const entry of [...this.live]) if (entry.cluster === cluster) entry.session.close();
  }

  /** Every session not yet closed, draining ones included. */
  list(): AgentSession[] {
    return [...this.live];
  }

  /** Sends go-away on every session (a graceful stop): each closes when its last stream ends. */
  drainAll(): void {
    for (const entry of [...this.live]) goAway(entry);
  }

  closeAll(): void {
    for (const entry of [...this.live]) entry.session.close();
  }
}

/**
 * Go-away, and the session's pooled streams stop being kept: an idle one is
 * a stream too, and the session closes only when it has none.
 */
function goAway(entry: AgentSession): void {
  entry.session.goAway();
  for (const pool of entry.pools()) {
    // http.Agent destroys a socket handed back while keepAlive is off.
    (pool as unknown as { keepAlive: boolean }).keepAlive = false;
    for (const sockets of Object.values(pool.freeSockets))
      for (const socket of sockets ?? []) socket.destroy();
  }
}
