// A Tether server with agents in front of harness clusters, wired the way a
// member cluster runs the agent: a service account allowed only to
// impersonate, its token from a real TokenRequest in a file, the apiserver
// found through KUBERNETES_SERVICE_HOST/PORT.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type AgentMetrics,
  type ExposedService,
  inClusterTarget,
  kubeconfigTarget,
  TetherAgent,
} from "@tether/agent";
import {
  type AuthMode,
  type CertificateAuthority,
  createLogger,
  FileStore,
  issueToken,
  type ServerOptions,
  TetherServer,
} from "@tether/server";
import type { Cluster } from "../kube/index.js";
import { writeKubeconfig } from "../kube/index.js";

/** Short keepalive so tests see a dead agent quickly (liveness, not a timing assertion). */
export const TEST_TUNNEL = { keepAliveInterval: 500, deadPeerTimeout: 2_000 };

export interface Fixture {
  server: TetherServer;
  store: FileStore;
  ca: CertificateAuthority;
  dir: string;
  registerCluster(
    name: string,
    auth?: AuthMode,
    allowed?: { users?: string[]; groups?: string[] },
  ): Promise<void>;
  /**
   * Prepares the member side (namespace, SA that may impersonate, token file) and starts an agent.
   * `credential: "client-certificate"` points the agent at the member's admin kubeconfig instead
   * (a system:masters client certificate), as an agent started with --kubeconfig would be.
   */
  startAgent(
    name: string,
    member: Cluster,
    options?: {
      credential?: "service-account" | "client-certificate";
      metrics?: AgentMetrics;
      /** In-cluster services the agent exposes, as --expose gives them. */
      expose?: ExposedService[];
    },
  ): Promise<TetherAgent>;
  /** A kubeconfig for /clusters/<cluster> with a Tether token for user (scoped to `scope`, default that cluster). */
  userKubeconfig(
    cluster: string,
    user: string,
    groups?: string[],
    scope?: string[],
    ttlMs?: number,
  ): Promise<string>;
  /** A kubeconfig for /clusters/<cluster> carrying a raw bearer token (passthrough) or none. */
  rawKubeconfig(cluster: string, token?: string): Promise<string>;
  stop(): Promise<void>;
}

export async function tokenFor(member: Cluster, namespace: string, sa: string): Promise<string> {
  const res = await member.api<{ status: { token: string } }>(
    "POST",
    `/api/v1/namespaces/${namespace}/serviceaccounts/${sa}/token`,
    { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: { expirationSeconds: 3600 } },
  );
  return res.body.status.token;
}

async function ensure(member: Cluster, path: string, body: { metadata: { name: string } }): Promise<void> {
  await member.api("POST", path, body, [409]);
}

export async function prepareMember(member: Cluster, saDir: string): Promise<NodeJS.ProcessEnv> {
  await ensure(member, "/api/v1/namespaces", { metadata: { name: "tether-system" } });
  await ensure(member, "/api/v1/namespaces/tether-system/serviceaccounts", {
    metadata: { name: "tether-agent" },
  });
  await ensure(member, "/apis/rbac.authorization.k8s.io/v1/clusterroles", {
    metadata: { name: "tether-agent-impersonate" },
    rules: [{ apiGroups: [""], resources: ["users", "groups", "serviceaccounts"], verbs: ["impersonate"] }],
  } as { metadata: { name: string } });
  await ensure(member, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
    metadata: { name: "tether-agent-impersonate" },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "tether-agent-impersonate" },
    subjects: [{ kind: "ServiceAccount", name: "tether-agent", namespace: "tether-system" }],
  } as { metadata: { name: string } });
  await mkdir(saDir, { recursive: true });
  await writeFile(join(saDir, "ca.crt"), member.caPem);
  await writeFile(join(saDir, "token"), await tokenFor(member, "tether-system", "tether-agent"), {
    mode: 0o600,
  });
  const url = new URL(member.server);
  return { KUBERNETES_SERVICE_HOST: url.hostname, KUBERNETES_SERVICE_PORT: url.port };
}

/** The --cluster-domain of fixtures whose kubeconfigs use host routing. */
export const TEST_CLUSTER_DOMAIN = "clusters.tether.test";

/**
 * How the fixture's kubeconfigs name a member: `path` (…/clusters/<name>) or
 * `host` (the server's address with tls-server-name <name>.<cluster domain>,
 * which needs no DNS). TETHER_TEST_ROUTING=host makes `host` the default, so
 * one data-path suite runs in both forms.
 */
