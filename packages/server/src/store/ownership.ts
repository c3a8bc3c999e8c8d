// Which tether-server replica holds each member cluster's tunnel, in the
// store's namespace of the host cluster, as coordination.k8s.io/v1 Leases of
// two kinds:
//
//   tether-replica-<replica>  one per replica, renewed every third of the lease
//                             duration: the replica is alive (holder = its id).
//   tether-owner-<cluster>    one per connected cluster: holder = the replica
//                             that holds the cluster's tunnel, its address in
//                             an annotation, leaseTransitions the generation.
//                             Written only when it changes hands (claim,
//                             takeover, release), never renewed.
//
// Idle, a replica writes once per renew interval whatever the number of its
// clusters (the kubelets' node Leases with the pods' records beside them, not
// a Lease per pod). A takeover is still one compare-and-swap on one small
// object (resourceVersion precondition on every write), never a
// read-modify-write of a list another replica is rewriting.
//
// Fencing. A replica serves a cluster only while it holds the session, the
// cluster's owner record names it under the generation it wrote, and its own
// monotonic clock says its replica Lease's last successful renewal is recent
// (the renewal's start + two thirds of the lease duration: the last third is
// slack for the others' clocks). A replica paused past that (SIGSTOP, a long
// GC, a frozen VM) stops serving before it can learn anything; when its next
// renewal succeeds after such a lapse it lists the owner records again before
// it serves (the watch may have missed what changed meanwhile), and drops
// every cluster whose record another replica wrote.
//
// Another replica takes a cluster over
//   - when an agent session of the cluster starts on it (the agent's newest
//     connection is where its tunnel is): a new generation at once;
//   - when the owner released the record (its last session ended, or it
//     drains), or its replica Lease says it resigned;
//   - when it holds a session of the cluster and the owner's replica Lease has
//     expired as this replica observed it: its resourceVersion unchanged for a
//     full lease duration on this replica's monotonic clock (the kubelet's and
//     leader election's rule, independent of wall clocks). Before taking any
//     record over it fences the owner: a compare-and-swap of the owner's
//     replica Lease at the resourceVersion it watched expire, clearing its
//     holder. An owner that comes back then fails its next renewal on the
//     resourceVersion, drops everything it held and claims again only what
//     its sessions want, as a new generation; an owner whose renewal landed
//     first makes the fence fail, and nothing is taken.
// The forwarded hop names the holder and generation it routed to; the owner
// refuses a hop whose generation is not the one it holds.
//
// Routing reads a watch-fed cache of both kinds: no request reads the host
// cluster. A stale cache entry costs one refused hop (503), never a request
// served by a replica that does not hold the cluster.
import { performance } from "node:perf_hooks";
import { type KubernetesObject, makeInformer } from "@kubernetes/client-node";
import type { Logger } from "../logger.js";
import type { KubeApi } from "./kube-api.js";

export const DEFAULT_LEASE_DURATION_MS = 30_000;
const ADDRESS_ANNOTATION = "tether.io/replica-address";
/** Set by a draining owner that gave the record up: until when the others may wait for the next owner. */
const HANDOVER_ANNOTATION = "tether.io/handover-until";
/** Set on a replica Lease by the replica that found it expired and fenced it. */
const FENCED_ANNOTATION = "tether.io/fenced-by";
/**
 * On an owner record: its holder is alive while its replica Lease is. Such a record's own duration is
 * long, so that a replica of an older version (which renewed each record and read its renewTime) does
 * not take it for expired during a rolling upgrade.
 */
const ALIVE_WHILE_ANNOTATION = "tether.io/alive-while";
const RECORD_DURATION_SECONDS = 10 * 365 * 86_400;
const KIND_LABEL = "tether.io/kind";
const CLUSTER_LABEL = "tether.io/cluster";
const REPLICA_LABEL = "tether.io/replica";
const RETRIES = 5;
/** A replica Lease unrenewed this long (by its renewTime) belongs to a replica that is gone: deleted. */
export const STALE_REPLICA_MS = 3_600_000;

export interface Owner {
  replica: string;
  /** https://host:port of the owner's replica listener. */
  address: string;
  generation: number;
}

