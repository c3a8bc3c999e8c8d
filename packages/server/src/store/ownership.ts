// Which tether-server replica holds each member cluster's tunnel: one
// coordination.k8s.io/v1 Lease per connected cluster in the store's
// namespace, named tether-owner-<cluster>, holder = the replica's id, the
// replica's inter-replica address in an annotation, leaseTransitions as the
// generation. Per cluster rather than one Lease per replica listing its
// clusters: a takeover is then one compare-and-swap on one small object
// (resourceVersion precondition) and never a read-modify-write of a list
// another replica is rewriting; the renewals cost what the kubelets' node
// Leases cost (one small PUT per cluster per renew interval, none per request).
//
// Fencing. A replica serves a cluster only while it holds the session and its
// own monotonic clock says its last successful renewal is recent (a renewal's
// start + two thirds of the lease duration: the last third is slack for the
// others' wall clocks). A replica paused past that (SIGSTOP, a long GC, a
// frozen VM) stops serving before it can learn anything, and its first
// renewal after the pause fails on the resourceVersion if another replica took
// over. The forwarded hop names the holder and generation it routed to; the
// owner refuses a hop whose generation is not the one it holds.
//
// Routing reads a watch-fed cache of the Leases: no request reads the host
// cluster. A stale cache entry costs one refused hop (503), never a request
// served by a replica that does not hold the cluster.
import { performance } from "node:perf_hooks";
import { type KubernetesObject, makeInformer } from "@kubernetes/client-node";
import type { Logger } from "../logger.js";
import type { KubeApi } from "./kube-api.js";

export const DEFAULT_LEASE_DURATION_MS = 30_000;
const ADDRESS_ANNOTATION = "tether.io/replica-address";
/** Set by a draining owner that gave the Lease up: until when the others may wait for the next owner. */
const HANDOVER_ANNOTATION = "tether.io/handover-until";
const KIND_LABEL = "tether.io/kind";
const CLUSTER_LABEL = "tether.io/cluster";
const RETRIES = 5;

export interface Owner {
  replica: string;
  /** https://host:port of the owner's replica listener. */
  address: string;
  generation: number;
}

interface LeaseObject {
  apiVersion: "coordination.k8s.io/v1";
  kind: "Lease";
  metadata: {
    name: string;
    namespace?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: unknown[];
  };
  spec: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    acquireTime?: string;
    renewTime?: string;
    leaseTransitions?: number;
  };
}

interface Held {
  generation: number;
  /** performance.now() until which this replica may serve the cluster. */
  validUntil: number;
}

export interface OwnershipOptions {
  api: KubeApi;
  namespace: string;
  replicaId: string;
  /** This replica's listener for forwarded requests, as the others dial it. */
  address: string;
  /** Default 30 s; renewals every third of it. */
  leaseDurationMs?: number;
  /** The uid of a cluster's Cluster object: the Lease is garbage-collected with it. */
  clusterUid?: (cluster: string) => Promise<string | undefined>;
  log: Logger;
}

/** Kubernetes MicroTime: RFC 3339 with microseconds. */
const microTime = (ms: number) => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");

export class Ownership {
  readonly replicaId: string;
  private readonly durationMs: number;
  private readonly held = new Map<string, Held>();
  /** Clusters with a session here: their Lease is claimed, renewed, or waited for. */
  private readonly wanted = new Set<string>();
  /** Wanted clusters whose claim has not been written yet (the host cluster failed): renewals preempt for them. */
  private readonly pending = new Set<string>();
  /** The watch-fed view of every owner Lease, for routing. */
  private readonly leases = new Map<string, LeaseObject>();
  private readonly timer: NodeJS.Timeout;
  private informer: { start(): Promise<void>; stop(): Promise<void> } | undefined;
  private closed = false;
  /** Per cluster, the claim or renewal in flight: one at a time. */
  private readonly busy = new Map<string, Promise<void>>();

  constructor(private readonly o: OwnershipOptions) {
    this.replicaId = o.replicaId;
    this.durationMs = o.leaseDurationMs ?? DEFAULT_LEASE_DURATION_MS;
    this.timer = setInterval(() => this.renewAll(), this.durationMs / 3);
    this.timer.unref();
  }

