// The Kubernetes-backed Store (`--store kubernetes`): tether-server's state as
// objects in the host cluster, so the server needs no volume and several
// replicas can share it.
//
//   Cluster clusters.tether.io/v1alpha1 (cluster-scoped)   one per member; labels = its labels,
//                                                         metadata.uid = its incarnation
//   Secret    tether-ca (kubernetes.io/tls)                 the CA
//   Secret    tether-serving (kubernetes.io/tls)            the serving certificate
//   Secret    tether-token-<sha256 hex>                     one per token: its record, never the token
//   ConfigMap tether-serials-<cluster>                      issued and revoked serials of one cluster name
//   ConfigMap tether-server                                 the URL `serve` listens at
//   Secret    tether-admin-credential                       the admin credential
//
// Reads come from watch-fed caches (the proxy asks for a cluster on every
// request, the session checker every second), and every write updates the
// cache from the apiserver's answer, so a caller reads its own writes. Writes
// that must not race (consuming a join token, adding a serial) carry the
// resourceVersion they read: a conflict means someone else won.
// Serials live per cluster name, not per cluster object, so that a removed
// cluster's revocations outlive it and one busy cluster's renewals never
// conflict with another's; expired entries are pruned on each write.
import { type KubernetesObject, makeInformer } from "@kubernetes/client-node";
import type { Logger } from "../logger.js";
import {
  CertificateAuthority,
  isValidClusterName,
  type KeyPairPem,
  validateClusterName,
} from "../pki/pki.js";
import type { ClusterStatus, ClusterStatusSink } from "./cluster-status.js";
import { servingCertUsable } from "./file-store.js";
import { type ApiAnswer, KubeApi, KubeApiError, type KubeConnection } from "./kube-api.js";
import {
  checkIsoDate,
  deepFreeze,
  type Frozen,
  normalizeCluster,
  normalizeSerial,
  normalizeToken,
  serialKey,
} from "./records.js";
import {
  type ClusterInput,
  type ClusterRecord,
  EXPIRED_TOKENS_KEPT_MS,
  type ServiceAccess,
  type SessionRecords,
  type Store,
  type TokenRecord,
} from "./state-store.js";

export const DEFAULT_NAMESPACE = "tether-system";
const CLUSTERS_PATH = "/apis/tether.io/v1alpha1/clusters";
const KIND_LABEL = "tether.io/kind";
const CREATED_AT = "tether.io/created-at";
const MANAGED = { "app.kubernetes.io/managed-by": "tether-server" };
const RETRIES = 5;

interface ObjectMeta {
  name: string;
  uid?: string;
  namespace?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  creationTimestamp?: string;
}
interface ClusterObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec: {
    auth: "impersonate" | "passthrough";
    allowedUsers?: string[];
    allowedGroups?: string[];
    services?: Record<string, ServiceAccess>;
  };
  status?: unknown;
}
interface DataObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  type?: string;
  data?: Record<string, string>;
}
interface SerialsDoc {
  issued: Record<string, string>;
  revoked: Record<string, { notAfter: string; revokedAt: string }>;
}

export interface KubeStoreOptions extends KubeConnection {
  /** Where the Secrets and ConfigMaps live. Default tether-system. */
  namespace?: string;
  /** Where broken watches are reported. */
  log?: Logger;
}

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");
const unb64 = (s: string | undefined) =>
  s === undefined ? undefined : Buffer.from(s, "base64").toString("utf8");
const tokenSecretName = (hash: string) => `tether-token-${hash.slice("sha256:".length)}`;
const serialsName = (cluster: string) => `tether-serials-${cluster}`;

function clusterFrom(obj: ClusterObject): ClusterRecord | undefined {
  try {
    return normalizeCluster({
      name: obj.metadata.name,
      auth: obj.spec?.auth,
      labels: obj.metadata.labels ?? {},
      allowedUsers: obj.spec?.allowedUsers ?? [],
      allowedGroups: obj.spec?.allowedGroups ?? [],
      ...(obj.spec?.services === undefined ? {} : { services: obj.spec.services }),
      createdAt:
        obj.metadata.annotations?.[CREATED_AT] ?? obj.metadata.creationTimestamp ?? new Date(0).toISOString(),
      // The apiserver makes a new one whenever the object is created: the incarnation.
      uid: obj.metadata.uid ?? "",
    });
  } catch {
    return undefined; // an object someone edited into nonsense is not a cluster Tether serves
  }
}

