/**
 * `npm run bench -- scale [--agents N[,M...]] [--store file|kubernetes] [--json]`:
 * a fleet of real agent sessions against one tether-server process on the
 * file store (or the Kubernetes store, below). Each agent
 * is a TetherAgent with a certificate of its own cluster (registered and
 * issued in bulk through the store), dialing over mutual-TLS WebSocket;
 * several hundred share a worker process (scale-agents.ts). The fleet grows
 * through the levels (1,000, 5,000, 10,000 by default; --agents N,M for
 * others), and at each:
 *
 * - the server's RSS and V8 heap per session (the delta from the server
 *   with no agents, divided by the sessions), its open FDs, and its CPU over
 *   an idle window with every session up (keepalive pings only);
 * - a reconnect storm: kill -9 of the server and a restart on the same port
 *   and state: seconds from the kill until 50%, 99% and 100% of the agents
 *   are connected again, the peak reconnects per second and their share of
 *   the fleet, and agents that had not returned after RECONNECT_DEADLINE_MS.
 *
 * With TETHER_BENCH_PROFILE_DIR set, the server's CPU is also profiled over
 * a second idle window at each level (server-idle-<level>.cpuprofile there).
 *
 * Then, with the fleet gone, 10,000 watches through one tunnel against the
 * same watch source direct (scale-watches.ts).
 *
 * Every level's keys are printed, null when not measured, with failure_<level>
 * naming why; a level is time-boxed and the levels after a failed one are
 * skipped. TETHER_BENCH_SERVER_ENV ("NAME=value ...") sets the server's
 * environment (one change at a time: MALLOC_ARENA_MAX=2), and
 * TETHER_BENCH_HEAP_SNAPSHOT_DIR has it write a heap snapshot per level.
 * TETHER_BENCH_SERVER_BIN runs another build of tether-server (a before/after
 * comparison in one sitting).
 *
 * With `--store kubernetes` the server runs on the Kubernetes store of a
 * harness host cluster (a real kube-apiserver, test/kube) as one of several
 * replicas (--replica-address, as deploy/server runs it: owner records and a
 * replica Lease), and the writes it sends there are counted from the
 * apiserver's side (apiserver_request_total, verbs POST, PUT, PATCH, DELETE,
 * APPLY, less the host cluster's own rate measured before the server
 * started): per second over an idle window of a full lease duration and
 * status heartbeat, and over the reconnect storm (from the kill until
 * STORM_TAIL_MS after the last agent is back, when queued claims and status
 * writes have gone out). The watches run on that store too, unmeasured there.
 */
import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { FileStore, issueToken, KubeStore, type Store } from "@tether/server";
import { SERVER_BIN } from "../test/e2e/tether-processes.js";
import { type Cluster, freePort, startClusters } from "../test/kube/index.js";
import { ManagedProcess } from "../test/kube/processes.js";
import { profileFor } from "./inspector-profile.js";
import { measureWatches } from "./scale-watches.js";
import type { SuiteOptions, SuiteResult } from "./run.js";
import type { AgentCredentials, FromWorker, ToWorker } from "./scale-agents.js";

const here = dirname(fileURLToPath(import.meta.url));
const DEFAULT_LEVELS = [1_000, 5_000, 10_000];
const AGENTS_PER_WORKER = 1_250;
/** How fast the fleet is first brought up (connects per second), so the first connect is not the storm. */
const RAMP_PER_SECOND = 1_000;
/**
 * How long the fleet may take to connect: 300 s, or 50 ms per agent added (20/s) when more. On a
 * loaded 2-core machine the server took ~100 agents/s at best, and agents that time out redial later.
 */
const connectDeadlineMs = (added: number) => Math.max(300_000, added * 50);
/**
 * A whole level, its connect, idle window, kill and return included; the levels after one that fails are skipped.
 * On the Kubernetes store, also the wait for the connect's writes, the longer idle window and the storm's tail.
 */
const levelDeadlineMs = (added: number, n: number, kube: boolean) =>
  connectDeadlineMs(added) +
  420_000 +
  (kube ? kubeWritesDrainMs(n) + KUBE_IDLE_WINDOW_MS + STORM_TAIL_MS : 0);