  private get collection(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.o.namespace}/leases`;
  }

  /** Starts the watch the routing reads. */
  async start(): Promise<void> {
    const selector = `${KIND_LABEL}=owner`;
    const path = this.collection;
    const list = async () =>
      (await this.o.api.expect("GET", `${path}?labelSelector=${encodeURIComponent(selector)}`)).body as never;
    const informer = makeInformer<KubernetesObject>(this.o.api.kubeConfig, path, list, selector);
    const set = (o: KubernetesObject) => {
      const lease = o as unknown as LeaseObject;
      const cluster = lease.metadata.labels?.[CLUSTER_LABEL];
      if (cluster) this.leases.set(cluster, lease);
    };
    informer.on("add", set);
    informer.on("update", set);
    informer.on("delete", (o) => {
      const cluster = (o as unknown as LeaseObject).metadata.labels?.[CLUSTER_LABEL];
      if (cluster) this.leases.delete(cluster);
    });
    informer.on("error", (err: unknown) => {
      if (this.closed) return;
      this.o.log.warn({ err: (err as Error | undefined)?.message }, "owner Lease watch broke; restarting it");
      setTimeout(() => void informer.start().catch(() => {}), 1_000).unref();
    });
    this.informer = informer;
    await informer.start();
  }

  /** Whether this replica may serve `cluster` now (and, given one, under that generation). */
  holds(cluster: string, generation?: number): boolean {
    const h = this.held.get(cluster);
    if (!h || performance.now() >= h.validUntil) return false;
    return generation === undefined || generation === h.generation;
  }

  /** The generation this replica holds `cluster` under, while it holds it. */
  generation(cluster: string): number | undefined {
    return this.holds(cluster) ? this.held.get(cluster)?.generation : undefined;
  }

  /** Another live replica that holds `cluster`, by the watched Leases and the wall clock. */
  owner(cluster: string): Owner | undefined {
    const lease = this.leases.get(cluster);
    const holder = lease?.spec.holderIdentity;
    const address = lease?.metadata.annotations?.[ADDRESS_ANNOTATION];
    if (!lease || !holder || holder === this.replicaId || !address) return undefined;
    if (!leaseLive(lease)) return undefined;
    return { replica: holder, address, generation: lease.spec.leaseTransitions ?? 0 };
  }

  /**
   * A session for `cluster` started here: take the Lease, from another
   * holder too — the agent's newest connection is where its tunnel is.
   */
  claim(cluster: string): Promise<void> {
    this.wanted.add(cluster);
    this.pending.add(cluster);
    return this.serial(cluster, () => this.acquire(cluster, true));
  }

  /** The last session for `cluster` here ended: give the Lease up so the next owner need not wait. */
  release(cluster: string, handover = false): Promise<void> {
    this.wanted.delete(cluster);
    this.pending.delete(cluster);
    return this.serial(cluster, async () => {
      const h = this.held.get(cluster);
      this.held.delete(cluster);
      if (!h || this.wanted.has(cluster)) return;
      const lease = await this.read(cluster);
      if (lease?.spec.holderIdentity !== this.replicaId) return;
      delete lease.spec.holderIdentity;
      if (handover) {
        lease.metadata.annotations = {
          ...lease.metadata.annotations,
          [HANDOVER_ANNOTATION]: new Date(Date.now() + this.durationMs).toISOString(),
        };
      }
      await this.o.api.expect("PUT", `${this.collection}/${lease.metadata.name}`, lease, [404, 409]);
    });
  }

  /**
   * A graceful stop: give every Lease up before the agents are sent go-away,
   * so the other replicas hold a request for these clusters until an agent's
   * new session elsewhere claims them (changingHands) instead of routing it
   * here, where a going-away session opens no stream.
   */
  async resign(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all([...this.wanted].map((c) => this.release(c, true).catch(() => {})));
  }

  /**
   * Whether `cluster` is between owners: its last owner resigned it in a
   * drain less than a lease duration ago and nobody holds it yet (its agent
   * is dialing another replica). A request may wait for the next owner; one
   * for a cluster whose agent was lost does not.
   */
  changingHands(cluster: string): boolean {
    const lease = this.leases.get(cluster);
    if (!lease || this.owner(cluster) || this.holds(cluster)) return false;
    const until = Date.parse(lease.metadata.annotations?.[HANDOVER_ANNOTATION] ?? "");
    return Number.isFinite(until) && Date.now() < until;
  }

  /** How long a Lease lasts unrenewed: the bound of a wait for an owner. */
  get leaseDurationMs(): number {
    return this.durationMs;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await Promise.all([...this.wanted].map((c) => this.release(c).catch(() => {})));
    await this.informer?.stop().catch(() => {});
  }

  private serial(cluster: string, work: () => Promise<void>): Promise<void> {
    const previous = this.busy.get(cluster) ?? Promise.resolve();
    const next = previous.then(work, work).catch((err: Error) => {
      this.o.log.warn({ cluster, err: err.message }, "owner Lease update failed");
    });
    this.busy.set(cluster, next);
    void next.then(() => {
      if (this.busy.get(cluster) === next) this.busy.delete(cluster);
    });
    return next;
  }

  private renewAll(): void {
    for (const cluster of this.wanted) {
      if (this.busy.has(cluster)) continue;
      void this.serial(cluster, () => this.acquire(cluster, this.pending.has(cluster)));
    }
  }

  private async read(cluster: string): Promise<LeaseObject | undefined> {
    const answer = await this.o.api.expect<LeaseObject>(
      "GET",
      `${this.collection}/${leaseName(cluster)}`,
      undefined,
      [404],
    );
    return answer.status === 404 ? undefined : answer.body;
  }

  /**
   * Creates, renews or takes over the Lease. Without `preempt` a Lease
   * another replica holds and renews is left to it; one another replica
   * took from this one is never taken back by a renewal.
   */
  private async acquire(cluster: string, preempt: boolean): Promise<void> {
    for (let attempt = 0; attempt < RETRIES && this.wanted.has(cluster); attempt++) {
      const sentAt = performance.now();
      const now = Date.now();
      const lease = await this.read(cluster);
      const spec = lease?.spec ?? {};
      const mine = spec.holderIdentity === this.replicaId;
      if (lease && !mine && this.held.delete(cluster)) {
        this.o.log.warn(
          { cluster, holder: spec.holderIdentity },
          "another replica took over the cluster's owner Lease: no longer serving it",
        );
        return;
      }
      if (lease && !mine && spec.holderIdentity && !preempt && leaseLive(lease)) return;
      const ours = mine && this.held.has(cluster);
      const transitions = (spec.leaseTransitions ?? 0) + (lease && !ours ? 1 : 0);
      const uid = lease ? undefined : await this.o.clusterUid?.(cluster);
      const body: LeaseObject = {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: {
          ...(lease?.metadata ?? {
            name: leaseName(cluster),
            namespace: this.o.namespace,
            labels: {
              "app.kubernetes.io/managed-by": "tether-server",
              [KIND_LABEL]: "owner",
              [CLUSTER_LABEL]: cluster,
            },
            ...(uid
              ? {
                  ownerReferences: [
                    { apiVersion: "tether.io/v1alpha1", kind: "Cluster", name: cluster, uid },
                  ],
                }
              : {}),
          }),
          annotations: withoutHandover({
            ...lease?.metadata.annotations,
            [ADDRESS_ANNOTATION]: this.o.address,
          }),
        },
        spec: {
          holderIdentity: this.replicaId,
          leaseDurationSeconds: Math.ceil(this.durationMs / 1000),
          acquireTime: ours && spec.acquireTime ? spec.acquireTime : microTime(now),
          renewTime: microTime(now),
          leaseTransitions: transitions,
        },
      };
      const answer = lease
        ? await this.o.api.expect<LeaseObject>(
            "PUT",
            `${this.collection}/${leaseName(cluster)}`,
            body,
            [409, 404],
          )
        : await this.o.api.expect<LeaseObject>("POST", this.collection, body, [409]);
      // Written meanwhile by someone else: read again and decide again.
      if (answer.status === 409 || answer.status === 404) continue;
      if (!this.wanted.has(cluster)) return;
      this.pending.delete(cluster);
      this.leases.set(cluster, answer.body);
      if (!ours) this.o.log.info({ cluster, generation: transitions }, "holding the cluster's owner Lease");
      this.held.set(cluster, {
        generation: transitions,
        validUntil: sentAt + (this.durationMs * 2) / 3,
      });
      return;
    }
  }
}

function leaseName(cluster: string): string {
  return `tether-owner-${cluster}`;
}

function leaseLive(lease: LeaseObject): boolean {
  const renewed = Date.parse(lease.spec.renewTime ?? "");
  const duration = (lease.spec.leaseDurationSeconds ?? 0) * 1000;
  return Number.isFinite(renewed) && renewed + duration > Date.now();
}

function withoutHandover(annotations: Record<string, string>): Record<string, string> {
  delete annotations[HANDOVER_ANNOTATION];
  return annotations;
}
