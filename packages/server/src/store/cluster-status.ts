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
// A failed write is retried on the next pump after RETRY_MS. A pump's work is
// proportional to what is due, not to the fleet: changed clusters are kept
// apart, and the rest in the order they were last written, so the oldest
// heartbeats are at the front and the first one not due ends the look. The
// reporter asks for a heartbeat's fresh state (its RTT) when it writes one
// (`current`) and schedules its own heartbeats, so nothing needs to report
// every cluster every second.

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
  /** A cluster's state now, asked when its heartbeat is written (the RTT moves without a report). */
  current?: (cluster: string) => AgentState | undefined;
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
  /** Clusters whose state differs from their last write (or that were never written), in report order. */
  private readonly changes = new Set<string>();
  /** Written clusters, least recently written first (each successful write moves its cluster to the end). */
  private readonly byWritten = new Map<string, Entry>();
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
  /** When the scheduled pump runs. */
  private timerAt = 0;
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
    this.track(cluster, entry);
    if (this.due(entry)) this.schedule(0);
  }

  /** Stops tracking a cluster (it was removed). */
  forget(cluster: string): void {
    this.entries.delete(cluster);
    this.changes.delete(cluster);
    this.byWritten.delete(cluster);
  }

  /** Sends as many due writes as the bucket allows; resolves when they are done. Returns how many. */
  async pump(): Promise<number> {
    this.refill();
    const now = this.now();
    // Connection changes go before heartbeats.
    const batch: [string, Entry][] = [];
    let changesLeft = false;
    for (const cluster of this.changes) {
      const entry = this.entries.get(cluster)!;
      if (!this.due(entry)) continue;
      if (batch.length >= Math.floor(this.tokens)) {
        changesLeft = true;
        break;
      }
      batch.push([cluster, entry]);
    }
    this.tokens -= batch.length;
    // The longest unwritten first: every cluster gets its turn.
    const room = Math.min(Math.floor(this.tokens), Math.floor(this.heartbeatTokens));
    const beats: [string, Entry][] = [];
    let beatsLeft = false;
    for (const [cluster, entry] of this.byWritten) {
      if (now - (entry.writtenAt ?? 0) < this.heartbeatMs) break; // the rest were written later
      if (this.changes.has(cluster)) continue; // written as a change, and moved to the end then
      if (!entry.desired.connected) {
        // No heartbeat while disconnected; a reconnect is a change, written and put back at the end.
        this.byWritten.delete(cluster);
        continue;
      }
      if (!this.due(entry)) continue; // in flight, or waiting to retry
      if (beats.length >= room) {
        beatsLeft = true;
        break;
      }
      const fresh = this.options.current?.(cluster);
      if (fresh) entry.desired = fresh;
      beats.push([cluster, entry]);
    }
    this.tokens -= beats.length;
    this.heartbeatTokens -= beats.length;
    const sent = [...batch, ...beats];
    await Promise.all(sent.map(([cluster, entry]) => this.send(cluster, entry)));
    if (changesLeft) this.schedule(Math.ceil(1000 / this.rate));
    else if (beatsLeft) this.schedule(Math.ceil(1000 / Math.min(this.rate, this.heartbeatRate)));
    else if (sent.some(([, e]) => e.retryAt !== undefined)) this.schedule(RETRY_MS);
    else this.scheduleHeartbeat();
    return sent.length;
  }

  /** Stops scheduling; in-flight writes finish on their own. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
  }

  /** Keeps `changes` holding exactly the clusters whose state differs from their last write. */
  private track(cluster: string, e: Entry): void {
    if (this.changed(e)) this.changes.add(cluster);
    else this.changes.delete(cluster);
  }

  /** A pump for when the least recently written cluster's heartbeat is due. */
  private scheduleHeartbeat(): void {
    const oldest = this.byWritten.values().next().value;
    if (!oldest) return;
    const dueIn = (oldest.writtenAt ?? 0) + this.heartbeatMs - this.now();
    const budgetIn = this.heartbeatTokens >= 1 ? 0 : ((1 - this.heartbeatTokens) * 1000) / this.heartbeatRate;
    this.schedule(Math.max(0, Math.ceil(Math.max(dueIn, budgetIn))));
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
      if (!exists) {
        if (this.entries.get(cluster) === entry) this.forget(cluster);
      } else if (this.entries.get(cluster) === entry) {
        this.byWritten.delete(cluster);
        this.byWritten.set(cluster, entry);
        this.track(cluster, entry);
      }
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
    if (!this.autoPump || this.closed) return;
    const at = this.now() + delayMs;
    // A sooner pump replaces a later one (a change does not wait for the next heartbeat).
    if (this.timer) {
      if (this.timerAt <= at) return;
      clearTimeout(this.timer);
    }
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.pump();
    }, delayMs);
    this.timer.unref();
  }
}