function tokenFrom(obj: DataObject): TokenRecord | undefined {
  try {
    return normalizeToken(JSON.parse(unb64(obj.data?.record) ?? "null") as TokenRecord);
  } catch {
    return undefined;
  }
}

function serialsFrom(obj: DataObject | undefined): SerialsDoc {
  const parse = <T>(text: string | undefined): Record<string, T> => {
    try {
      const v = JSON.parse(text ?? "{}");
      return typeof v === "object" && v !== null && !Array.isArray(v) ? v : {};
    } catch {
      return {};
    }
  };
  const data = (obj as { data?: Record<string, string> } | undefined)?.data;
  return { issued: parse(data?.issued), revoked: parse(data?.revoked) };
}

function resourceVersionOf(o: { metadata: ObjectMeta }): bigint | undefined {
  // Opaque by contract; etcd revisions in practice. Unparseable: never treated as stale.
  try {
    return o.metadata.resourceVersion ? BigInt(o.metadata.resourceVersion) : undefined;
  } catch {
    return undefined;
  }
}

export class KubeStore implements Store, ClusterStatusSink {
  readonly namespace: string;
  private readonly clusters = new Map<string, Frozen<ClusterRecord>>();
  private readonly tokens = new Map<string, Frozen<TokenRecord>>();
  private readonly revokedByCluster = new Map<string, Set<string>>();
  /** serial -> cluster, for isRevoked in O(1). */
  private readonly revoked = new Map<string, string>();
  /** Moves whenever a cluster or a revocation changes: see changeMark(). */
  private generation = 0;
  /** Last resourceVersion seen per cluster object: older watch events don't undo newer writes. */
  private readonly clusterVersions = new Map<string, bigint>();
  /** Clusters whose stored status says AgentConnected=True (a previous server may have died). */
  private readonly markedConnected = new Set<string>();
  private readonly informers: { stop(): Promise<void> }[] = [];
  private ca: CertificateAuthority | undefined;
  private closed = false;

  private constructor(
    private readonly api: KubeApi,
    namespace: string,
    private readonly log?: Logger,
  ) {
    this.namespace = namespace;
  }

