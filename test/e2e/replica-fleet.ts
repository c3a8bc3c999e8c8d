// Three tether-server replicas on the Kubernetes store of a real host
// cluster, behind HAProxy as a Service would put them, and two real members
// (m1, m2, each with a pod "box") whose agents dial the balancer: the setup
// of the replica tests (replicas.test.ts, rolling-restart.test.ts).
import { cp, mkdir, writeFile } from "node:fs/promises";
import { type Agent, request } from "node:https";
import { join } from "node:path";
import { CertificateAuthority, runCliCaptured } from "@tether/server";
import type { Test } from "tap";
import { type Cluster, freePort, startClusters } from "../kube/index.js";
import { ManagedProcess } from "../kube/processes.js";
import { bindTetherAdmins, prepareMember, until } from "./fixture.js";
import { startHaproxy } from "./haproxy.js";
import { AGENT_BIN, FAST_TIMING, SERVER_BIN } from "./tether-processes.js";

const cli = (...args: string[]) => runCliCaptured(args);
const root = new URL("../../", import.meta.url).pathname;
export const NS = "tether-system";
export const LEASE_SECONDS = 3;

export interface Replica {
  id: string;
  port: number;
  replicaPort: number;
  url: string;
  proc?: ManagedProcess;
}

export interface Lease {
  spec?: { holderIdentity?: string; leaseTransitions?: number };
}

/** What one GET got: its status code (0: no answer) and, when not 200, what it said or why it failed. */
export interface Outcome {
  code: number;
  what: string;
}

/**
 * One GET, a new connection unless `agent` is given. Each call returns its
 * own outcome: a failure record must hold that request's error, not the last
 * one any concurrent call saw (a readiness poll's ECONNREFUSED once was
 * reported as a GET loop's failure that way).
 */
export function get(url: string, o: { ca?: string; token?: string; agent?: Agent } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (outcome: Outcome) => {
      if (settled) return;
      settled = true;
      resolve(outcome);
    };
    const req = request(
      url,
      {
        ...(o.ca ? { ca: o.ca } : { rejectUnauthorized: false }),
        agent: o.agent ?? false,
        timeout: 5_000,
        headers: o.token ? { authorization: `Bearer ${o.token}` } : {},
      },
      (res) => {
        let body = "";
        res.on("data", (c: Buffer) => {
          if (body.length < 300) body += c.toString();
        });
        res.on("end", () => {
          const code = res.statusCode ?? 0;
          settle({ code, what: code === 200 ? "" : `${code} ${body.slice(0, 200)}` });
        });
        res.on("error", (err: NodeJS.ErrnoException) =>
          settle({ code: 0, what: `response: ${err.code ?? ""} ${err.message}` }),
        );
      },
    );
    req.on("timeout", () => req.destroy(new Error("no answer within 5 s")));
    req.on("error", (err: NodeJS.ErrnoException) =>
      settle({ code: 0, what: `${err.code ? `${err.code}: ` : ""}${err.message}` }),
    );
    req.end();
  });
}

/** The status code of a GET (0: no answer), a new connection unless `agent` is given. */
export async function status(
  url: string,
  o: { ca?: string; token?: string; agent?: Agent } = {},
): Promise<number> {
  return (await get(url, o)).code;
}