const RECONNECT_DEADLINE_MS = 120_000;
const IDLE_WINDOW_MS = 15_000;
const SETTLE_MS = 5_000;
/** The serve flags: production tunnel timing, and room for the whole fleet from one source address. */
const SERVE_FLAGS = ["--max-connections", "30000", "--max-connections-per-source", "30000"];
const CLOCK_TICKS = 100;
/** The Kubernetes store's idle window: a full replica lease duration (30 s) and status heartbeat period, twice. */
const KUBE_IDLE_WINDOW_MS = 60_000;
/** On the Kubernetes store the claims and status writes of a connect go out first (status: 20/s). */
const kubeWritesDrainMs = (n: number) => (n / 20) * 1000;
const STORM_TAIL_MS = 10_000;
const WRITE_VERBS = new Set(["POST", "PUT", "PATCH", "DELETE", "APPLY"]);
const NAMESPACE = "tether-system";
/** Concurrent watches through one tunnel (scale-watches.ts); TETHER_BENCH_WATCHES changes it. */
const WATCHES = Number(process.env.TETHER_BENCH_WATCHES ?? 10_000);
const WATCH_KEYS = ["event_p50_ms", "event_p99_ms", "missing_events", "direct_p50_ms", "direct_p99_ms"];
const WATCH_CLUSTER = "watch-bench";
/** The whole watch phase, direct and through Tether. */
const WATCHES_DEADLINE_MS = 600_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const label = (n: number) => (n % 1000 === 0 ? `${n / 1000}k` : String(n));
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

interface Proc {
  rss: number;
  fds: number;
  cpuSeconds: number;
}

function procStats(pid: number): Proc {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  // utime and stime are fields 14 and 15 of stat, 12 and 13 after "pid (comm) ".
  const cpuSeconds = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  return { rss, fds: readdirSync(`/proc/${pid}/fd`).length, cpuSeconds };
}

/** The server's memory as its /metrics says: V8 heap used and committed, and memory outside it that V8 knows of. */
interface HeapFigures {
  used: number;
  total: number;
  external: number;
}

function scrapeHeap(url: string, caPem: string, token: string): Promise<HeapFigures> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/metrics`,
      { ca: caPem, headers: { authorization: `Bearer ${token}` }, timeout: 60_000 },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          text += c;
        });
        res.on("end", () => {
          const figure = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
          const heap = {
            used: figure("nodejs_heap_size_used_bytes"),
            total: figure("nodejs_heap_size_total_bytes"),
            external: figure("nodejs_external_memory_bytes"),
          };
          if (Number.isNaN(heap.used))
            reject(new Error(`no heap figure in /metrics (status ${res.statusCode})`));
          else resolve(heap);
        });
      },
    );
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("/metrics timed out")));
    req.end();
  });
}

class Server {
  proc: ManagedProcess | undefined;
  readonly url: string;
  private starts = 0;
  constructor(
    private readonly dir: string,
    private readonly port: number,
    private readonly tokenFile: string,
    /** How the server reaches its state: --state-dir, or the Kubernetes store's flags. */
    private readonly storeArgs: string[],
  ) {
    this.url = `https://127.0.0.1:${port}`;
  }

  async start(caPem: string, extraFlags: string[] = []): Promise<void> {
    this.starts++;
    this.proc = new ManagedProcess(
      "tether-server",
      "env",
      [
        "-u",
        "NODE_OPTIONS",
        // One change at a time to the server's memory: TETHER_BENCH_SERVER_ENV="MALLOC_ARENA_MAX=2 NODE_OPTIONS=..."
        ...(process.env.TETHER_BENCH_SERVER_ENV?.split(" ").filter(Boolean) ?? []),
        ...(process.env.TETHER_BENCH_HEAP_SNAPSHOT_DIR
          ? [
              `NODE_OPTIONS=--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${process.env.TETHER_BENCH_HEAP_SNAPSHOT_DIR}`,
            ]
          : []),
        process.execPath,
        process.env.TETHER_BENCH_SERVER_BIN ?? SERVER_BIN,
        "serve",
        ...this.storeArgs,
        "--listen",
        `127.0.0.1:${this.port}`,
        "--metrics-token-file",
        this.tokenFile,
        ...SERVE_FLAGS,
        ...extraFlags,
      ],
      join(this.dir, `server-${this.starts}.log`),
    );
    const deadline = Date.now() + 60_000;
    for (;;) {
      this.proc.assertRunning();
      const status = await new Promise<number>((resolve) => {
        const req = request(`${this.url}/readyz`, { ca: caPem, timeout: 1_000 }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on("error", () => resolve(0));
        req.on("timeout", () => req.destroy());
        req.end();
      });
      if (status === 200) return;
      if (Date.now() > deadline) throw new Error(`tether-server not ready:\n${this.proc.logTail()}`);
      await sleep(50);
    }
  }

  get pid(): number {
    const pid = this.proc?.pid;
    if (pid === undefined) throw new Error("the server is not running");
    return pid;
  }

  async kill9(): Promise<void> {
    process.kill(this.pid, "SIGKILL");
    await this.proc?.exited;
  }
}