export interface LeaseObject {
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

/** The watch of both kinds of Lease; the default is an informer on the host cluster. */
export type LeaseWatch = (on: {
  set(lease: LeaseObject): void;
  delete(lease: LeaseObject): void;
  /** The watch broke and is being restarted: events may have been missed. */
  broke(): void;
}) => { start(): Promise<void>; stop(): Promise<void> };

interface Held {
  generation: number;
  resourceVersion: string;
}

/** Another replica's Lease as this replica saw it, on this replica's clock. */
interface Seen {
  lease: LeaseObject;
  /** now() when this resourceVersion was first seen. */
  at: number;
}

export interface OwnershipOptions {
  api: Pick<KubeApi, "expect">;
  /** Where the watch comes from: an informer over `api`'s kubeconfig unless given (tests). */
  kube?: Pick<KubeApi, "kubeConfig">;
  watch?: LeaseWatch;
  namespace: string;
  replicaId: string;
  /** This replica's listener for forwarded requests, as the others dial it. */
  address: string;
  /** Default 30 s; the replica Lease is renewed every third of it. */
  leaseDurationMs?: number;
  /** The uid of a cluster's Cluster object: the owner record is garbage-collected with it. */
  clusterUid?: (cluster: string) => Promise<string | undefined>;
  log: Logger;
  /** For tests: the monotonic clock, the wall clock, and whether renewals run on a timer (else tick()). */
  now?: () => number;
  wallNow?: () => number;
  timers?: boolean;
}

/** Kubernetes MicroTime: RFC 3339 with microseconds. */
const microTime = (ms: number) => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");

export class Ownership {
  readonly replicaId: string;
  private readonly durationMs: number;
  private readonly now: () => number;
  private readonly wallNow: () => number;
  /**
   * now() until when a cluster this replica resigned is changing hands, as
   * its own view: from the moment it stops holding it, before its release
   * is written and watched back. A request it still receives meanwhile (a
   * balancer's, during --shutdown-delay) waits for the next owner rather
   * than find neither a holder nor a handover mark (503 "no connected agent").
   */
  private readonly handingOver = new Map<string, number>();
  /** now() until which this replica may serve what it holds: its last renewal's start + 2/3 of the duration. */
  private liveUntil = Number.NEGATIVE_INFINITY;
  /** This replica's own Lease as last written or read. */
  private mine: LeaseObject | undefined;
  /** The owner records must be listed again before the next renewal lets this replica serve. */
  private verifyNeeded = false;
  private readonly held = new Map<string, Held>();
  /** Clusters with a session here: their record is claimed, or waited for. */
  private readonly wanted = new Set<string>();
  /** Wanted clusters whose claim has not been written yet (the host cluster failed): the next tick preempts for them. */
  private readonly pending = new Set<string>();
  /** The watch-fed view of every owner record, for routing. */
  private readonly records = new Map<string, LeaseObject>();
  /** The watch-fed view of the other replicas' Leases. */
  private readonly replicas = new Map<string, Seen>();
  /** now() when the watch last (re)started: a holder with no replica Lease since then a full duration has none. */
  private watchSince = 0;
  private timer: NodeJS.Timeout | undefined;
  private watch: { start(): Promise<void>; stop(): Promise<void> } | undefined;
  private closed = false;
  private ticking: Promise<void> | undefined;
  /** Per cluster, the claim, takeover or release in flight: one at a time. */
  private readonly busy = new Map<string, Promise<void>>();

  constructor(private readonly o: OwnershipOptions) {
    this.replicaId = o.replicaId;
    this.durationMs = o.leaseDurationMs ?? DEFAULT_LEASE_DURATION_MS;
    this.now = o.now ?? (() => performance.now());
    this.wallNow = o.wallNow ?? Date.now;
  }

