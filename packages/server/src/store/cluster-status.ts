// What tether-server tells the host cluster about each member (the status of
// its Cluster object): AgentConnected and Ready conditions, heartbeat time,
// RTT, versions, endpoint. With thousands of members the host apiserver must
// not see a write per ping, so writes are
//   - coalesced: the latest state of a cluster wins, at most one write per
//     cluster is in flight, and nothing is written when nothing that matters
//     changed (connection, versions, endpoint) until the heartbeat is due;
//   - rate-limited: a token bucket shared by all clusters (default 20 writes/s,
//     burst 20), so a mass reconnect after a server restart is spread out;
//   - heartbeats (a connected cluster's status rewritten with nothing changed
//     but the time and RTT) take a budget of their own shared by all clusters
//     (default 1 write/s): an idle fleet costs the host apiserver that rate
//     whatever its size, and each cluster's heartbeat comes every heartbeatMs
//     or every (clusters / budget) seconds, whichever is longer.
// A failed write is retried on the next pump after RETRY_MS.

export interface Condition {
  type: "AgentConnected" | "Ready";
  status: "True" | "False" | "Unknown";
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface ClusterStatus {
  conditions: Condition[];
  lastHeartbeatTime?: string;
  agentVersion?: string;
  kubernetesVersion?: string;
  /** null clears a stale RTT once the agent is gone (merge-patch semantics). */
  rttMilliseconds?: number | null;
  endpoint?: string;
}

/** Where statuses go (the Kubernetes store's Cluster objects). */
export interface ClusterStatusSink {
  /** Writes a cluster's status; resolves false when the cluster no longer exists. */
  write(cluster: string, status: ClusterStatus): Promise<boolean>;
  /** Clusters whose stored status says connected, so a new server can correct them. */
  markedConnectedClusters(): Promise<string[]>;
}

/** What the server knows about a cluster's agent right now. */
export interface AgentState {
  connected: boolean;
  endpoint: string;
  rttMs?: number;
  agentVersion?: string;
  /** The member apiserver's gitVersion, read through the tunnel; undefined while unknown. */
  kubernetesVersion?: string;
}

export interface StatusReporterOptions {
  /** Sustained writes per second across all clusters. Default 20. */
  ratePerSecond?: number;
  /** Writes allowed at once after a quiet period. Default 20. */
  burst?: number;
  /** A connected cluster's status is rewritten at most this often with nothing changed (heartbeat). Default 30 s. */
  heartbeatMs?: number;
  /** Heartbeats per second across all clusters. Default 1. */
  heartbeatRatePerSecond?: number;
  /** For tests: the clock, and whether the reporter schedules its own pumps. */
  now?: () => number;
  autoPump?: boolean;
  onError?: (cluster: string, err: Error) => void;
}

const RETRY_MS = 5_000;

interface Entry {
  desired: AgentState;
  /** What the last successful write said, and when. */
  written?: AgentState;
  writtenAt?: number;
  transitions: { connected?: string; ready?: string };
  inFlight: boolean;
  retryAt?: number;
}

export class ClusterStatusReporter {
  private readonly entries = new Map<string, Entry>();
  private readonly rate: number;
  private readonly burst: number;
  private readonly heartbeatMs: number;
  private readonly now: () => number;
  private readonly autoPump: boolean;
  private tokens: number;
  private refilledAt: number;
  private readonly heartbeatRate: number;
  private heartbeatTokens = 1;
  private heartbeatRefilledAt: number;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Writes sent so far (for tests and metrics). */
  writes = 0;

  constructor(
    private readonly write: (cluster: string, status: ClusterStatus) => Promise<boolean>,
    private readonly options: StatusReporterOptions = {},
  ) {
    this.rate = options.ratePerSecond ?? 20;
    this.burst = options.burst ?? 20;
    this.heartbeatMs = options.heartbeatMs ?? 30_000;
    this.now = options.now ?? Date.now;
    this.autoPump = options.autoPump ?? true;
    this.tokens = this.burst;
    this.refilledAt = this.now();
    this.heartbeatRate = options.heartbeatRatePerSecond ?? 1;
    this.heartbeatRefilledAt = this.refilledAt;
  }

  /** Records the cluster's current state; a write follows if it matters, or a heartbeat is due. */
  report(cluster: string, state: AgentState): void {
    const entry = this.entries.get(cluster) ?? { desired: state, transitions: {}, inFlight: false };
    entry.desired = state;
    this.entries.set(cluster, entry);
    if (this.due(entry)) this.schedule(0);
  }

  /** Stops tracking a cluster (it was removed). */
  forget(cluster: string): void {
    this.entries.delete(cluster);
  }

