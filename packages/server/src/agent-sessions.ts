// The live tunnel of each connected cluster. A reconnecting agent replaces its
// previous session at once (the old one is sent go-away and drains), so a
// rollout or a half-dead connection never locks a cluster out.
import { Agent as HttpAgent } from "node:http";
import type { Duplex } from "node:stream";
import type { Session } from "@tether/tunnel";
import type { AuthMode } from "./state-store.js";

/** The service name under which an agent exposes its apiserver. */
export const KUBERNETES_SERVICE = "kubernetes";

export interface AgentSession {
  readonly cluster: string;
  readonly session: Session;
  readonly connectedAt: Date;
  readonly remoteAddress: string;
  /** The serial and expiry of the certificate the agent holds now; a renewal over the session updates them. */
  serial: string;
  certNotAfter: Date;
  /** What the agent said it is (X-Tether-Agent-Version), if anything. */
  readonly agentVersion?: string;
  /** The member apiserver's version, once read through the tunnel. */
  kubernetesVersion?: string;
  /** Opens a raw stream to the agent's apiserver forwarder. */
  openStream(mode: AuthMode): Duplex;
  /** An http.Agent whose connections are tunnel streams, pooled per auth mode. */
  httpAgent(mode: AuthMode): HttpAgent;
}

export class AgentSessions {
  private readonly byCluster = new Map<string, AgentSession>();

  /** Registers a session for its cluster, replacing (and draining) any previous one. */
  attach(
    cluster: string,
    session: Session,
    info: { remoteAddress: string; serial: string; certNotAfter: Date; agentVersion?: string },
  ): AgentSession {
    const agents = new Map<AuthMode, HttpAgent>();
    const openStream = (mode: AuthMode) => session.open(KUBERNETES_SERVICE, { auth: mode });
    const entry: AgentSession = {
      cluster,
      session,
      connectedAt: new Date(),
      remoteAddress: info.remoteAddress,
      serial: info.serial,
      certNotAfter: info.certNotAfter,
      ...(info.agentVersion ? { agentVersion: info.agentVersion } : {}),
      openStream,
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
    if (previous) previous.session.goAway();
    session.once("close", () => {
      for (const agent of agents.values()) agent.destroy();
      if (this.byCluster.get(cluster) === entry) this.byCluster.delete(cluster);
    });
    return entry;
  }

  get(cluster: string): AgentSession | undefined {
    const entry = this.byCluster.get(cluster);
    return entry && !entry.session.closed && !entry.session.goingAway ? entry : undefined;
  }

  /** Closes every session of a cluster (used when it is removed or revoked). */
  disconnect(cluster: string): void {
    this.byCluster.get(cluster)?.session.close();
  }

  list(): AgentSession[] {
    return [...this.byCluster.values()];
  }

  closeAll(): void {
    for (const entry of this.byCluster.values()) entry.session.close();
  }
}
