// What the status page and `cluster list` (through the admin API) show, as
// plain data: every registered cluster with its live session on this replica
// (or none), and the replica's own health. Built on each look from the store,
// the sessions and the small per-cluster records; nothing here runs per request.
import type { AgentSession, AgentSessions } from "../proxy/agent-sessions.js";
import type { ClusterRecord, Store } from "../store/state-store.js";
import { VERSION } from "../version.js";
import { type ByteRate, ByteRates } from "./byte-rates.js";
import type { ClusterEvents } from "./cluster-events.js";

/** A cluster's agent session as this replica sees it. */
export interface ClusterConnection {
  connected: boolean;
  connectedSince?: string;
  remoteAddress?: string;
  rttMs?: number;
  agentVersion?: string;
  kubernetesVersion?: string;
  openStreams?: number;
  /** Agent sessions new streams may use (redundant agents); the other fields are the oldest one's. */
  agents?: number;
}

export interface ClusterView {
  name: string;
  /** Missing when the store could not be read (the cluster is known only from its live session). */
  labels?: Record<string, string>;
  auth?: string;
  connection: ClusterConnection;
  bytesPerSecond?: ByteRate;
  disconnectedAt?: string;
  lastError?: { at: string; message: string };
}

export interface ReplicaView {
  version: string;
  startedAt: string;
  uptimeSeconds: number;
  draining: boolean;
  /** Agent sessions open, draining ones included. */
  sessions: number;
  connectedClusters: number;
  store: { where: string; reachable: boolean; error?: string };
}

export interface StatusSnapshot {
  generatedAt: string;
  replica: ReplicaView;
  clusters: ClusterView[];
}

export function connectionOf(entries: AgentSession[]): ClusterConnection {
  const entry = entries[0];
  if (!entry) return { connected: false };
  const { session } = entry;
  return {
    connected: true,
    connectedSince: entry.connectedAt.toISOString(),
    remoteAddress: entry.remoteAddress,
    ...(session.rtt === undefined ? {} : { rttMs: Math.round(session.rtt * 10) / 10 }),
    ...(entry.agentVersion ? { agentVersion: entry.agentVersion } : {}),
    ...(entry.kubernetesVersion ? { kubernetesVersion: entry.kubernetesVersion } : {}),
    openStreams: session.streamCount,
    agents: entries.length,
  };
}

export interface StatusModelDeps {
  store: Store;
  sessions: AgentSessions;
  events: ClusterEvents;
  /** Whether the replica is shutting down. */
  draining: () => boolean;
}

export class StatusModel {
  private readonly rates = new ByteRates();
  private readonly startedAt = new Date();

  constructor(private readonly deps: StatusModelDeps) {}

  async snapshot(): Promise<StatusSnapshot> {
    const { store, sessions, events } = this.deps;
    let records: ClusterRecord[] | undefined;
    let storeError: string | undefined;
    try {
      records = await store.listClusters();
    } catch (err) {
      storeError = (err as Error).message;
    }
    // Without the store, the clusters this replica serves are still worth showing.
    const names = records?.map((r) => r.name) ?? [...new Set(sessions.list().map((e) => e.cluster))];
    const byName = new Map(records?.map((r) => [r.name, r]));
    const now = Date.now();
    const clusters = names.sort().map((name): ClusterView => {
      const record = byName.get(name);
      const usable = sessions.usable(name);
      const entry = usable[0];
      const history = events.get(name);
      return {
        name,
        ...(record ? { labels: record.labels, auth: record.auth } : {}),
        connection: connectionOf(usable),
        ...(entry ? { bytesPerSecond: this.rates.rate(entry.session, entry.connectedAt, now) } : {}),
        ...(history?.disconnectedAt ? { disconnectedAt: history.disconnectedAt.toISOString() } : {}),
        ...(history?.lastError
          ? { lastError: { at: history.lastError.at.toISOString(), message: history.lastError.message } }
          : {}),
      };
    });
    return {
      generatedAt: new Date(now).toISOString(),
      replica: {
        version: VERSION,
        startedAt: this.startedAt.toISOString(),
        uptimeSeconds: Math.floor((now - this.startedAt.getTime()) / 1000),
        draining: this.deps.draining(),
        sessions: sessions.list().length,
        connectedClusters: clusters.filter((c) => c.connection.connected).length,
        store: {
          where: store.describe(),
          reachable: storeError === undefined,
          ...(storeError === undefined ? {} : { error: storeError.slice(0, 240) }),
        },
      },
      clusters,
    };
  }
}