  /** Sends as many due writes as the bucket allows; resolves when they are done. Returns how many. */
  async pump(): Promise<number> {
    this.refill();
    // Connection changes go before heartbeats.
    const due = [...this.entries.entries()].filter(([, e]) => this.due(e));
    const changes = due.filter(([, e]) => this.changed(e));
    const heartbeats = due.filter(([, e]) => !this.changed(e));
    const batch = changes.slice(0, Math.floor(this.tokens));
    this.tokens -= batch.length;
    // The longest unwritten first: every cluster gets its turn.
    const beats = heartbeats
      .sort(([, a], [, b]) => (a.writtenAt ?? 0) - (b.writtenAt ?? 0))
      .slice(0, Math.min(Math.floor(this.tokens), Math.floor(this.heartbeatTokens)));
    this.tokens -= beats.length;
    this.heartbeatTokens -= beats.length;
    await Promise.all([...batch, ...beats].map(([cluster, entry]) => this.send(cluster, entry)));
    if (changes.length > batch.length) this.schedule(Math.ceil(1000 / this.rate));
    else if (heartbeats.length > beats.length)
      this.schedule(Math.ceil(1000 / Math.min(this.rate, this.heartbeatRate)));
    else if (due.some(([, e]) => e.retryAt !== undefined)) this.schedule(RETRY_MS);
    return batch.length + beats.length;
  }

  /** Stops scheduling; in-flight writes finish on their own. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private due(e: Entry): boolean {
    if (e.inFlight) return false;
    const now = this.now();
    if (e.retryAt !== undefined && now < e.retryAt) return false;
    if (this.changed(e)) return true;
    return e.desired.connected && now - (e.writtenAt ?? 0) >= this.heartbeatMs;
  }

  /** Whether something that matters differs from the last write (RTT alone waits for the heartbeat). */
  private changed(e: Entry): boolean {
    const w = e.written;
    const d = e.desired;
    return (
      !w ||
      w.connected !== d.connected ||
      w.kubernetesVersion !== d.kubernetesVersion ||
      w.agentVersion !== d.agentVersion ||
      w.endpoint !== d.endpoint
    );
  }

  private refill(): void {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAt) * this.rate) / 1000);
    this.refilledAt = now;
    // A burst of one: heartbeats are never urgent.
    this.heartbeatTokens = Math.min(
      1,
      this.heartbeatTokens + ((now - this.heartbeatRefilledAt) * this.heartbeatRate) / 1000,
    );
    this.heartbeatRefilledAt = now;
  }

  private async send(cluster: string, entry: Entry): Promise<void> {
    const state = entry.desired;
    const at = new Date(this.now()).toISOString();
    const status = this.statusOf(entry, state, at);
    entry.inFlight = true;
    this.writes++;
    try {
      const exists = await this.write(cluster, status);
      entry.written = state;
      entry.writtenAt = this.now();
      entry.retryAt = undefined;
      if (!exists) this.entries.delete(cluster);
    } catch (err) {
      entry.retryAt = this.now() + RETRY_MS;
      this.options.onError?.(cluster, err as Error);
    } finally {
      entry.inFlight = false;
      // The state may have changed while the write was out.
      if (this.entries.get(cluster) === entry && this.due(entry)) this.schedule(0);
    }
  }

  private statusOf(entry: Entry, state: AgentState, at: string): ClusterStatus {
    const ready = state.connected && state.kubernetesVersion !== undefined;
    const was = entry.written;
    if (!was || was.connected !== state.connected) entry.transitions.connected = at;
    const wasReady = was ? was.connected && was.kubernetesVersion !== undefined : undefined;
    if (wasReady !== ready) entry.transitions.ready = at;
    return {
      conditions: [
        {
          type: "AgentConnected",
          status: state.connected ? "True" : "False",
          lastTransitionTime: entry.transitions.connected ?? at,
          reason: state.connected ? "TunnelUp" : "TunnelDown",
          message: state.connected
            ? "the agent's tunnel to tether-server is up"
            : "no agent is connected: check the agent's logs in the member cluster",
        },
        {
          type: "Ready",
          status: ready ? "True" : "False",
          lastTransitionTime: entry.transitions.ready ?? at,
          reason: ready ? "MemberAPIReachable" : state.connected ? "MemberAPIUnknown" : "TunnelDown",
          message: ready
            ? `the member's Kubernetes API (${state.kubernetesVersion}) answers through the tunnel`
            : state.connected
              ? "the tunnel is up but the member's Kubernetes API has not answered yet"
              : "requests to this cluster fail with 503 until its agent connects",
        },
      ],
      ...(state.connected ? { lastHeartbeatTime: at } : {}),
      rttMilliseconds:
        state.connected && state.rttMs !== undefined ? Math.round(state.rttMs * 10) / 10 : null,
      ...(state.agentVersion ? { agentVersion: state.agentVersion } : {}),
      ...(state.kubernetesVersion ? { kubernetesVersion: state.kubernetesVersion } : {}),
      endpoint: state.endpoint,
    };
  }

  private schedule(delayMs: number): void {
    if (!this.autoPump || this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.pump();
    }, delayMs);
    this.timer.unref();
  }
}