  private get collection(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${this.o.namespace}/leases`;
  }

  private get ownName(): string {
    return `tether-replica-${this.replicaId}`;
  }

  /** Writes this replica's Lease, then starts the watch the routing reads and the renewals. */
  async start(): Promise<void> {
    await this.renew();
    const on = {
      set: (lease: LeaseObject) => this.observe(lease, false),
      delete: (lease: LeaseObject) => this.observe(lease, true),
      broke: () => {
        this.verifyNeeded = true;
      },
    };
    this.watch = (this.o.watch ?? this.informer.bind(this))(on);
    await this.watch.start();
    this.watchSince = this.now();
    if (this.o.timers !== false) {
      this.timer = setInterval(() => void this.tick(), this.durationMs / 3);
      this.timer.unref();
    }
  }

  private informer(on: Parameters<LeaseWatch>[0]): ReturnType<LeaseWatch> {
    const kube = this.o.kube ?? (this.o.api as KubeApi);
    const selector = `${KIND_LABEL} in (owner,replica)`;
    const path = this.collection;
    const list = async () =>
      (await this.o.api.expect("GET", `${path}?labelSelector=${encodeURIComponent(selector)}`)).body as never;
    const informer = makeInformer<KubernetesObject>(kube.kubeConfig, path, list, selector);
    informer.on("add", (o) => on.set(o as unknown as LeaseObject));
    informer.on("update", (o) => on.set(o as unknown as LeaseObject));
    informer.on("delete", (o) => on.delete(o as unknown as LeaseObject));
    informer.on("error", (err: unknown) => {
      if (this.closed) return;
      on.broke();
      this.o.log.warn({ err: (err as Error | undefined)?.message }, "owner Lease watch broke; restarting it");
      setTimeout(() => {
        this.watchSince = this.now();
        void informer.start().catch(() => {});
      }, 1_000).unref();
    });
    return informer;
  }

  /** One renewal of this replica's Lease, then the takeovers its wanted clusters may need. */
  tick(): Promise<void> {
    if (this.ticking) return this.ticking;
    this.ticking = (async () => {
      try {
        await this.renew();
      } catch (err) {
        this.o.log.warn({ err: (err as Error).message }, "replica Lease renewal failed");
      }
      for (const cluster of this.wanted) {
        if (this.held.has(cluster) || this.busy.has(cluster)) continue;
        void this.serial(cluster, () => this.acquire(cluster, this.pending.has(cluster)));
      }
      await this.forgetGone().catch(() => {});
    })().finally(() => {
      this.ticking = undefined;
    });
    return this.ticking;
  }

  /** Whether this replica may serve `cluster` now (and, given one, under that generation). */
  holds(cluster: string, generation?: number): boolean {
    const h = this.held.get(cluster);
    if (!h || this.now() >= this.liveUntil) return false;
    return generation === undefined || generation === h.generation;
  }

  /** The generation this replica holds `cluster` under, while it holds it. */
  generation(cluster: string): number | undefined {
    return this.holds(cluster) ? this.held.get(cluster)?.generation : undefined;
  }

  /** Another live replica that holds `cluster`, by the watched Leases. */
  owner(cluster: string): Owner | undefined {
    const record = this.records.get(cluster);
    const holder = record?.spec.holderIdentity;
    const address = record?.metadata.annotations?.[ADDRESS_ANNOTATION];
    if (!record || !holder || holder === this.replicaId || !address) return undefined;
    const seen = this.replicas.get(holder);
    // A holder with no replica Lease is of a version that renewed its records instead (a rolling upgrade).
    const live = seen
      ? this.replicaLive(holder, seen)
      : !record.metadata.annotations?.[ALIVE_WHILE_ANNOTATION] && leaseLive(record, this.wallNow());
    if (!live) return undefined;
    return { replica: holder, address, generation: record.spec.leaseTransitions ?? 0 };
  }

  /**
   * A session for `cluster` started here: take the record, from another
   * holder too — the agent's newest connection is where its tunnel is.
   */
  claim(cluster: string): Promise<void> {
    this.handingOver.delete(cluster);
    this.wanted.add(cluster);
    this.pending.add(cluster);
    return this.serial(cluster, () => this.acquire(cluster, true));
  }

  /** The last session for `cluster` here ended: give the record up so the next owner need not wait. */
  release(cluster: string, handover = false): Promise<void> {
    this.wanted.delete(cluster);
    this.pending.delete(cluster);
    if (handover && this.held.has(cluster)) this.handingOver.set(cluster, this.now() + this.durationMs);
    return this.serial(cluster, async () => {
      const h = this.held.get(cluster);
      this.held.delete(cluster);
      if (!h || this.wanted.has(cluster)) return;
      let record = this.records.get(cluster);
      for (let attempt = 0; attempt < RETRIES; attempt++) {
        if (record?.spec.holderIdentity !== this.replicaId) return;
        const body = structuredClone(record);
        delete body.spec.holderIdentity;
        if (handover) {
          body.metadata.annotations = {
            ...body.metadata.annotations,
            [HANDOVER_ANNOTATION]: new Date(this.wallNow() + this.durationMs).toISOString(),
          };
        }
        const answer = await this.o.api.expect<LeaseObject>(
          "PUT",
          `${this.collection}/${body.metadata.name}`,
          body,
          [404, 409],
        );
        if (answer.status === 404) return;
        if (answer.status !== 409) {
          this.remember(answer.body);
          return;
        }
        record = await this.readRecord(cluster);
      }
    });
  }

  /**
   * A graceful stop: give every record up before the agents are sent go-away,
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
    if (this.owner(cluster) || this.holds(cluster)) return false;
    const mine = this.handingOver.get(cluster);
    if (mine !== undefined && this.now() < mine) return true;
    const record = this.records.get(cluster);
    if (!record) return false;
    const until = Date.parse(record.metadata.annotations?.[HANDOVER_ANNOTATION] ?? "");
    return Number.isFinite(until) && this.wallNow() < until;
  }

  /** How long a Lease lasts unrenewed: the bound of a wait for an owner. */
  get leaseDurationMs(): number {
    return this.durationMs;
  }

  /** Gives every record up, then this replica's Lease (the others need not wait for it to expire). */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await Promise.all([...this.wanted].map((c) => this.release(c).catch(() => {})));
    await this.ticking?.catch(() => {});
    const mine = this.mine;
    if (mine?.spec.holderIdentity === this.replicaId) {
      const body = structuredClone(mine);
      delete body.spec.holderIdentity;
      await this.o.api
        .expect("PUT", `${this.collection}/${this.ownName}`, body, [404, 409])
        .catch(() => undefined);
    }
    await this.watch?.stop().catch(() => {});
  }

  // --- this replica's Lease -------------------------------------------------------------------

  /**
   * Renews this replica's Lease; after a lapse (or a broken watch) lists the
   * owner records before it extends the time this replica may serve.
   */
  private async renew(): Promise<void> {
    const sentAt = this.now();
    const lapsed = sentAt >= this.liveUntil;
    for (let attempt = 0; attempt < RETRIES && !this.closed; attempt++) {
      const current = this.mine;
      const wall = this.wallNow();
      const annotations: Record<string, string> = {
        ...current?.metadata.annotations,
        [ADDRESS_ANNOTATION]: this.o.address,
      };
      delete annotations[FENCED_ANNOTATION];
      const body: LeaseObject = {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: {
          name: this.ownName,
          namespace: this.o.namespace,
          labels: {
            "app.kubernetes.io/managed-by": "tether-server",
            [KIND_LABEL]: "replica",
            [REPLICA_LABEL]: this.replicaId,
          },
          annotations,
          ...(current?.metadata.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}),
        },
        spec: {
          holderIdentity: this.replicaId,
          leaseDurationSeconds: Math.ceil(this.durationMs / 1000),
          acquireTime:
            current?.spec.holderIdentity === this.replicaId && current.spec.acquireTime
              ? current.spec.acquireTime
              : microTime(wall),
          renewTime: microTime(wall),
          leaseTransitions: current?.spec.leaseTransitions ?? 0,
        },
      };
      const answer = current
        ? await this.o.api.expect<LeaseObject>("PUT", `${this.collection}/${this.ownName}`, body, [404, 409])
        : await this.o.api.expect<LeaseObject>("POST", this.collection, body, [409]);
      if (answer.status === 409 || answer.status === 404) {
        // Only a replica that watched this one expire writes its Lease (the fence), or this id's previous
        // process left it: nothing held before stays held.
        if (current) this.fenced("another replica fenced this replica's Lease");
        this.mine = await this.read(this.ownName);
        continue;
      }
      this.mine = answer.body;
      if ((lapsed || this.verifyNeeded) && this.held.size > 0) await this.verify();
      this.verifyNeeded = false;
      this.liveUntil = sentAt + (this.durationMs * 2) / 3;
      return;
    }
  }

  /** Keeps only the held clusters whose record, freshly listed, still names this replica and generation. */
  private async verify(): Promise<void> {
    const selector = encodeURIComponent(`${KIND_LABEL}=owner`);
    const answer = await this.o.api.expect<{ items: LeaseObject[] }>(
      "GET",
      `${this.collection}?labelSelector=${selector}`,
    );
    const fresh = new Map<string, LeaseObject>();
    for (const lease of answer.body.items ?? []) {
      const cluster = lease.metadata.labels?.[CLUSTER_LABEL];
      if (cluster) fresh.set(cluster, lease);
    }
    for (const [cluster, h] of this.held) {
      const record = fresh.get(cluster);
      if (record) this.remember(record);
      if (
        record?.spec.holderIdentity === this.replicaId &&
        (record.spec.leaseTransitions ?? 0) === h.generation
      )
        continue;
      this.held.delete(cluster);
      this.o.log.warn(
        { cluster, holder: record?.spec.holderIdentity },
        "the cluster's owner record changed while this replica was away: no longer serving it",
      );
    }
  }

  private fenced(why: string): void {
    if (this.held.size > 0)
      this.o.log.warn({ clusters: this.held.size }, `${why}: no longer serving what it held`);
    this.held.clear();
  }

  // --- the others' Leases ---------------------------------------------------------------------

  private observe(lease: LeaseObject, deleted: boolean): void {
    const kind = lease.metadata.labels?.[KIND_LABEL];
    if (kind === "owner") this.observeRecord(lease, deleted);
    else if (kind === "replica") this.observeReplica(lease, deleted);
  }

  private observeRecord(lease: LeaseObject, deleted: boolean): void {
    const cluster = lease.metadata.labels?.[CLUSTER_LABEL];
    if (!cluster) return;
    const known = this.records.get(cluster);
    // A delete carries the object's last version; anything else must be later than what is known.
    if (known && (deleted ? newer(known, lease) : !newer(lease, known))) return;
    if (deleted) this.records.delete(cluster);
    else this.records.set(cluster, lease);
    if (this.held.has(cluster) && (deleted || lease.spec.holderIdentity !== this.replicaId)) {
      this.held.delete(cluster);
      this.o.log.warn(
        { cluster, holder: lease.spec.holderIdentity },
        "another replica took over the cluster's owner record: no longer serving it",
      );
    }
    // Released (a drain, the owner's last session ended): a session here takes it now.
    if (this.wanted.has(cluster) && !this.held.has(cluster) && (deleted || !lease.spec.holderIdentity))
      this.takeSoon(cluster);
  }

  private observeReplica(lease: LeaseObject, deleted: boolean): void {
    const id = lease.metadata.labels?.[REPLICA_LABEL];
    if (!id) return;
    if (id === this.replicaId) {
      // Fenced, seen before the next renewal can say so.
      if (!deleted && lease.spec.holderIdentity !== this.replicaId && this.mine && newer(lease, this.mine))
        this.fenced("another replica fenced this replica's Lease");
      return;
    }
    const seen = this.replicas.get(id);
    if (deleted) {
      this.replicas.delete(id);
      return;
    }
    if (seen && !newer(lease, seen.lease)) return;
    this.replicas.set(id, { lease, at: this.now() });
    if (lease.spec.holderIdentity !== id) {
      // It resigned or was fenced: a session here takes what it held.
      for (const cluster of this.wanted)
        if (!this.held.has(cluster) && this.records.get(cluster)?.spec.holderIdentity === id)
          this.takeSoon(cluster);
    }
  }

  private takeSoon(cluster: string): void {
    if (this.closed || this.busy.has(cluster)) return;
    void this.serial(cluster, () => this.acquire(cluster, this.pending.has(cluster)));
  }

  /**
   * Deletes the Leases of replicas gone for STALE_REPLICA_MS (with pod names
   * as ids, each rollout leaves some), at the resourceVersion seen: one that
   * came back meanwhile keeps its Lease, and one that comes back later finds
   * it gone and starts again with nothing held.
   */
  private async forgetGone(): Promise<void> {
    const wall = this.wallNow();
    for (const [id, seen] of this.replicas) {
      const renewed = Date.parse(seen.lease.spec.renewTime ?? seen.lease.spec.acquireTime ?? "");
      if (Number.isFinite(renewed) && wall - renewed < STALE_REPLICA_MS) continue;
      if (this.now() - seen.at < this.durationMs) continue;
      const answer = await this.o.api.expect(
        "DELETE",
        `${this.collection}/${seen.lease.metadata.name}`,
        {
          apiVersion: "v1",
          kind: "DeleteOptions",
          preconditions: { resourceVersion: seen.lease.metadata.resourceVersion },
        },
        [404, 409],
      );
      if (answer.status !== 409) this.replicas.delete(id);
    }
  }

  /** Whether `id` is alive for routing: its Lease renewed within a duration, on this clock and by its renewTime. */
  private replicaLive(id: string, seen: Seen): boolean {
    return (
      seen.lease.spec.holderIdentity === id &&
      this.now() - seen.at < this.durationMs &&
      leaseLive(seen.lease, this.wallNow())
    );
  }

  /** Whether `id`'s records may be taken over: it resigned, or its Lease went unrenewed a full duration here. */
  private replicaExpired(id: string): boolean {
    const seen = this.replicas.get(id);
    if (!seen) return this.now() - this.watchSince >= this.durationMs;
    return seen.lease.spec.holderIdentity !== id || this.now() - seen.at >= this.durationMs;
  }

  /**
   * Makes sure `id` cannot renew its way back into what it held: a
   * compare-and-swap of its Lease at the resourceVersion watched expire.
   * False when it renewed first (it is alive: take nothing).
   */
  private async fence(id: string): Promise<boolean> {
    const seen = this.replicas.get(id);
    if (seen && seen.lease.spec.holderIdentity !== id) return true; // resigned or fenced already
    const name = seen?.lease.metadata.name ?? `tether-replica-${id}`;
    const body: LeaseObject = seen
      ? structuredClone(seen.lease)
      : {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: {
            name,
            namespace: this.o.namespace,
            labels: {
              "app.kubernetes.io/managed-by": "tether-server",
              [KIND_LABEL]: "replica",
              [REPLICA_LABEL]: id,
            },
          },
          spec: {},
        };
    delete body.spec.holderIdentity;
    body.metadata.annotations = { ...body.metadata.annotations, [FENCED_ANNOTATION]: this.replicaId };
    const answer = seen
      ? await this.o.api.expect<LeaseObject>("PUT", `${this.collection}/${name}`, body, [404, 409])
      : await this.o.api.expect<LeaseObject>("POST", this.collection, body, [409]);
    if (answer.status === 404) return true; // gone: its renewal fails the same way
    if (answer.status === 409) {
      const now = await this.read(name);
      if (now) this.observeReplica(now, false);
      return false;
    }
    this.observeReplica(answer.body, false);
    this.o.log.warn({ replica: id }, "fenced a replica whose Lease expired: taking over its clusters");
    return true;
  }

  // --- owner records --------------------------------------------------------------------------

  private serial(cluster: string, work: () => Promise<void>): Promise<void> {
    const previous = this.busy.get(cluster) ?? Promise.resolve();
    const next = previous.then(work, work).catch((err: Error) => {
      this.o.log.warn({ cluster, err: err.message }, "owner record update failed");
    });
    this.busy.set(cluster, next);
    void next.then(() => {
      if (this.busy.get(cluster) === next) this.busy.delete(cluster);
    });
    return next;
  }

  private async read(name: string): Promise<LeaseObject | undefined> {
    const answer = await this.o.api.expect<LeaseObject>(
      "GET",
      `${this.collection}/${name}`,
      undefined,
      [404],
    );
    return answer.status === 404 ? undefined : answer.body;
  }

  private async readRecord(cluster: string): Promise<LeaseObject | undefined> {
    const record = await this.read(recordName(cluster));
    if (record) this.remember(record);
    else this.records.delete(cluster);
    return record;
  }

  /** Caches a record read or written, unless the watch already brought a newer one. */
  private remember(record: LeaseObject): void {
    const cluster = record.metadata.labels?.[CLUSTER_LABEL];
    if (!cluster) return;
    const known = this.records.get(cluster);
    if (!known || newer(record, known)) this.records.set(cluster, record);
  }

  /**
   * Writes the record naming this replica, from the cached one (a conflict
   * reads it again). Without `preempt` a record another live replica holds is
   * left to it, and one whose holder expired is taken only once that holder
   * is fenced; a record another replica took from this one is never taken
   * back unless a new session here claims it.
   */
  private async acquire(cluster: string, preempt: boolean): Promise<void> {
    let record = this.records.get(cluster);
    for (let attempt = 0; attempt < RETRIES && this.wanted.has(cluster) && !this.closed; attempt++) {
      const spec = record?.spec ?? {};
      const holder = spec.holderIdentity;
      const mine = holder === this.replicaId;
      if (record && !mine && this.held.delete(cluster)) {
        this.o.log.warn(
          { cluster, holder },
          "another replica took over the cluster's owner record: no longer serving it",
        );
        if (!preempt) return;
      }
      if (mine && this.held.get(cluster)?.resourceVersion === record?.metadata.resourceVersion) {
        this.pending.delete(cluster);
        return;
      }
      if (!preempt && record && holder && !mine) {
        if (!this.replicaExpired(holder) || !(await this.fence(holder))) return;
      }
      const wall = this.wallNow();
      const transitions = (spec.leaseTransitions ?? 0) + (record ? 1 : 0);
      const uid = record ? undefined : await this.o.clusterUid?.(cluster);
      const body: LeaseObject = {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: {
          ...(record?.metadata ?? {
            name: recordName(cluster),
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
            ...record?.metadata.annotations,
            [ADDRESS_ANNOTATION]: this.o.address,
            [ALIVE_WHILE_ANNOTATION]: "replica-lease",
          }),
        },
        spec: {
          holderIdentity: this.replicaId,
          leaseDurationSeconds: RECORD_DURATION_SECONDS,
          acquireTime: microTime(wall),
          renewTime: microTime(wall),
          leaseTransitions: transitions,
        },
      };
      const answer = record
        ? await this.o.api.expect<LeaseObject>(
            "PUT",
            `${this.collection}/${recordName(cluster)}`,
            body,
            [409, 404],
          )
        : await this.o.api.expect<LeaseObject>("POST", this.collection, body, [409]);
      // Written meanwhile by someone else (or the cache was behind): read again and decide again.
      if (answer.status === 409 || answer.status === 404) {
        record = await this.readRecord(cluster);
        continue;
      }
      this.remember(answer.body);
      if (!this.wanted.has(cluster)) return;
      // The watch may already have brought a later write of another replica's.
      const latest = this.records.get(cluster);
      if (latest && newer(latest, answer.body)) {
        record = latest;
        continue;
      }
      this.pending.delete(cluster);
      this.o.log.info({ cluster, generation: transitions }, "holding the cluster's owner record");
      this.held.set(cluster, {
        generation: transitions,
        resourceVersion: answer.body.metadata.resourceVersion ?? "",
      });
      return;
    }
  }
}

function recordName(cluster: string): string {
  return `tether-owner-${cluster}`;
}

/** By its renewTime and duration on the wall clock. */
function leaseLive(lease: LeaseObject, now: number): boolean {
  const renewed = Date.parse(lease.spec.renewTime ?? "");
  const duration = (lease.spec.leaseDurationSeconds ?? 0) * 1000;
  return Number.isFinite(renewed) && renewed + duration > now;
}

/** Whether `a` is a later version of the object than `b`: resourceVersions are etcd revisions in practice. */
function newer(a: LeaseObject, b: LeaseObject): boolean {
  try {
    return BigInt(a.metadata.resourceVersion ?? "0") > BigInt(b.metadata.resourceVersion ?? "0");
  } catch {
    return a.metadata.resourceVersion !== b.metadata.resourceVersion;
  }
}

function withoutHandover(annotations: Record<string, string>): Record<string, string> {
  delete annotations[HANDOVER_ANNOTATION];
  return annotations;
}