  /**
   * Connects to the host cluster, checks that the CRD is installed and the
   * namespace exists, and fills the caches. Coded errors say what to do.
   */
  static async open(options: KubeStoreOptions = {}): Promise<KubeStore> {
    const api = new KubeApi(options);
    const store = new KubeStore(api, options.namespace ?? DEFAULT_NAMESPACE, options.log);
    // Fail now, with what to do, rather than serve from empty caches: every
    // list the caches need, and a dry-run create that proves the namespace exists.
    await api.expect("GET", `${CLUSTERS_PATH}?limit=1`);
    await api.expect("GET", `${store.secrets()}?limit=1`);
    await api.expect("GET", `${store.configMaps()}?limit=1`);
    const probe = await api.call("POST", `${store.configMaps()}?dryRun=All`, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { generateName: "tether-probe-", namespace: store.namespace },
    });
    if (probe.status === 404) {
      throw new KubeApiError(
        "ERR_TETHER_KUBE_NAMESPACE",
        `namespace ${store.namespace} does not exist in the host cluster: create it (kubectl create namespace ` +
          `${store.namespace}) or pass --namespace`,
      );
    }
    if (probe.status >= 300) throw api.refused("POST", store.configMaps(), probe);
    await store.startCaches();
    return store;
  }

  /** The host cluster's API, for the owner Leases (ownership.ts). */
  get hostApi(): KubeApi {
    return this.api;
  }

  describe(): string {
    return `kubernetes (namespace ${this.namespace} at ${this.api.server.host})`;
  }

  /** Stops the watches. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.informers.map((i) => i.stop().catch(() => {})));
  }

  // --- caches ---------------------------------------------------------------------------------

  private async startCaches(): Promise<void> {
    await Promise.all([
      this.watch<ClusterObject>(CLUSTERS_PATH, undefined, {
        set: (o) => {
          if (this.stale(o)) return;
          const c = clusterFrom(o);
          if (c) this.cacheCluster(c);
          else this.uncacheCluster(o.metadata.name);
          const conditions = (o.status as { conditions?: { type: string; status: string }[] } | undefined)
            ?.conditions;
          if (conditions?.some((x) => x.type === "AgentConnected" && x.status === "True")) {
            this.markedConnected.add(o.metadata.name);
          } else this.markedConnected.delete(o.metadata.name);
        },
        delete: (o) => {
          if (this.stale(o)) return;
          this.uncacheCluster(o.metadata.name);
          this.markedConnected.delete(o.metadata.name);
        },
      }),
      this.watch<DataObject>(this.secrets(), `${KIND_LABEL}=token`, {
        set: (o) => {
          const r = tokenFrom(o);
          if (r) this.tokens.set(r.hash, deepFreeze(r));
        },
        delete: (o) => {
          const r = tokenFrom(o);
          if (r) this.tokens.delete(r.hash);
        },
      }),
      this.watch<DataObject>(this.configMaps(), `${KIND_LABEL}=serials`, {
        set: (o) => this.cacheSerials(o),
        delete: (o) => this.uncacheSerials(o.metadata.labels?.["tether.io/cluster"] ?? ""),
      }),
    ]);
  }

  private async watch<T extends { metadata: ObjectMeta }>(
    path: string,
    labelSelector: string | undefined,
    on: { set(o: T): void; delete(o: T): void },
  ): Promise<void> {
    const list = async () => {
      const query = labelSelector ? `?labelSelector=${encodeURIComponent(labelSelector)}` : "";
      return (
        await this.api.expect<{ items: T[]; metadata: { resourceVersion?: string } }>("GET", path + query)
      ).body as never;
    };
    const informer = makeInformer<KubernetesObject>(this.api.kubeConfig, path, list, labelSelector);
    informer.on("add", (o) => on.set(o as unknown as T));
    informer.on("update", (o) => on.set(o as unknown as T));
    informer.on("delete", (o) => on.delete(o as unknown as T));
    informer.on("error", (err: unknown) => {
      // The watch broke (apiserver restart, network): start again; the cache keeps serving meanwhile.
      if (this.closed) return;
      this.log?.warn(
        { path, err: (err as Error | undefined)?.message },
        "host cluster watch broke; restarting it",
      );
      setTimeout(() => void informer.start().catch(() => {}), 1_000).unref();
    });
    this.informers.push(informer);
    await informer.start();
  }

  private cacheSerials(o: DataObject): void {
    const cluster = o.metadata.labels?.["tether.io/cluster"];
    if (!cluster) return;
    const serials = new Set(Object.keys(serialsFrom(o).revoked));
    const before = this.revokedByCluster.get(cluster);
    const same = before?.size === serials.size && [...serials].every((s) => before.has(s));
    this.uncacheSerials(cluster);
    this.revokedByCluster.set(cluster, serials);
    for (const s of serials) this.revoked.set(s, cluster);
    // Issuing a certificate rewrites the same object: only a new revocation matters to the session check.
    if (!same) this.generation++;
  }

  private uncacheSerials(cluster: string): void {
    for (const s of this.revokedByCluster.get(cluster) ?? []) this.revoked.delete(s);
    this.revokedByCluster.delete(cluster);
  }

  /** Status updates leave the generation alone: only a new, removed or re-registered cluster moves it. */
  private cacheCluster(c: ClusterRecord): void {
    if (this.clusters.get(c.name)?.uid !== c.uid) this.generation++;
    this.clusters.set(c.name, deepFreeze(c));
  }

  private uncacheCluster(name: string): void {
    if (this.clusters.delete(name)) this.generation++;
  }

  async changeMark(): Promise<string> {
    return String(this.generation);
  }

  /** Whether a cluster object event is older than what this store already knows. */
  private stale(o: { metadata: ObjectMeta }): boolean {
    const known = this.clusterVersions.get(o.metadata.name);
    const rv = resourceVersionOf(o);
    if (rv === undefined || known === undefined || rv >= known) {
      if (rv !== undefined) this.clusterVersions.set(o.metadata.name, rv);
      return false;
    }
    return true;
  }

  private secrets(name?: string): string {
    return `/api/v1/namespaces/${this.namespace}/secrets${name ? `/${name}` : ""}`;
  }

  private configMaps(name?: string): string {
    return `/api/v1/namespaces/${this.namespace}/configmaps${name ? `/${name}` : ""}`;
  }

  private meta(name: string, kind: string, extra: Record<string, string> = {}): ObjectMeta {
    return { name, namespace: this.namespace, labels: { ...MANAGED, [KIND_LABEL]: kind, ...extra } };
  }

  /** GET an object of the namespace; undefined on 404. */
  private async read<T extends DataObject>(path: string): Promise<T | undefined> {
    const answer = await this.api.expect<T>("GET", path, undefined, [404]);
    return answer.status === 404 ? undefined : answer.body;
  }

  /** Creates the object, or returns the one that exists (someone else created it first). */
  private async createOrGet<T extends DataObject>(collection: string, obj: T): Promise<T> {
    const created = await this.api.expect<T>("POST", collection, obj, [409]);
    if (created.status !== 409) return created.body;
    const existing = await this.read<T>(`${collection}/${obj.metadata.name}`);
    if (!existing) return this.createOrGet(collection, obj);
    return existing;
  }

  // --- CA and serving certificate -------------------------------------------------------------

  async loadOrCreateCa(): Promise<CertificateAuthority> {
    if (this.ca) return this.ca;
    let secret = await this.read<DataObject>(this.secrets("tether-ca"));
    if (!secret) {
      const ca = await CertificateAuthority.create();
      secret = await this.createOrGet(this.secrets(), {
        apiVersion: "v1",
        kind: "Secret",
        type: "kubernetes.io/tls",
        metadata: this.meta("tether-ca", "ca"),
        data: { "tls.crt": b64(ca.certPem), "tls.key": b64(ca.keyPem()) },
      });
    }
    this.ca = await CertificateAuthority.load(
      unb64(secret.data?.["tls.crt"]) ?? "",
      unb64(secret.data?.["tls.key"]) ?? "",
    );
    return this.ca;
  }

  async loadOrCreateServingCertificate(names: {
    dnsNames: string[];
    ips: string[];
  }): Promise<KeyPairPem & { keyPem: string }> {
    const ca = await this.loadOrCreateCa();
    for (let attempt = 0; attempt < RETRIES; attempt++) {
      const secret = await this.read<DataObject>(this.secrets("tether-serving"));
      const certPem = unb64(secret?.data?.["tls.crt"]);
      const keyPem = unb64(secret?.data?.["tls.key"]);
      if (certPem && keyPem && servingCertUsable(ca, certPem, keyPem, names)) return { certPem, keyPem };
      const issued = await ca.issueServerCertificate(names);
      const body: DataObject = {
        apiVersion: "v1",
        kind: "Secret",
        type: "kubernetes.io/tls",
        metadata: {
          ...this.meta("tether-serving", "serving"),
          ...(secret ? { resourceVersion: secret.metadata.resourceVersion } : {}),
        },
        data: { "tls.crt": b64(issued.certPem), "tls.key": b64(issued.keyPem!) },
      };
      const answer = secret
        ? await this.api.expect("PUT", this.secrets("tether-serving"), body, [409])
        : await this.api.expect("POST", this.secrets(), body, [409]);
      if (answer.status !== 409) return { certPem: issued.certPem, keyPem: issued.keyPem! };
    }
    throw new KubeApiError(
      "ERR_TETHER_KUBE_CONFLICT",
      "the serving certificate Secret kept changing; try again",
    );
  }

  // --- clusters -------------------------------------------------------------------------------

  async listClusters(): Promise<ClusterRecord[]> {
    return [...this.clusters.values()]
      .map((c) => structuredClone(c) as ClusterRecord)
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async getCluster(name: string): Promise<Frozen<ClusterRecord> | undefined> {
    // Cached records are frozen and replaced, never changed (cacheCluster): no clone per request.
    return this.clusters.get(name);
  }

  private clusterObject(record: ClusterInput, resourceVersion?: string): ClusterObject {
    return {
      apiVersion: "tether.io/v1alpha1",
      kind: "Cluster",
      metadata: {
        name: record.name,
        labels: record.labels,
        annotations: { [CREATED_AT]: record.createdAt },
        ...(resourceVersion ? { resourceVersion } : {}),
      },
      spec: {
        auth: record.auth,
        allowedUsers: record.allowedUsers,
        allowedGroups: record.allowedGroups,
        ...(record.services ? { services: record.services } : {}),
      },
    };
  }

  async addCluster(record: Frozen<ClusterInput>): Promise<boolean> {
    const r = normalizeCluster(record as ClusterInput);
    const answer = await this.api.expect<ClusterObject>("POST", CLUSTERS_PATH, this.clusterObject(r), [409]);
    if (answer.status === 409) return false;
    this.cacheWritten(answer.body);
    return true;
  }

  /** Caches a cluster object the apiserver returned from a write (with its uid). */
  private cacheWritten(o: ClusterObject): void {
    this.remember(o);
    const c = clusterFrom(o);
    if (c) this.cacheCluster(c);
  }

  async putCluster(record: Frozen<ClusterInput>): Promise<void> {
    const r = normalizeCluster(record as ClusterInput);
    for (let attempt = 0; attempt < RETRIES; attempt++) {
      const existing = await this.api.expect<ClusterObject>(
        "GET",
        `${CLUSTERS_PATH}/${r.name}`,
        undefined,
        [404],
      );
      const answer =
        existing.status === 404
          ? await this.api.expect("POST", CLUSTERS_PATH, this.clusterObject(r), [409])
          : await this.api.expect(
              "PUT",
              `${CLUSTERS_PATH}/${r.name}`,
              {
                ...this.clusterObject(r, existing.body.metadata.resourceVersion),
                status: existing.body.status,
              },
              [409],
            );
      if (answer.status !== 409) {
        this.cacheWritten(answer.body as ClusterObject);
        return;
      }
    }
    throw new KubeApiError("ERR_TETHER_KUBE_CONFLICT", `cluster ${r.name} kept changing; try again`);
  }

  async deleteCluster(name: string): Promise<boolean> {
    if (!isValidClusterName(name)) return false;
    const answer = await this.api.expect<ClusterObject>(
      "DELETE",
      `${CLUSTERS_PATH}/${name}`,
      undefined,
      [404],
    );
    if (answer.status !== 404) this.remember(answer.body);
    this.uncacheCluster(name);
    this.markedConnected.delete(name);
    return answer.status !== 404;
  }

  /** ClusterStatusSink: merges `status` into the Cluster's status subresource; false when the cluster is gone. */
  async write(name: string, status: ClusterStatus): Promise<boolean> {
    const answer = await this.api.expect<ClusterObject>(
      "PATCH",
      `${CLUSTERS_PATH}/${name}/status`,
      { status },
      [404],
      "application/merge-patch+json",
    );
    if (answer.status === 404) return false;
    this.remember(answer.body);
    return true;
  }

  /** ClusterStatusSink: clusters whose stored status still says connected. */
  async markedConnectedClusters(): Promise<string[]> {
    return [...this.markedConnected];
  }

  private remember(o: ClusterObject | undefined): void {
    const rv = o && resourceVersionOf(o);
    if (o && rv !== undefined) this.clusterVersions.set(o.metadata.name, rv);
  }

  // --- tokens ---------------------------------------------------------------------------------

  private tokenSecret(r: TokenRecord, resourceVersion?: string): DataObject {
    return {
      apiVersion: "v1",
      kind: "Secret",
      type: "Opaque",
      metadata: {
        ...this.meta(tokenSecretName(r.hash), "token", { "tether.io/token-kind": r.kind }),
        ...(resourceVersion ? { resourceVersion } : {}),
      },
      data: { record: b64(JSON.stringify(r)) },
    };
  }

  async addToken(record: TokenRecord): Promise<void> {
    const r = normalizeToken(record);
    const created = await this.api.expect("POST", this.secrets(), this.tokenSecret(r), [409]);
    if (created.status === 409) {
      throw new KubeApiError("ERR_TETHER_INVALID_RECORD", "a token with this hash already exists");
    }
    this.tokens.set(r.hash, deepFreeze(r));
    await this.pruneExpiredTokens();
  }

  /** Deletes a few token Secrets kept past EXPIRED_TOKENS_KEPT_MS (best effort; tokens are never reused). */
  private async pruneExpiredTokens(): Promise<void> {
    const cutoff = Date.now() - EXPIRED_TOKENS_KEPT_MS;
    const expired = [...this.tokens.values()].filter((t) => Date.parse(t.expiresAt) < cutoff).slice(0, 20);
    for (const t of expired) await this.deleteToken(t.hash).catch(() => false);
  }

  async findToken(
    hash: string,
    options: { includeExpired?: boolean } = {},
  ): Promise<Frozen<TokenRecord> | undefined> {
    const r = this.tokens.get(hash);
    const now = options.includeExpired ? Date.now() - EXPIRED_TOKENS_KEPT_MS : Date.now();
    if (!r || !(Date.parse(r.expiresAt) > now)) return undefined;
    return r;
  }

  async consumeJoinToken(hash: string, cluster: string): Promise<TokenRecord | undefined> {
    if (!/^sha256:[0-9a-f]{64}$/.test(hash)) return undefined;
    // Fresh from the apiserver, not the cache: two servers must not both accept one token.
    const secret = await this.read<DataObject>(this.secrets(tokenSecretName(hash)));
    const r = secret && tokenFrom(secret);
    if (
      !secret ||
      r?.kind !== "join" ||
      r.cluster !== cluster ||
      r.usedAt !== undefined ||
      !(Date.parse(r.expiresAt) > Date.now())
    ) {
      return undefined;
    }
    const used: TokenRecord = { ...r, usedAt: new Date().toISOString() };
    const answer = await this.api.expect(
      "PUT",
      this.secrets(tokenSecretName(hash)),
      this.tokenSecret(used, secret.metadata.resourceVersion),
      [409, 404],
    );
    if (answer.status !== 200) return undefined; // someone else consumed (or deleted) it first
    this.tokens.set(hash, deepFreeze(structuredClone(used)));
    return used;
  }

  async listTokens(): Promise<TokenRecord[]> {
    const now = Date.now();
    return [...this.tokens.values()]
      .filter((r) => Date.parse(r.expiresAt) > now)
      .map((r) => structuredClone(r) as TokenRecord);
  }

  async deleteToken(hash: string): Promise<boolean> {
    if (!/^sha256:[0-9a-f]{64}$/.test(hash)) return false;
    const answer = await this.api.expect("DELETE", this.secrets(tokenSecretName(hash)), undefined, [404]);
    this.tokens.delete(hash);
    return answer.status !== 404;
  }

  // --- certificate serials --------------------------------------------------------------------

  private async updateSerials(cluster: string, change: (doc: SerialsDoc) => void): Promise<void> {
    for (let attempt = 0; attempt < RETRIES; attempt++) {
      const existing = await this.read<DataObject>(this.configMaps(serialsName(cluster)));
      const doc = serialsFrom(existing);
      change(doc);
      const now = Date.now();
      // Expired certificates fail the TLS handshake anyway: forget them.
      for (const [s, notAfter] of Object.entries(doc.issued))
        if (!(Date.parse(notAfter) > now)) delete doc.issued[s];
      for (const [s, r] of Object.entries(doc.revoked))
        if (!(Date.parse(r.notAfter) > now)) delete doc.revoked[s];
      const body: DataObject = {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: {
          ...this.meta(serialsName(cluster), "serials", { "tether.io/cluster": cluster }),
          ...(existing ? { resourceVersion: existing.metadata.resourceVersion } : {}),
        },
        data: { issued: JSON.stringify(doc.issued), revoked: JSON.stringify(doc.revoked) },
      };
      const answer: ApiAnswer<DataObject> = existing
        ? await this.api.expect("PUT", this.configMaps(serialsName(cluster)), body, [409])
        : await this.api.expect("POST", this.configMaps(), body, [409]);
      if (answer.status !== 409) {
        this.cacheSerials(answer.body);
        return;
      }
    }
    throw new KubeApiError(
      "ERR_TETHER_KUBE_CONFLICT",
      `the serials of cluster ${cluster} kept changing; try again`,
    );
  }

  async recordIssued(serial: string, cluster: string, notAfter: string): Promise<void> {
    const s = normalizeSerial(serial);
    validateClusterName(cluster); // as FileStore: ERR_TETHER_INVALID_CLUSTER_NAME
    checkIsoDate("notAfter", notAfter);
    await this.updateSerials(cluster, (doc) => {
      doc.issued[s] = notAfter;
    });
  }

  async revokeCluster(cluster: string): Promise<void> {
    if (!isValidClusterName(cluster)) return; // no certificate names it (recordIssued refuses), as in FileStore
    const revokedAt = new Date().toISOString();
    await this.updateSerials(cluster, (doc) => {
      for (const [s, notAfter] of Object.entries(doc.issued)) {
        doc.revoked[s] = { notAfter, revokedAt };
        delete doc.issued[s];
      }
    });
  }

  async isRevoked(serial: string): Promise<boolean> {
    const s = serialKey(serial);
    return s !== undefined && this.revoked.has(s);
  }

  async sessionRecords(): Promise<SessionRecords> {
    // The caches' maps change under later watch events (their records are replaced, never changed): shallow copies.
    const clusters = new Map(this.clusters);
    const revoked = new Set(this.revoked.keys());
    return {
      cluster: (name) => clusters.get(name),
      isRevoked: (serial) => {
        const s = serialKey(serial);
        return s !== undefined && revoked.has(s);
      },
    };
  }

  // --- server URL and admin credential --------------------------------------------------------

  async serverUrl(): Promise<string | undefined> {
    const cm = await this.read<DataObject>(this.configMaps("tether-server"));
    return cm?.data?.url;
  }

  async recordServerUrl(url: string): Promise<void> {
    const body = {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: this.meta("tether-server", "server"),
      data: { url },
    };
    const created = await this.api.expect("POST", this.configMaps(), body, [409]);
    if (created.status === 409) await this.api.expect("PUT", this.configMaps("tether-server"), body);
  }

  async adminCredential(): Promise<string | undefined> {
    return unb64(
      (await this.read<DataObject>(this.secrets("tether-admin-credential")))?.data?.["credential.json"],
    );
  }

  async saveAdminCredential(text: string, replace?: string): Promise<string> {
    for (let attempt = 0; attempt < RETRIES; attempt++) {
      const existing = await this.read<DataObject>(this.secrets("tether-admin-credential"));
      const current = unb64(existing?.data?.["credential.json"]);
      if (current !== undefined && current !== replace) return current;
      const body: DataObject = {
        apiVersion: "v1",
        kind: "Secret",
        type: "Opaque",
        metadata: {
          ...this.meta("tether-admin-credential", "admin-credential"),
          ...(existing ? { resourceVersion: existing.metadata.resourceVersion } : {}),
        },
        data: { "credential.json": b64(text) },
      };
      const answer = existing
        ? await this.api.expect("PUT", this.secrets("tether-admin-credential"), body, [409])
        : await this.api.expect("POST", this.secrets(), body, [409]);
      if (answer.status !== 409) return text;
    }
    throw new KubeApiError(
      "ERR_TETHER_KUBE_CONFLICT",
      "the admin credential Secret kept changing; try again",
    );
  }
}
