// Real Kubernetes clusters for tests: kube-apiserver (own CA, own
// service-account keys), kube-controller-manager and kube-scheduler over one
// shared etcd with a prefix per cluster, plus a kubelet stand-in that is the
// Node, so pods run (as far as the API can tell) and exec, attach,
// port-forward and logs go through the apiserver's real proxy and upgrade path.
// control-plane.ts holds each process's configuration.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Binaries, ensureBinaries } from "./binaries.js";
import { clusterFiles } from "./control-plane.js";
import { writeKubeconfig } from "./kubeconfig.js";
import { KubectlProcess } from "./kubectl-process.js";
import { createClusterPki } from "./pki.js";
import { isAlive, ManagedProcess } from "./processes.js";

export const NODE_NAME = "standin";
const DIR_PREFIX = "tether-kube-";
const READY_TIMEOUT_MS = 90_000;

export interface Cluster {
  readonly name: string;
  /** https://127.0.0.1:<port> */
  readonly server: string;
  readonly caPem: string;
  /** A system:masters identity: client certificate and a static bearer token. */
  readonly admin: { certPem: string; keyPem: string; token: string };
  /** Absolute path of a kubeconfig using the admin client certificate. */
  readonly kubeconfig: string;
  readonly dir: string;
  /** The stand-in kubelet's container log file for a pod's container (append to it to emit log lines). */
  logFile(namespace: string, pod: string, container: string): string;
  /** Runs the harness kubectl against this cluster (admin kubeconfig unless one is given). */
  kubectl(args: string[], options?: KubectlOptions): Promise<KubectlResult>;
  /** Starts a long-running kubectl (logs -f, get -w, port-forward); stop() it when done. */
  spawnKubectl(args: string[], options?: { kubeconfig?: string; env?: NodeJS.ProcessEnv }): KubectlProcess;
  /** A JSON request to the apiserver as admin; throws on non-2xx unless `allowStatus` lists it. */
  api<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    allowStatus?: number[],
  ): Promise<ApiResult<T>>;
  /** Creates a pod bound to the stand-in node and marks it Running. */
  createPod(namespace: string, name: string, containers?: string[]): Promise<void>;
  stop(): Promise<void>;
}