export type Routing = "path" | "host";
export const DEFAULT_ROUTING: Routing = process.env.TETHER_TEST_ROUTING === "host" ? "host" : "path";

/** A server on 127.0.0.1 with the test tunnel timing; `options` override any ServerOptions but the store. */
export async function startTether(
  options: Omit<Partial<ServerOptions>, "store"> = {},
  routing: Routing = DEFAULT_ROUTING,
): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), "tether-e2e-"));
  const store = await FileStore.open(join(dir, "state"));
  const log = createLogger({ level: process.env.TETHER_TEST_LOG ?? "silent" });
  const server = await TetherServer.start({
    store,
    host: "127.0.0.1",
    port: 0,
    log,
    tunnel: TEST_TUNNEL,
    ...(routing === "host" ? { clusterDomain: TEST_CLUSTER_DOMAIN } : {}),
    ...options,
  });
  const domain = options.clusterDomain ?? TEST_CLUSTER_DOMAIN;
  const where = (cluster: string) =>
    routing === "host"
      ? { server: server.url, tlsServerName: `${cluster}.${domain}` }
      : { server: `${server.url}/clusters/${cluster}` };
  const ca = server.ca;
  const agents: TetherAgent[] = [];

  const fixture: Fixture = {
    server,
    store,
    ca,
    dir,
    async registerCluster(name, auth = "impersonate", allowed = {}) {
      await store.putCluster({
        name,
        auth,
        labels: {},
        allowedUsers: allowed.users ?? [],
        allowedGroups: allowed.groups ?? [],
        createdAt: new Date().toISOString(),
      });
    },
    async startAgent(name, member, options = {}) {
      const saDir = join(dir, `sa-${name}`);
      const env = await prepareMember(member, saDir);
      const uid = (await store.getCluster(name))?.uid;
      const cert = await ca.issueClusterCertificate(name, uid ? { incarnation: uid } : {});
      await store.recordIssued(cert.serial, name, cert.notAfter.toISOString());
      const agent = new TetherAgent({
        server: server.url,
        caPem: ca.certPem,
        certPem: cert.certPem,
        keyPem: cert.keyPem!,
        target:
          options.credential === "client-certificate"
            ? kubeconfigTarget(member.kubeconfig)
            : inClusterTarget(env, saDir),
        tunnel: TEST_TUNNEL,
        backoff: { baseMs: 100, capMs: 1_000 },
        ...(options.metrics ? { metrics: options.metrics } : {}),
        ...(options.expose ? { expose: options.expose } : {}),
      });
      agents.push(agent);
      agent.start();
      await agent.whenConnected();
      return agent;
    },
    async userKubeconfig(cluster, user, groups = [], scope = [cluster], ttlMs = 3600_000) {
      const { token, hash } = issueToken();
      await store.addToken({
        hash,
        kind: "user",
        user,
        groups,
        clusters: scope,
        expiresAt: new Date(Date.now() + ttlMs).toISOString(),
      });
      return writeKubeconfig(join(dir, `kc-${cluster}-${user}-${hash.slice(7, 15)}`), {
        name: cluster,
        ...where(cluster),
        caPem: ca.certPem,
        token,
      });
    },
    async rawKubeconfig(cluster, token) {
      return writeKubeconfig(join(dir, `kc-raw-${cluster}-${Math.random().toString(36).slice(2)}`), {
        name: cluster,
        ...where(cluster),
        caPem: ca.certPem,
        ...(token ? { token } : {}),
      });
    },
    async stop() {
      await Promise.all(agents.map((a) => a.stop()));
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return fixture;
}

/** On the member, makes the Tether group "admins" (tether:admins there) cluster-admin. */
export async function bindTetherAdmins(member: Cluster): Promise<void> {
  await member.api(
    "POST",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    {
      metadata: { name: "tether-admins" },
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "cluster-admin" },
      subjects: [{ apiGroup: "rbac.authorization.k8s.io", kind: "Group", name: "tether:admins" }],
    },
    [409],
  );
}

/** Polls `cond` until true; the limit is a liveness bound, not a performance assertion. Resolves with the ms it took. */
export async function until(
  what: string,
  cond: () => Promise<boolean> | boolean,
  limitMs = 30_000,
): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < limitMs) {
    if (await cond()) return Date.now() - start;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not within ${limitMs}ms`);
}
