// What the status page tells about a cluster beyond its live session: when its
// agent last went away and the last thing that went wrong with it (a session
// error, a refused reconnect, a failed /version probe). One small record per
// cluster, at most `maxClusters` of them (the least recently touched are
// forgotten first), each message cut short: an agent that fails in a loop
// costs nothing more than one that failed once.

const MAX_MESSAGE = 240;
export const DEFAULT_MAX_CLUSTERS = 10_000;

export interface ClusterEvent {
  at: Date;
  message: string;
}

export interface ClusterHistory {
  lastError?: ClusterEvent;
  disconnectedAt?: Date;
}

export class ClusterEvents {
  private readonly byCluster = new Map<string, ClusterHistory>();

  constructor(private readonly maxClusters = DEFAULT_MAX_CLUSTERS) {}

  error(cluster: string, message: string, at = new Date()): void {
    const text = message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE)}…` : message;
    this.touch(cluster).lastError = { at, message: text };
  }

  disconnected(cluster: string, at = new Date()): void {
    this.touch(cluster).disconnectedAt = at;
  }

  get(cluster: string): ClusterHistory | undefined {
    return this.byCluster.get(cluster);
  }

  forget(cluster: string): void {
    this.byCluster.delete(cluster);
  }

  private touch(cluster: string): ClusterHistory {
    const record = this.byCluster.get(cluster) ?? {};
    // Re-inserted last, so that the first key is always the least recently touched.
    this.byCluster.delete(cluster);
    this.byCluster.set(cluster, record);
    if (this.byCluster.size > this.maxClusters) {
      this.byCluster.delete(this.byCluster.keys().next().value as string);
    }
    return record;
  }
}