/** Writes the host apiserver has answered so far, by resource, from its own apiserver_request_total. */
function apiserverWrites(host: Cluster): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${host.server}/metrics`,
      { ca: host.caPem, cert: host.admin.certPem, key: host.admin.keyPem, timeout: 60_000 },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          text += c;
        });
        res.on("end", () => {
          if (res.statusCode !== 200) return reject(new Error(`apiserver /metrics: HTTP ${res.statusCode}`));
          const byResource = new Map<string, number>();
          for (const m of text.matchAll(/^apiserver_request_total\{([^}]*)\} (\S+)$/gm)) {
            const labels = Object.fromEntries(
              [...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1]!, l[2]!] as const),
            );
            if (!WRITE_VERBS.has(labels.verb ?? "")) continue;
            const key = labels.subresource
              ? `${labels.resource}/${labels.subresource}`
              : (labels.resource ?? "");
            byResource.set(key, (byResource.get(key) ?? 0) + Number(m[2]));
          }
          resolve(byResource);
        });
      },
    );
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("apiserver /metrics timed out")));
    req.end();
  });
}

const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/** after - before per resource, largest first, as "leases 12, clusters/status 3". */
function writesByResource(before: Map<string, number>, after: Map<string, number>): string {
  return (
    [...after]
      .map(([k, v]) => [k, v - (before.get(k) ?? 0)] as const)
      .filter(([, v]) => v > 0)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(", ") || "none"
  );
}

/** A harness host cluster with the CRD and namespace the Kubernetes store needs. */
async function startHost(): Promise<{ host: Cluster; stop(): Promise<void> }> {
  const set = await startClusters(1, { names: ["host"] });
  try {
    const host = set.clusters[0]!;
    const crd = await host.kubectl(["apply", "-k", join(here, "..", "deploy/crd")]);
    if (crd.code !== 0) throw new Error(`CRD: ${crd.stderr}`);
    await host.kubectl(["wait", "--for", "condition=established", "crd/clusters.tether.io", "--timeout=60s"]);
    await host.api("POST", "/api/v1/namespaces", { metadata: { name: NAMESPACE } }, [409]);
    return { host, stop: () => set.stop() };
  } catch (err) {
    await set.stop().catch(() => {});
    throw err;
  }
}

class Fleet {
  private readonly workers: { child: ChildProcess; report: FromWorker }[] = [];
  private next = 0;
  /** Set when a worker died: what the levels after it cannot measure. */
  failure: string | undefined;
  private stopping = false;

  constructor(private readonly init: Extract<ToWorker, { type: "config" }>) {}

  get connected(): number {
    return this.workers.reduce((n, w) => n + w.report.connected, 0);
  }

  get total(): number {
    return this.workers.reduce((n, w) => n + w.report.total, 0);
  }

  async add(agents: AgentCredentials[]): Promise<void> {
    const needed = Math.ceil((this.total + agents.length) / AGENTS_PER_WORKER);
    while (this.workers.length < needed) {
      const child = fork(join(here, "scale-agents.ts"), [], {
        execArgv: ["--import", "tsx", "--conditions=tether-source", "--max-old-space-size=4096"],
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      });
      const w = { child, report: { type: "count", connected: 0, total: 0, drops: 0 } as FromWorker };
      child.on("message", (m: FromWorker) => {
        w.report = m;
      });
      child.once("exit", (code, signal) => {
        if (!this.stopping)
          this.failure ??= `an agent worker exited (${signal ?? code}) with ${w.report.total} agents`;
      });
      child.send(this.init satisfies ToWorker);
      this.workers.push(w);
    }
    // Fill the workers in turn, each at its share of the ramp rate.
    const shares = new Map<number, AgentCredentials[]>();
    for (const a of agents) {
      let i = this.next++ % this.workers.length;
      while (this.workers[i]!.report.total + (shares.get(i)?.length ?? 0) >= AGENTS_PER_WORKER) {
        i = this.next++ % this.workers.length;
      }
      shares.set(i, [...(shares.get(i) ?? []), a]);
    }
    for (const [i, list] of shares) {
      const msg: ToWorker = {
        type: "add",
        agents: list,
        perSecond: RAMP_PER_SECOND / Math.max(1, shares.size),
      };
      this.workers[i]!.child.send(msg);
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            if (w.child.exitCode !== null || w.child.signalCode !== null) return resolve();
            w.child.once("exit", () => resolve());
            w.child.send({ type: "stop" } satisfies ToWorker);
            setTimeout(() => w.child.kill("SIGKILL"), 10_000).unref();
          }),
      ),
    );
  }
}

async function until(what: string, deadlineMs: number, done: () => boolean, fleet?: Fleet): Promise<boolean> {
  const end = Date.now() + deadlineMs;
  while (!done()) {
    if (fleet?.failure) throw new Error(fleet.failure);
    if (Date.now() > end) {
      console.error(`scale bench: ${what} did not happen within ${deadlineMs} ms`);
      return false;
    }
    await sleep(100);
  }
  return true;
}

/** Kill -9, restart on the same port and state, and follow the fleet's return in 100 ms samples. */
async function reconnectStorm(server: Server, fleet: Fleet, caPem: string, n: number, host?: Cluster) {
  const writesBefore = host && (await apiserverWrites(host));
  const killedAt = Date.now();
  await server.kill9();
  await until("the fleet noticing the kill", 60_000, () => fleet.connected < n * 0.01);
  const restartAt = Date.now();
  await server.start(caPem);
  const readyAt = Date.now();
  const samples: { t: number; connected: number }[] = [];
  const end = Date.now() + RECONNECT_DEADLINE_MS;
  const reached: Record<number, number> = {};
  while (Date.now() < end) {
    const connected = fleet.connected;
    const t = Date.now();
    samples.push({ t, connected });
    for (const share of [0.5, 0.99, 1]) {
      if (reached[share] === undefined && connected >= Math.ceil(n * share)) reached[share] = t;
    }
    if (connected >= n) break;
    await sleep(100);
  }
  // Reconnects per whole second since the restart.
  const perSecond: number[] = [];
  for (let i = 1; i < samples.length; i++) {
    const s = Math.floor((samples[i]!.t - restartAt) / 1000);
    perSecond[s] = (perSecond[s] ?? 0) + Math.max(0, samples[i]!.connected - samples[i - 1]!.connected);
  }
  const histogram = Array.from(perSecond, (x) => x ?? 0);
  const peak = Math.max(0, ...histogram);
  const since = (t: number | undefined) => (t === undefined ? Number.NaN : round((t - killedAt) / 1000, 2));
  let writes: { total: number; seconds: number; byResource: string } | undefined;
  if (host && writesBefore) {
    await sleep(STORM_TAIL_MS);
    const after = await apiserverWrites(host);
    writes = {
      total: total(after) - total(writesBefore),
      seconds: (Date.now() - killedAt) / 1000,
      byResource: writesByResource(writesBefore, after),
    };
  }
  return {
    writes,
    restartSeconds: round((readyAt - restartAt) / 1000, 2),
    s50: since(reached[0.5]),
    s99: since(reached[0.99]),
    sAll: since(reached[1]),
    failed: n - (samples.at(-1)?.connected ?? 0),
    peakPerSecond: peak,
    peakShare: round(peak / n),
    histogram,
  };
}

/** The keys of one level, suffixed _1k, _5k, ...: all printed, null where the level did not get that far. */
const LEVEL_KEYS = [
  "server_bytes_per_session",
  "server_heap_bytes_per_session",
  "server_heap_committed_bytes_per_session",
  "server_external_bytes_per_session",
  "server_idle_cpu",
  "server_fds",
  "server_rss_mib",
  "reconnect_50_s",
  "reconnect_99_s",
  "reconnect_all_s",
  "reconnect_failed",
  "reconnect_peak_per_s",
  "reconnect_peak_share",
  "server_restart_s",
];
/** The Kubernetes store's keys of one level, printed with --store kubernetes. */
const KUBE_LEVEL_KEYS = [
  "kube_store_writes_per_s_idle",
  "kube_store_writes_storm",
  "kube_store_writes_per_s_storm",
];

/** Has the server write a heap snapshot into `dir` and waits until the file stops growing; returns its path. */
async function heapSnapshot(pid: number, dir: string): Promise<string> {
  const before = new Set(readdirSync(dir));
  process.kill(pid, "SIGUSR2");
  let file: string | undefined;
  let size = -1;
  for (let i = 0; i < 600; i++) {
    await sleep(1_000);
    file ??= readdirSync(dir).find((f) => f.endsWith(".heapsnapshot") && !before.has(f));
    if (!file) continue;
    const now = statSync(join(dir, file)).size;
    if (now > 0 && now === size) return join(dir, file);
    size = now;
  }
  throw new Error("the server wrote no heap snapshot within 600 s");
}

/** Undefined when `work` finished in time, else what went wrong (its error, or `late`). */
async function timeBox(work: Promise<void>, ms: number, late: string): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work.then(() => undefined),
      new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve(late), ms);
      }),
    ]);
  } catch (err) {
    return (err as Error).message.split("\n")[0]!.slice(0, 300);
  } finally {
    clearTimeout(timer);
  }
}

interface Level {
  n: number;
  key: string;
  /** Agents already in the fleet from the levels before. */
  started: number;
  creds: AgentCredentials[];
  server: Server;
  fleet: Fleet;
  caPem: string;
  token: string;
  base: Proc;
  baseHeap: HeapFigures;
  /** The Kubernetes store's host cluster, and its own writes per second without the server. */
  host: Cluster | undefined;
  hostRate: number;
  rows: SuiteResult["rows"];
  metrics: SuiteResult["metrics"];
}

/** Grows the fleet to `n`, measures it idle, then kills the server and follows the fleet's return. Throws what failed. */
async function measureLevel(l: Level): Promise<void> {
  const { n, key, server, fleet, rows, metrics } = l;
  const t0 = Date.now();
  await fleet.add(l.creds.slice(l.started, n));
  const connectMs = connectDeadlineMs(n - l.started);
  const up = await until(`${n} agents connected`, connectMs, () => fleet.connected >= n, fleet);
  rows.push([
    `${key}: connect`,
    up ? `${((Date.now() - t0) / 1000).toFixed(1)} s` : "incomplete",
    `${fleet.connected}/${n} at ${RAMP_PER_SECOND}/s ramp`,
  ]);
  if (!up) throw new Error(`only ${fleet.connected} of ${n} agents connected within ${connectMs / 1000} s`);
  await sleep(SETTLE_MS);
  const { host, hostRate } = l;
  if (host) await sleep(kubeWritesDrainMs(n));
  const idleMs = host ? KUBE_IDLE_WINDOW_MS : IDLE_WINDOW_MS;
  const writesBefore = host && (await apiserverWrites(host));
  const before = procStats(server.pid);
  await sleep(idleMs);
  const after = procStats(server.pid);
  if (host && writesBefore) {
    const writesAfter = await apiserverWrites(host);
    const perSecond = (total(writesAfter) - total(writesBefore)) / (idleMs / 1000) - hostRate;
    metrics[`kube_store_writes_per_s_idle_${key}`] = round(Math.max(0, perSecond), 2);
    rows.push([
      `${key}: host apiserver writes, idle`,
      `${metrics[`kube_store_writes_per_s_idle_${key}`]}/s`,
      `over ${idleMs / 1000} s less the host's own ${round(hostRate, 2)}/s: ${writesByResource(writesBefore, writesAfter)}`,
    ]);
  }
  metrics[`server_bytes_per_session_${key}`] = Math.round((after.rss - l.base.rss) / n);
  metrics[`server_idle_cpu_${key}`] = round((after.cpuSeconds - before.cpuSeconds) / (idleMs / 1000));
  metrics[`server_fds_${key}`] = after.fds;
  metrics[`server_rss_mib_${key}`] = round(after.rss / 2 ** 20, 1);
  const heap = await scrapeHeap(server.url, l.caPem, l.token);
  metrics[`server_heap_bytes_per_session_${key}`] = Math.round((heap.used - l.baseHeap.used) / n);
  // V8's committed heap grows beyond what is used (the young generation grows to its maximum under a
  // connect burst): RSS the JS heap accounts for, not the native side.
  metrics[`server_heap_committed_bytes_per_session_${key}`] = Math.round((heap.total - l.baseHeap.total) / n);
  metrics[`server_external_bytes_per_session_${key}`] = Math.round((heap.external - l.baseHeap.external) / n);
  rows.push([
    `${key}: server per session`,
    `${metrics[`server_bytes_per_session_${key}`]} B`,
    `RSS ${(after.rss / 2 ** 20).toFixed(1)} MiB; per session: heap used ${metrics[`server_heap_bytes_per_session_${key}`]} B, committed ${metrics[`server_heap_committed_bytes_per_session_${key}`]} B, external ${metrics[`server_external_bytes_per_session_${key}`]} B; ${after.fds} fds`,
  ]);
  rows.push([
    `${key}: server idle CPU`,
    `${metrics[`server_idle_cpu_${key}`]} cores`,
    `over ${idleMs / 1000} s, all sessions up`,
  ]);

  const snapshotDir = process.env.TETHER_BENCH_HEAP_SNAPSHOT_DIR;
  if (snapshotDir) {
    const file = await heapSnapshot(server.pid, snapshotDir);
    rows.push([`${key}: heap snapshot`, file, "written on SIGUSR2 (--heapsnapshot-signal)"]);
  }

  const profileDir = process.env.TETHER_BENCH_PROFILE_DIR;
  if (profileDir) {
    const file = join(profileDir, `server-idle-${key}.cpuprofile`);
    const failed = await timeBox(
      profileFor(server.pid, IDLE_WINDOW_MS, file),
      IDLE_WINDOW_MS + 30_000,
      "timed out",
    );
    rows.push([
      `${key}: idle profile`,
      failed ? `none (${failed})` : file,
      "bench/cpu-profile-summary.ts reads it",
    ]);
  }

  const storm = await reconnectStorm(server, fleet, l.caPem, n, host);
  metrics[`reconnect_50_s_${key}`] = storm.s50;
  metrics[`reconnect_99_s_${key}`] = storm.s99;
  metrics[`reconnect_all_s_${key}`] = storm.sAll;
  metrics[`reconnect_failed_${key}`] = storm.failed;
  metrics[`reconnect_peak_per_s_${key}`] = storm.peakPerSecond;
  metrics[`reconnect_peak_share_${key}`] = storm.peakShare;
  metrics[`server_restart_s_${key}`] = storm.restartSeconds;
  rows.push([
    `${key}: reconnect after kill -9`,
    `${storm.sAll} s`,
    `50% ${storm.s50} s, 99% ${storm.s99} s (from the kill; restart took ${storm.restartSeconds} s), ${storm.failed} not back`,
  ]);
  rows.push([
    `${key}: reconnects per second`,
    `peak ${storm.peakPerSecond}`,
    `${(storm.peakShare * 100).toFixed(1)}% of the fleet; per second: ${storm.histogram.join(" ")}`,
  ]);
  if (storm.writes) {
    const w = storm.writes;
    metrics[`kube_store_writes_storm_${key}`] = w.total;
    metrics[`kube_store_writes_per_s_storm_${key}`] = round(w.total / w.seconds - hostRate, 2);
    rows.push([
      `${key}: host apiserver writes, storm`,
      `${metrics[`kube_store_writes_per_s_storm_${key}`]}/s`,
      `${w.total} over ${round(w.seconds, 1)} s (kill until ${STORM_TAIL_MS / 1000} s after all were back): ${w.byResource}`,
    ]);
  }
}

