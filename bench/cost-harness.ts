/**
 * What get-cost.ts and list-cost.ts share: one harness cluster with a
 * Tether path (server and agent as processes, bench/e2e.ts startTetherPath)
 * in front of it, the pids of the three processes a request crosses, their
 * CPU time from /proc, a request that counts the body's bytes, and CPU
 * profiles of server and agent under a load the caller keeps up.
 */
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { Agent as HttpsAgent, request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bindTetherAdmins, prepareMember } from "../test/e2e/fixture.js";
import { type Cluster, startClusters } from "../test/kube/index.js";
import { startTetherPath } from "./e2e.js";
import { evaluateIn, profileFor } from "./inspector-profile.js";

const TICK_MS = 1000 / 100; // USER_HZ on Linux

/** utime and stime of a process in ms: its own code and the kernel's on its behalf (on loopback, much of TCP). */
export function cpuTimes(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { user: Number(fields[11]) * TICK_MS, system: Number(fields[12]) * TICK_MS };
}

/** utime + stime of a process in ms. */
export function cpuMs(pid: number): number {
  const { user, system } = cpuTimes(pid);
  return user + system;
}

/** One way to the apiserver: a base URL, its bearer token and a keep-alive client of one connection. */
export interface CostPath {
  base: string;
  token: string;
  agent: HttpsAgent;
}

/** GETs `url` and reads its body to the end: its status and how many bytes it had. */
export function get(path: CostPath, url: string): Promise<{ status: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${path.base}${url}`,
      { agent: path.agent, headers: { authorization: `Bearer ${path.token}`, accept: "application/json" } },
      (res) => {
        let bytes = 0;
        res.on("data", (c: Buffer) => {
          bytes += c.length;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, bytes }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

export interface CostSetup {
  member: Cluster;
  direct: CostPath;
  tether: CostPath;
  pids: { server: number; agent: number; apiserver: number };
}

/** The pid of the harness's kube-apiserver among the processes the set started. */
function apiserverPid(pids: number[]): number {
  for (const pid of pids) {
    try {
      const argv0 = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] ?? "";
      if (argv0.endsWith("kube-apiserver")) return pid;
    } catch {}
  }
  throw new Error(`no kube-apiserver among the harness's processes ${pids.join(", ")}`);
}

/** Runs `body` with a cluster and a Tether path to it whose agent has connected; stops both after. */
export async function withCostSetup(name: string, body: (s: CostSetup) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), `tether-${name}-`));
  const set = await startClusters(1, { names: ["bench"] });
  try {
    const member = set.clusters[0]!;
    await bindTetherAdmins(member);
    const saDir = join(dir, "sa");
    const env = await prepareMember(member, saDir);
    const path = await startTetherPath(join(dir, "plain"), env, saDir, ["--no-metrics"]);
    const keepAlive = (ca: string) => new HttpsAgent({ keepAlive: true, maxSockets: 1, ca });
    const tether = { base: `${path.url}/clusters/bench`, token: path.token, agent: keepAlive(path.caPem) };
    const direct = { base: member.server, token: member.admin.token, agent: keepAlive(member.caPem) };
    try {
      const end = Date.now() + 30_000;
      while ((await get(tether, "/api").catch(() => ({ status: 0 }))).status !== 200) {
        if (Date.now() > end) throw new Error(`the agent did not connect; log:\n${path.agent.logTail()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      const pids = { server: path.serverPid, agent: path.agent.pid!, apiserver: apiserverPid(set.pids) };
      await body({ member, direct, tether, pids });
    } finally {
      tether.agent.destroy();
      direct.agent.destroy();
      await path.stop();
    }
  } finally {
    await set.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** A CPU profile of each of `pids` in turn (10 s each, DIR/<name>.cpuprofile) while `load` runs requests. */
export async function profileUnderLoad(
  dir: string,
  pids: Record<string, number>,
  load: () => Promise<unknown>,
  ms = 10_000,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, pid] of Object.entries(pids)) {
    let stop = false;
    const running = (async () => {
      while (!stop) await load();
    })();
    await profileFor(pid, ms, join(dir, `${name}.cpuprofile`));
    stop = true;
    await running;
  }
}

/** A process's garbage collections since gcCounter started counting: Mark-Compacts and Scavenges, and their main-thread ms. */
export interface GcCount {
  major: number;
  minor: number;
  majorMs: number;
  minorMs: number;
}

/**
 * Counts the GCs of process `pid` from now on (a PerformanceObserver put in
 * it over the inspector); read() returns them so far. A large body's cost
 * in the server and the agent is largely theirs: each Mark-Compact marks the
 * whole heap, on the main thread and on helper threads whose CPU /proc counts
 * but a CPU profile of the main thread does not show.
 */
export async function gcCounter(pid: number): Promise<{ read(): Promise<GcCount> }> {
  await evaluateIn(
    pid,
    `(() => {
      const { PerformanceObserver, constants } = process.getBuiltinModule("perf_hooks");
      const c = (globalThis.__tetherBenchGc = { major: 0, minor: 0, majorMs: 0, minorMs: 0 });
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) {
          if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) (c.major++, (c.majorMs += e.duration));
          else if (e.detail.kind === constants.NODE_PERFORMANCE_GC_MINOR) (c.minor++, (c.minorMs += e.duration));
        }
      }).observe({ entryTypes: ["gc"] });
    })()`,
  );
  return { read: async () => (await evaluateIn(pid, "globalThis.__tetherBenchGc")) as GcCount };
}