export interface KubectlOptions {
  kubeconfig?: string;
  input?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ApiResult<T> {
  status: number;
  body: T;
}

export interface ClusterSet {
  readonly clusters: Cluster[];
  readonly binaries: Binaries;
  readonly dir: string;
  /** PIDs of every process the set started (for leak checks). */
  readonly pids: number[];
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Cluster names; default `member1 … memberN`. */
  names?: string[];
  log?: (line: string) => void;
  /** Each apiserver's service-account issuer is its own URL (an OIDC issuer tests can reach). */
  selfIssuer?: boolean;
}

/**
 * A port free to listen on, for a process started after this returns. It is
 * drawn below the kernel's ephemeral range: a port the kernel hands out
 * (listen(0)) is also the source port of the next outgoing connections, and
 * with tests running side by side one of them took such a port before the
 * apiserver bound it ("bind: address already in use"). Below the range only
 * another listener can take it, and each candidate is test-bound first.
 */
export async function freePort(): Promise<number> {
  const [low] = ephemeralRange();
  const floor = Math.max(1024, low - FREE_PORT_SPAN);
  for (let attempt = 0; attempt < 64 && floor < low; attempt++) {
    const port = floor + Math.floor(Math.random() * (low - floor));
    if (await canListen(port)) return port;
  }
  return listenOn(0);
}

/** How far below the ephemeral range freePort draws its ports. */
const FREE_PORT_SPAN = 12_000;

function ephemeralRange(): [number, number] {
  try {
    const [low, high] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
      .trim()
      .split(/\s+/)
      .map(Number);
    if (Number.isInteger(low) && Number.isInteger(high)) return [low!, high!];
  } catch {
    // Not Linux: fall through to the IANA default.
  }
  return [49152, 65535];
}

async function canListen(port: number): Promise<boolean> {
  return listenOn(port).then(
    () => true,
    () => false,
  );
}

function listenOn(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(port, "127.0.0.1", () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, proc: ManagedProcess, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    proc.assertRunning();
    if (await probe().catch(() => false)) return;
    await sleep(150);
  }
  throw new Error(
    `${what} not ready after ${READY_TIMEOUT_MS / 1000}s; last lines of ${proc.logFile}:\n${proc.logTail()}`,
  );
}

async function startEtcd(bins: Binaries, dir: string): Promise<{ proc: ManagedProcess; url: string }> {
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  await mkdir(join(dir, "etcd"), { recursive: true });
  const proc = new ManagedProcess(
    "etcd",
    bins.etcd,
    [
      "--name=harness",
      `--data-dir=${join(dir, "etcd")}`,
      `--listen-client-urls=${url}`,
      `--advertise-client-urls=${url}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=harness=${peer}`,
      // Test data only: skipping fsync makes start-up and writes much faster.
      "--unsafe-no-fsync",
      "--log-level=warn",
    ],
    join(dir, "etcd.log"),
  );
  await waitFor("etcd", proc, async () => {
    const body = await plainGet(`${url}/health`);
    return body.includes('"health":"true"');
  });
  return { proc, url };
}

function plainGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { timeout: 2_000 }, (res) => {
      let data = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (data += c));
      res.on("end", () => resolve(data));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

function apiCall<T>(
  server: string,
  tls: { ca: string; cert: string; key: string },
  method: string,
  path: string,
  body?: unknown,
  contentType = "application/json",
): Promise<ApiResult<T>> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = httpsRequest(
      new URL(path, server),
      {
        method,
        ...tls,
        timeout: 30_000,
        headers: {
          accept: "application/json",
          ...(payload ? { "content-type": contentType, "content-length": payload.length } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {}
          resolve({ status: res.statusCode ?? 0, body: parsed as T });
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} ${path}: timeout`)));
    req.on("error", reject);
    req.end(payload);
  });
}

async function startCluster(
  bins: Binaries,
  root: string,
  name: string,
  etcdUrl: string,
  track: (p: ManagedProcess) => ManagedProcess,
  selfIssuer = false,
): Promise<Cluster> {
  const dir = join(root, name);
  await mkdir(dir, { recursive: true });
  const pki = await createClusterPki(name, NODE_NAME);
  const port = await freePort();
  const server = `https://127.0.0.1:${port}`;
  const files = await clusterFiles({
    dir,
    name,
    nodeName: NODE_NAME,
    pki,
    server,
    port,
    etcdUrl,
    selfIssuer,
  });
  const { logsRoot } = files;
  await mkdir(logsRoot, { recursive: true });
  const start = (component: string, bin: string, args: string[]) =>
    track(new ManagedProcess(`${name}/${component}`, bin, args, join(dir, `${component}.log`)));

  const apiserver = start("kube-apiserver", bins.kubeApiserver, files.apiserver);
  const tls = { ca: pki.ca.certPem, cert: pki.admin.certPem, key: pki.admin.keyPem };
  await waitFor(`${name} kube-apiserver`, apiserver, async () => {
    const res = await apiCall<string>(server, tls, "GET", "/readyz");
    return res.status === 200;
  });
  const kubelet = start("kubelet-standin", bins.kubeletStandin, files.kubeletStandin);
  const controllerManager = start(
    "kube-controller-manager",
    bins.kubeControllerManager,
    files.controllerManager,
  );
  const scheduler = start("kube-scheduler", bins.kubeScheduler, files.scheduler);

  const api = async <T>(method: string, path: string, body?: unknown, allowStatus: number[] = []) => {
    const contentType = method === "PATCH" ? "application/merge-patch+json" : "application/json";
    const res = await apiCall<T>(server, tls, method, path, body, contentType);
    if ((res.status < 200 || res.status > 299) && !allowStatus.includes(res.status)) {
      throw new Error(`${name}: ${method} ${path} → ${res.status}: ${JSON.stringify(res.body)}`);
    }
    return res;
  };

  const hasDefaultServiceAccount = async (namespace: string) =>
    (await api("GET", `/api/v1/namespaces/${namespace}/serviceaccounts/default`, undefined, [404])).status ===
    200;
  const ready = (res: ApiResult<{ status?: { conditions?: { type: string; status: string }[] } }>) =>
    res.status === 200 &&
    !!res.body.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");
  // The stand-in registers its own Node; the controller manager is up once
  // its service-account controller has made `default` a service account.
  await Promise.all([
    waitFor(`${name} node ${NODE_NAME}`, kubelet, async () =>
      ready(await api("GET", `/api/v1/nodes/${NODE_NAME}`, undefined, [404])),
    ),
    waitFor(`${name} kube-controller-manager`, controllerManager, () => hasDefaultServiceAccount("default")),
  ]);
  scheduler.assertRunning();

  const kubeconfig = await writeKubeconfig(join(dir, "kubeconfig"), {
    name,
    server,
    caPem: pki.ca.certPem,
    certPem: pki.admin.certPem,
    keyPem: pki.admin.keyPem,
  });

  const cluster: Cluster = {
    name,
    server,
    caPem: pki.ca.certPem,
    admin: { certPem: pki.admin.certPem, keyPem: pki.admin.keyPem, token: files.adminToken },
    kubeconfig,
    dir,
    logFile: (namespace, pod, container) => join(logsRoot, namespace, pod, `${container}.log`),
    kubectl: (args, options = {}) =>
      new Promise((resolve) => {
        const child = execFile(
          bins.kubectl,
          ["--kubeconfig", options.kubeconfig ?? kubeconfig, ...args],
          {
            timeout: options.timeoutMs ?? 60_000,
            maxBuffer: 256 * 1024 * 1024,
            env: options.env ?? process.env,
          },
          (err, stdout, stderr) => {
            const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
            resolve({ code, stdout, stderr });
          },
        );
        child.stdin?.end(options.input ?? "");
      }),
    spawnKubectl: (args, options = {}) =>
      new KubectlProcess(
        bins.kubectl,
        ["--kubeconfig", options.kubeconfig ?? kubeconfig, ...args],
        options.env,
      ),
    api,
    async createPod(namespace, podName, containers = ["main"]) {
      // The ServiceAccount admission plugin refuses pods until the namespace's `default` exists.
      await waitFor(`${name} service account ${namespace}/default`, controllerManager, () =>
        hasDefaultServiceAccount(namespace),
      );
      await api("POST", `/api/v1/namespaces/${namespace}/pods`, {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: podName, namespace },
        spec: {
          nodeName: NODE_NAME,
          automountServiceAccountToken: false,
          containers: containers.map((c) => ({ name: c, image: "tether.dev/standin:latest" })),
        },
      });
      await mkdir(join(logsRoot, namespace, podName), { recursive: true });
      await waitFor(`${name} pod ${namespace}/${podName} Running`, kubelet, async () => {
        const res = await api<{ status?: { phase?: string } }>(
          "GET",
          `/api/v1/namespaces/${namespace}/pods/${podName}`,
        );
        return res.body.status?.phase === "Running";
      });
    },
    async stop() {
      // The apiserver's graceful shutdown waits for open watches: its clients go first.
      await Promise.all([controllerManager.stop(), scheduler.stop(), kubelet.stop()]);
      await apiserver.stop();
    },
  };
  return cluster;
}

/**
 * Removes the temp dirs (under `root`, by default the system's) of harness
 * runs whose process was killed before it could clean up.
 */
export async function sweepAbandoned(root = tmpdir()): Promise<void> {
  for (const entry of await readdir(root).catch(() => [])) {
    if (!entry.startsWith(DIR_PREFIX)) continue;
    const owner = Number(await readFile(join(root, entry, "owner.pid"), "utf8").catch(() => "0"));
    if (owner > 0 && !isAlive(owner)) await rm(join(root, entry), { recursive: true, force: true });
  }
}

/** Starts `count` independent clusters in parallel. Always call `stop()` (e.g. in t.teardown). */
export async function startClusters(count: number, options: StartOptions = {}): Promise<ClusterSet> {
  const log = options.log ?? (() => {});
  const names = options.names ?? Array.from({ length: count }, (_, i) => `member${i + 1}`);
  const binaries = await ensureBinaries(log);
  await sweepAbandoned();
  const dir = await mkdtemp(join(tmpdir(), DIR_PREFIX));
  await writeFile(join(dir, "owner.pid"), String(process.pid));
  const started: Cluster[] = [];
  const processes: ManagedProcess[] = [];
  const track = (p: ManagedProcess) => {
    processes.push(p);
    return p;
  };
  let etcd: { proc: ManagedProcess; url: string } | undefined;
  const stop = async () => {
    await Promise.all(started.map((c) => c.stop()));
    // Also those of clusters that failed half-way through start-up.
    await Promise.all(processes.map((p) => p.stop()));
    await etcd?.proc.stop();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    etcd = await startEtcd(binaries, dir);
    const results = await Promise.allSettled(
      names.map((n) => startCluster(binaries, dir, n, etcd!.url, track, options.selfIssuer)),
    );
    for (const r of results) if (r.status === "fulfilled") started.push(r.value);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
  } catch (err) {
    // Partially started clusters' processes are tracked by their ManagedProcess.
    await stop();
    throw err;
  }
  const pids = [etcd.proc, ...processes].map((p) => p.pid).filter((p): p is number => p !== undefined);
  return { clusters: started, binaries, dir, pids, stop };
}
