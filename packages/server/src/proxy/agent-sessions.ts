// The live tunnels of each connected cluster. A cluster may run several
// agent replicas, each with its session (redundant agents): new streams go
// to the least loaded usable one, so losing one agent fails only the streams
// it carried. A reconnecting agent (same instance id) replaces its previous
// session at once (the old one is sent go-away and drains), so a rollout or a
// half-dead connection never locks a cluster out; beyond the per-cluster
// bound the oldest session drains. A draining session is closed after the
// drain timeout whatever it still holds: an agent that reconnects over and
// over, or claims new instance ids, cannot pile up sessions.
import { Agent as HttpAgent } from "node:http";
import type { Duplex } from "node:stream";
import { AUTH_METADATA, HEAD_FEATURE, HEAD_METADATA, HEAD_VERSION, KUBERNETES_SERVICE } from "@tether/common";
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
  /** Which agent process (X-Tether-Agent-Instance); "" from agents that do not say. */
  readonly instance: string;
  /** The member apiserver's version, once read through the tunnel. */
  kubernetesVersion?: string;
  /** The agent reads structured request heads (HEAD_FEATURE); agents from before them get raw HTTP/1.1. */
  readonly structuredHead: boolean;
  /** Opens a stream to the agent's apiserver forwarder: raw HTTP/1.1, or a structured head first when asked. */
  openStream(mode: AuthMode, options?: { structuredHead?: boolean }): Duplex;
  /** An http.Agent whose connections are tunnel streams, pooled per auth mode. */
  httpAgent(mode: AuthMode): HttpAgent;
  /** The pools httpAgent made. */
  pools(): Iterable<HttpAgent>;
}

/** Default of --max-agents-per-cluster (limits.ts holds the flag's). */
export const DEFAULT_MAX_AGENTS_PER_CLUSTER = 4;

export interface AgentSessionsOptions {
  /** Default DEFAULT_DRAIN_TIMEOUT_MS. */
  drainTimeoutMs?: number;
  /** Sessions one cluster may hold at once, draining ones not counted. Default DEFAULT_MAX_AGENTS_PER_CLUSTER. */
  maxPerCluster?: number;
}

export class AgentSessions {
  /** The sessions new streams may use, oldest first, per cluster. */
  private readonly byCluster = new Map<string, AgentSession[]>();
  /** Every session not yet closed: the current ones and those draining. */
  private readonly live = new Set<AgentSession>();
  private readonly drainTimeoutMs: number;
  private readonly maxPerCluster: number;
  /** Round-robin position per cluster, among equally loaded sessions. */
  private readonly turn = new Map<string, number>();

  constructor(options: AgentSessionsOptions = {}) {
    this.drainTimeoutMs = options.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
    this.maxPerCluster = options.maxPerCluster ?? DEFAULT_MAX_AGENTS_PER_CLUSTER;
  }

  /**
   * Registers a session for its cluster. The same agent instance's previous
   * session is replaced (drained); beyond the per-cluster bound the oldest is.
   */
  attach(
    cluster: string,
    session: Session,
    info: SessionCertificate & {
      remoteAddress: string;
      agentVersion?: string;
      agentFeatures?: string;
      instance?: string;
    },
  ): AgentSession {
    const agents = new Map<AuthMode, HttpAgent>();
    const openStream = (mode: AuthMode, options: { structuredHead?: boolean } = {}) =>
      session.open(KUBERNETES_SERVICE, {
        [AUTH_METADATA]: mode,
        ...(options.structuredHead ? { [HEAD_METADATA]: HEAD_VERSION } : {}),
      });
    const entry: AgentSession = {
      cluster,
      session,
      connectedAt: new Date(),
      remoteAddress: info.remoteAddress,
      instance: info.instance ?? "",
      serial: info.serial,
      certNotAfter: info.certNotAfter,
      certIssuedAt: info.certIssuedAt,
      ...(info.incarnation ? { incarnation: info.incarnation } : {}),
      ...(info.agentVersion ? { agentVersion: info.agentVersion } : {}),
      structuredHead: (info.agentFeatures ?? "").split(",").some((f) => f.trim() === HEAD_FEATURE),
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
    const current = (this.byCluster.get(cluster) ?? []).filter((e) => {
      if (e.instance !== entry.instance) return true;
      this.drain(e);
      return false;
    });
    current.push(entry);
    while (current.length > this.maxPerCluster) this.drain(current.shift()!);
    this.byCluster.set(cluster, current);
    this.live.add(entry);
    // The agent is stopping: new streams go to the cluster's other sessions, and idle pooled
    // streams are dropped so that the session can close once its requests end.
    session.once("goaway", () => {
      this.forget(entry);
      stopPooling(entry);
    });
    session.once("close", () => {
      for (const agent of agents.values()) agent.destroy();
      this.live.delete(entry);
      this.forget(entry);
    });
    return entry;
  }

  /** Takes `entry` out of the sessions new streams may use. */
  private forget(entry: AgentSession): void {
    const current = this.byCluster.get(entry.cluster);
    if (!current?.includes(entry)) return;
    const rest = current.filter((e) => e !== entry);
    if (rest.length > 0) this.byCluster.set(entry.cluster, rest);
    else {
      this.byCluster.delete(entry.cluster);
      this.turn.delete(entry.cluster);
    }
  }

  private drain(entry: AgentSession): void {
    const { session } = entry;
    this.forget(entry);
    if (session.closed) return;
    goAway(entry);
    const timer = setTimeout(() => session.close(), this.drainTimeoutMs);
    timer.unref();
    session.once("close", () => clearTimeout(timer));
  }

  /**
   * The session a new stream of `cluster` goes to: of those not closed or
   * going away, the one with the fewest open streams; ties take turns.
   */
  get(cluster: string): AgentSession | undefined {
    const usable = this.usable(cluster);
    if (usable.length <= 1) return usable[0];
    const fewest = Math.min(...usable.map((e) => e.session.streamCount));
    const least = usable.filter((e) => e.session.streamCount === fewest);
    const turn = ((this.turn.get(cluster) ?? -1) + 1) % least.length;
    this.turn.set(cluster, turn);
    return least[turn];
  }

  /** The sessions of `cluster` new streams may use (its connected agents), oldest first. */
  usable(cluster: string): AgentSession[] {
    return (this.byCluster.get(cluster) ?? []).filter((e) => !e.session.closed && !e.session.goingAway);
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
    for (const entry of [...this.live]) {
      this.forget(entry);
      if (!entry.session.closed) goAway(entry);
    }
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
  stopPooling(entry);
}

function stopPooling(entry: AgentSession): void {
  for (const pool of entry.pools()) {
    // http.Agent destroys a socket handed back while keepAlive is off.
    (pool as unknown as { keepAlive: boolean }).keepAlive = false;
    for (const sockets of Object.values(pool.freeSockets))
      for (const socket of sockets ?? []) socket.destroy();
  }
}