export const median = (xs: number[]) =>
  [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

export interface FleetOptions {
  /** The servers' dead-peer timeout in seconds (long: a paused owner keeps its agent session). */
  serverDeadPeerSeconds?: number;
  /** More `serve` flags. */
  serverArgs?: string[];
  /** More tether-agent flags. */
  agentArgs?: string[];
  /** More `cluster add` flags for every member (e.g. --allow-user). */
  clusterAddArgs?: string[];
}

export interface Fleet {
  host: Cluster;
  members: Record<string, Cluster>;
  m1: Cluster;
  m2: Cluster;
  dir: string;
  replicas: Replica[];
  lbUrl: string;
  ca: CertificateAuthority;
  tokens: Record<string, string>;
  kubeconfigs: Record<string, string>;
  agents: Record<string, ManagedProcess>;
  /** (Re)starts a replica on its ports and waits for its /readyz. */
  startReplica(r: Replica): Promise<void>;
  startAgent(cluster: string, server: string, stateDir: string, deadPeer?: number): ManagedProcess;
  leaseOf(cluster: string): Promise<Lease["spec"]>;
  holderOf(cluster: string): Promise<string | undefined>;
  agentConnected(cluster: string): Promise<string | undefined>;
  /** A kubeconfig file for `cluster` that talks to replica `r` directly. */
  kubeconfigVia(cluster: string, r: Replica): Promise<string>;
  byId(id: string | undefined): Replica | undefined;
  notOwner(cluster: string): Promise<Replica>;
}

export async function startFleet(t: Test, o: FleetOptions = {}): Promise<Fleet> {
  const set = await startClusters(3, { names: ["host", "m1", "m2"] });
  t.teardown(() => set.stop());
  const [host, m1, m2] = set.clusters as [Cluster, Cluster, Cluster];
  const members = { m1, m2 } as Record<string, Cluster>;
  const dir = join(set.dir, "tether");
  await mkdir(dir, { recursive: true });
  // The servers' and agents' logs outlive the harness's directory when asked for.
  const keep = process.env.TETHER_TEST_KEEP_LOGS;
  if (keep) t.teardown(() => cp(dir, keep, { recursive: true }).catch(() => {}));
  const crd = await host.kubectl(["apply", "-k", join(root, "deploy/crd")]);
  t.equal(crd.code, 0, crd.stderr);
  await host.kubectl(["wait", "--for", "condition=established", "crd/clusters.tether.io", "--timeout=30s"]);
  await host.api("POST", "/api/v1/namespaces", { metadata: { name: NS } }, [409]);
  const store = ["--store", "kubernetes", "--kubeconfig", host.kubeconfig];

  const replicas: Replica[] = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    replicas.push({
      id: `replica-${i}`,
      port,
      replicaPort: await freePort(),
      url: `https://127.0.0.1:${port}`,
    });
  }
  const lb = await startHaproxy(
    dir,
    replicas.map((r) => r.port),
  );
  t.teardown(() => lb.stop());
  const lbUrl = `https://127.0.0.1:${lb.port}`;
  let starts = 0;
  const startReplica = async (r: Replica) => {
    starts++;
    const proc = new ManagedProcess(
      r.id,
      process.execPath,
      [
        SERVER_BIN,
        "serve",
        ...store,
        "--listen",
        `127.0.0.1:${r.port}`,
        "--external-url",
        lbUrl,
        "--keepalive",
        String(FAST_TIMING.keepaliveSeconds),
        "--dead-peer-timeout",
        String(o.serverDeadPeerSeconds ?? FAST_TIMING.deadPeerTimeoutSeconds),
        "--replica-address",
        `https://127.0.0.1:${r.replicaPort}`,
        "--replica-id",
        r.id,
        "--replica-lease-duration",
        `${LEASE_SECONDS}s`,
        ...(o.serverArgs ?? []),
      ],
      join(dir, `${r.id}-${starts}.log`),
    );
    t.teardown(() => proc.stop());
    r.proc = proc;
    await until(
      `${r.id} ready`,
      async () => {
        proc.assertRunning();
        return (await status(`${r.url}/readyz`)) === 200;
      },
      120_000,
    );
  };
  // The first creates the CA in the host cluster; the others load it.
  await startReplica(replicas[0]!);
  await Promise.all(replicas.slice(1).map(startReplica));

  const secret = await host.api<{ data: Record<string, string> }>(
    "GET",
    `/api/v1/namespaces/${NS}/secrets/tether-ca`,
  );
  const unb64 = (s: string | undefined) => Buffer.from(s ?? "", "base64").toString("utf8");
  const ca = await CertificateAuthority.load(
    unb64(secret.body.data["tls.crt"]),
    unb64(secret.body.data["tls.key"]),
  );

  const leaseOf = async (cluster: string) =>
    (
      await host.api<Lease>(
        "GET",
        `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/tether-owner-${cluster}`,
        undefined,
        [404],
      )
    ).body.spec;
  const agentConnected = async (cluster: string) =>
    (
      await host.api<{ status?: { conditions?: { type: string; status: string }[] } }>(
        "GET",
        `/apis/tether.io/v1alpha1/clusters/${cluster}`,
      )
    ).body.status?.conditions?.find((c) => c.type === "AgentConnected")?.status;
  const holderOf = async (cluster: string) => (await leaseOf(cluster))?.holderIdentity;

  const tokens: Record<string, string> = {};
  const kubeconfigs: Record<string, string> = {};
  const agentEnv: Record<string, NodeJS.ProcessEnv> = {};
  let agentCount = 0;
  const startAgent = (
    cluster: string,
    server: string,
    stateDir: string,
    deadPeer = FAST_TIMING.deadPeerTimeoutSeconds,
  ) => {
    agentCount++;
    const proc = new ManagedProcess(
      `agent-${cluster}-${agentCount}`,
      process.execPath,
      [
        AGENT_BIN,
        "--service-account-dir",
        join(dir, `sa-${cluster}`),
        "--state-dir",
        stateDir,
        "--keepalive",
        String(FAST_TIMING.keepaliveSeconds),
        "--dead-peer-timeout",
        String(deadPeer),
        ...(o.agentArgs ?? []),
      ],
      join(dir, `agent-${cluster}-${agentCount}.log`),
      { ...process.env, ...agentEnv[cluster], TETHER_SERVER: server },
    );
    t.teardown(() => proc.stop());
    return proc;
  };
  const agents: Record<string, ManagedProcess> = {};
  for (const [name, member] of Object.entries(members)) {
    const added = await cli("cluster", "add", name, "-o", "json", ...store, ...(o.clusterAddArgs ?? []));
    t.equal(added.code, 0, added.stderr);
    const info = JSON.parse(added.stdout) as { token: string; caHash: string; server: string };
    t.equal(info.server, lbUrl, "agents and callers are given the balancer's URL");
    agentEnv[name] = {
      ...(await prepareMember(member, join(dir, `sa-${name}`))),
      TETHER_CLUSTER: name,
      TETHER_JOIN_TOKEN: info.token,
      TETHER_CA_HASH: info.caHash,
    };
    await bindTetherAdmins(member);
    await member.createPod("default", "box");
    agents[name] = startAgent(name, lbUrl, join(dir, `agent-state-${name}`));
    const kc = await cli("kubeconfig", name, "--user", "alice", "--group", "admins", ...store);
    t.equal(kc.code, 0, kc.stderr);
    kubeconfigs[name] = kc.stdout;
    tokens[name] = /token: (\S+)/.exec(kc.stdout)?.[1] ?? "";
  }
  for (const name of Object.keys(members)) {
    await until(`an owner Lease for ${name}`, async () => !!(await holderOf(name)), 90_000);
  }
  const kubeconfigVia = async (cluster: string, r: Replica) => {
    const file = join(dir, `kc-${cluster}-${r.id}`);
    await writeFile(file, kubeconfigs[cluster]!.replaceAll(lbUrl, r.url), { mode: 0o600 });
    return file;
  };
  const byId = (id: string | undefined) => replicas.find((r) => r.id === id);
  const notOwner = async (cluster: string) => {
    const owner = await holderOf(cluster);
    return replicas.find((r) => r.id !== owner)!;
  };
  return {
    host,
    members,
    m1,
    m2,
    dir,
    replicas,
    lbUrl,
    ca,
    tokens,
    kubeconfigs,
    agents,
    startReplica,
    startAgent,
    leaseOf,
    holderOf,
    agentConnected,
    kubeconfigVia,
    byId,
    notOwner,
  };
}