export async function run(options: SuiteOptions): Promise<SuiteResult> {
  const levels = options.agents ?? (options.quick ? [200] : DEFAULT_LEVELS);
  const max = Math.max(...levels);
  const dir = await mkdtemp(join(tmpdir(), "tether-scale-"));
  const rows: SuiteResult["rows"] = [];
  // Every level's keys are printed, null when not measured, with the failure named (failure_<level>).
  const metrics: SuiteResult["metrics"] = {};
  const kube = options.store === "kubernetes";
  const levelKeys = kube ? [...LEVEL_KEYS, ...KUBE_LEVEL_KEYS] : LEVEL_KEYS;
  for (const n of levels) for (const k of levelKeys) metrics[`${k}_${label(n)}`] = null;
  if (kube) metrics.kube_host_writes_per_s_baseline = null;
  const watches = options.quick ? 200 : WATCHES;
  for (const k of WATCH_KEYS) metrics[`watches_${label(watches)}_${k}`] = null;
  for (const k of ["watch_bytes_each", "watch_server_bytes_each", "watch_agent_bytes_each"])
    metrics[k] = null;
  let server: Server | undefined;
  let fleet: Fleet | undefined;
  let hostCluster: { host: Cluster; stop(): Promise<void> } | undefined;
  let kubeStore: KubeStore | undefined;
  try {
    let store: Store;
    let storeArgs: string[];
    if (kube) {
      hostCluster = await startHost();
      const kubeconfig = hostCluster.host.kubeconfig;
      kubeStore = await KubeStore.open({ kubeconfig, namespace: NAMESPACE });
      store = kubeStore;
      storeArgs = [
        "--store",
        "kubernetes",
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        NAMESPACE,
        // One of several replicas, as deploy/server runs it: the owner records and the replica Lease are written.
        "--replica-id",
        "scale-0",
        "--replica-address",
        `https://127.0.0.1:${await freePort()}`,
      ];
    } else {
      store = await FileStore.open(join(dir, "state"));
      storeArgs = ["--state-dir", join(dir, "state")];
    }
    const ca = await store.loadOrCreateCa();
    const names = [
      ...Array.from({ length: max }, (_, i) => `scale-${String(i).padStart(5, "0")}`),
      WATCH_CLUSTER,
    ];
    let t = Date.now();
    const records = names.map((name) => ({
      name,
      auth: "impersonate" as const,
      labels: {},
      allowedUsers: [],
      allowedGroups: [],
      createdAt: new Date().toISOString(),
    }));
    if (store instanceof FileStore) await store.putClusters(records);
    else {
      // One Cluster object each: 20 creates at a time.
      for (let i = 0; i < records.length; i += 20)
        await Promise.all(records.slice(i, i + 20).map((r) => store.addCluster(r)));
    }
    const uids = new Map((await store.listClusters()).map((c) => [c.name, c.uid]));
    rows.push([
      "register clusters",
      `${max}`,
      `${kube ? "one Cluster object each" : "one store write"}, ${Date.now() - t} ms`,
    ]);
    t = Date.now();
    const creds: AgentCredentials[] = [];
    for (const cluster of names) {
      const uid = uids.get(cluster);
      const issued = await ca.issueClusterCertificate(cluster, uid ? { incarnation: uid } : {});
      creds.push({ cluster, certPem: issued.certPem, keyPem: issued.keyPem! });
    }
    rows.push(["issue certificates", `${max}`, `${Date.now() - t} ms`]);
    const served = await ca.issueServerCertificate({ dnsNames: [], ips: ["127.0.0.1"] });
    const apiserverCert = { certPem: served.certPem, keyPem: served.keyPem! };
    const watcher = issueToken();
    await store.addToken({
      hash: watcher.hash,
      kind: "user",
      user: "watch-bench",
      groups: [],
      clusters: [WATCH_CLUSTER],
      expiresAt: new Date(Date.now() + 24 * 3600_000).toISOString(),
    });
    const token = randomBytes(24).toString("hex");
    const tokenFile = join(dir, "metrics-token");
    await writeFile(tokenFile, token, { mode: 0o600 });

    const host = hostCluster?.host;
    // The host cluster's own writes (its controllers, the kubelet stand-in), subtracted from the server's.
    let hostRate = 0;
    if (host) {
      const before = await apiserverWrites(host);
      await sleep(KUBE_IDLE_WINDOW_MS / 2);
      const after = await apiserverWrites(host);
      hostRate = (total(after) - total(before)) / (KUBE_IDLE_WINDOW_MS / 2000);
      metrics.kube_host_writes_per_s_baseline = round(hostRate, 2);
      rows.push([
        "host cluster alone",
        `${round(hostRate, 2)} writes/s`,
        `over ${KUBE_IDLE_WINDOW_MS / 2000} s before the server started: ${writesByResource(before, after)}`,
      ]);
    }
    server = new Server(dir, await freePort(), tokenFile, storeArgs);
    await server.start(ca.certPem);
    await sleep(SETTLE_MS);
    const base = procStats(server.pid);
    const baseHeap = await scrapeHeap(server.url, ca.certPem, token);
    rows.push([
      "server, no agents",
      `${(base.rss / 2 ** 20).toFixed(1)} MiB`,
      `heap ${(baseHeap.used / 2 ** 20).toFixed(1)} MiB used of ${(baseHeap.total / 2 ** 20).toFixed(1)} MiB, ${base.fds} fds`,
    ]);
    fleet = new Fleet({ type: "config", server: server.url, caPem: ca.certPem, apiserverCert });

    let started = 0;
    // TETHER_BENCH_SKIP_LEVELS=1: the watches alone.
    let broken: string | undefined = process.env.TETHER_BENCH_SKIP_LEVELS
      ? "TETHER_BENCH_SKIP_LEVELS"
      : undefined;
    for (const n of levels) {
      const key = label(n);
      if (broken !== undefined) {
        metrics[`failure_${key}`] = `skipped: ${broken}`;
        rows.push([`${key}: skipped`, "-", broken]);
        continue;
      }
      const level = measureLevel({
        n,
        key,
        started,
        creds,
        server,
        fleet,
        caPem: ca.certPem,
        token,
        base,
        baseHeap,
        host,
        hostRate,
        rows,
        metrics,
      });
      const deadline = levelDeadlineMs(n - started, n, kube);
      started = n;
      const failure = await timeBox(level, deadline, `${key} did not finish within ${deadline / 1000} s`);
      if (failure !== undefined) {
        metrics[`failure_${key}`] = failure;
        rows.push([`${key}: FAILED`, "-", failure]);
        broken = `${key} failed (${failure})`;
        console.error(`scale bench: ${key}: ${failure}`);
      }
    }
    await fleet.stop();
    fleet = undefined;
    await server.proc?.stop();

    // 10,000 watches through one tunnel want room: streams on that agent's tunnel and for that one caller.
    await server.start(ca.certPem, [
      "--max-streams-per-agent",
      String(2 * watches),
      "--max-streams-per-caller",
      String(2 * watches),
      // Requests still being authenticated count as failures until judged (failure-rate-limit.ts): a client
      // opening 10,000 watches at once from one address would get 429 for all but 20 of them.
      "--auth-failure-limit",
      String(2 * watches),
    ]);
    const wkey = label(watches);
    const failed = await timeBox(
      measureWatches(
        {
          watches,
          server: { url: server.url, pid: server.pid },
          caPem: ca.certPem,
          token: watcher.token,
          cluster: WATCH_CLUSTER,
          agent: creds.at(-1)!,
          apiserverCert,
        },
        wkey,
        rows,
        metrics,
      ),
      WATCHES_DEADLINE_MS,
      `the watches did not finish within ${WATCHES_DEADLINE_MS / 1000} s`,
    );
    if (failed !== undefined) {
      metrics[`failure_watches_${wkey}`] = failed;
      rows.push([`${wkey} watches: FAILED`, "-", failed]);
      console.error(`scale bench: watches: ${failed}`);
    }
  } catch (err) {
    const why = (err as Error).message.split("\n")[0]!.slice(0, 300);
    console.error(`scale bench: ${why}`);
    rows.push(["FAILED", "-", why]);
    for (const n of levels) metrics[`failure_${label(n)}`] ??= why;
    metrics[`failure_watches_${label(watches)}`] ??= why;
  } finally {
    await fleet?.stop().catch(() => {});
    await server?.proc?.stop().catch(() => {});
    await kubeStore?.close().catch(() => {});
    await hostCluster?.stop().catch(() => {});
    if (process.env.TETHER_BENCH_KEEP_DIR) console.error(`scale bench: kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
  return { rows, metrics };
}
